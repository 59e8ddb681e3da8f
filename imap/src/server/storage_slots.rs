//! A bound on the session steps a worker runs on blocking threads at once.
//!
//! A session step (a command and its storage calls) blocks, so the driver
//! runs it under `block_in_place`, which hands the tokio worker thread's
//! other tasks to a new thread from the blocking pool. With nothing in
//! between, a login burst of a few hundred sessions each doing SELECT made
//! a worker run ~516 threads (tokio's default cap is 512 blocking threads),
//! and each thread's stack and allocator cache stayed part of the worker's
//! memory high-water mark after the sessions had gone to a hibernate
//! process. Here a step first waits, asynchronously and holding no thread,
//! for one of a fixed number of slots: enough for storage waits (fsync,
//! dot-locks, group commits of concurrent APPENDs) to overlap, few enough
//! that the thread count stays small.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Blocking slots per CPU core (see the module docs): fsync-bound steps
/// overlap well up to a few dozen at once on one disk.
const SLOTS_PER_CORE: usize = 16;

/// The worker's slots for blocking session steps. Cloning shares them.
#[derive(Debug, Clone)]
pub struct StorageSlots {
    free: Arc<Semaphore>,
    capacity: usize,
}

/// How many slots [`StorageSlots::per_core`] makes on this machine: the
/// worker's runtime sizes its blocking pool from it.
pub fn per_core_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) * SLOTS_PER_CORE
}

impl StorageSlots {
    /// [`per_core_slots`] slots.
    pub fn per_core() -> Self {
        Self::new(per_core_slots())
    }

    /// Exactly `slots` slots (at least one).
    pub fn new(slots: usize) -> Self {
        let capacity = slots.max(1);
        StorageSlots { free: Arc::new(Semaphore::new(capacity)), capacity }
    }

    /// How many slots there are in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs `step` under `block_in_place` once a slot is free.
    ///
    /// # Cancel safety
    /// Cancelling while waiting for a slot runs nothing; once `step` has
    /// started it runs to completion (it is synchronous).
    pub async fn run<T>(&self, step: impl FnOnce() -> T) -> T {
        // The semaphore is never closed: acquiring cannot fail; if it ever
        // did, running without a slot is still correct, only less bounded.
        let _slot = self.free.acquire().await.ok();
        tokio::task::block_in_place(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_steps_run_at_once_than_there_are_slots() {
        let slots = StorageSlots::new(3);
        assert_eq!(slots.capacity(), 3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    slots
                        .run(|| {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3, "{} steps at once", most.load(Ordering::SeqCst));
        assert!(most.load(Ordering::SeqCst) >= 2, "slots should let steps overlap");
    }
}
