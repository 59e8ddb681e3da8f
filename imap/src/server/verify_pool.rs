//! A bounded pool of threads for password verification in the master.
//!
//! Verifying a hash takes tens to hundreds of milliseconds of CPU (and, for
//! Argon2, its memory cost). Running it on a tokio thread (or under
//! `block_in_place`, which makes tokio start a replacement thread each
//! time) lets a burst of logins grow the master to hundreds of threads.
//! Here a fixed number of threads take jobs from a queue; a login that
//! finds every slot taken waits asynchronously for a permit, holding no
//! thread.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// The pool is gone (its threads ended); cannot happen while the master runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the password verification pool is not running")]
pub struct PoolGone;

/// Fixed threads plus a bounded queue (see the module docs).
#[derive(Debug)]
pub struct VerifyPool {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Threads + queue slots; a job holds one from submission to completion.
    slots: Arc<Semaphore>,
    threads: usize,
}

impl VerifyPool {
    /// Jobs queued per thread before submitters wait.
    const QUEUE_PER_THREAD: usize = 4;

    /// A pool of `threads` threads (0 = one per CPU core).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { threads };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new().name(format!("verify-{i}")).spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password verification thread");
            }
        }
        VerifyPool {
            jobs: Mutex::new(tx),
            slots: Arc::new(Semaphore::new(threads * (1 + Self::QUEUE_PER_THREAD))),
            threads,
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread and returns its result; waits (without a
    /// thread) while the queue is full.
    ///
    /// # Errors
    /// [`PoolGone`] if the pool's threads are gone.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolGone> {
        let permit = Arc::clone(&self.slots).acquire_owned().await.map_err(|_| PoolGone)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
            drop(permit);
        });
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job).map_err(|_| PoolGone)?;
        rx.await.map_err(|_| PoolGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "current_thread")]
    async fn runs_jobs_on_at_most_n_threads() {
        let pool = Arc::new(VerifyPool::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Ok(i * 2));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
