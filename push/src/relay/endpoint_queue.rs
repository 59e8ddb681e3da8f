//! The bounded queue of one endpoint and the workers that drain it.
//!
//! Ordering: jobs leave the queue in the order they were queued;
//! `concurrency_per_endpoint` workers each take the next job and keep it
//! until it is final (retries included). With concurrency 1 an endpoint
//! therefore sees its events strictly in order, each delivered or given up
//! before the next is tried; with N > 1, at most N are in flight and a
//! retried event may arrive after later ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use super::delivery::{DeliveryContext, Job};
use super::endpoint::Endpoint;

/// An endpoint's queue and workers. Dropping it closes the queue: the
/// workers finish (or dead-letter, if removed) the jobs in it and exit.
#[derive(Debug)]
pub struct EndpointQueue {
    endpoint: Arc<Endpoint>,
    tx: mpsc::Sender<Job>,
    removed: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl EndpointQueue {
    /// Starts `concurrency` workers on the current runtime.
    pub fn start(endpoint: Endpoint, ctx: Arc<DeliveryContext>, capacity: usize, concurrency: usize) -> Self {
        let endpoint = Arc::new(endpoint);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let removed = Arc::new(AtomicBool::new(false));
        let workers = (0..concurrency.max(1))
            .map(|_| tokio::spawn(worker(rx.clone(), endpoint.clone(), ctx.clone(), removed.clone())))
            .collect();
        EndpointQueue { endpoint, tx, removed, workers }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Queues `job` without waiting; gives it back if the queue is full.
    ///
    /// # Errors
    /// The job, when the queue is full (or closed).
    pub fn offer(&self, job: Job) -> Result<(), Job> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
        })
    }

    /// The registration was removed: queued and retrying deliveries are
    /// dead-lettered ("registration removed") instead of sent.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    /// Stops the workers now (shutdown); open deliveries stay open.
    pub fn abort(&self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

async fn worker(rx: Arc<Mutex<mpsc::Receiver<Job>>>, endpoint: Arc<Endpoint>, ctx: Arc<DeliveryContext>, removed: Arc<AtomicBool>) {
    loop {
        // One worker waits on the channel at a time; the others wait for the lock.
        let job = rx.lock().await.recv().await;
        let Some(job) = job else { return };
        ctx.deliver(&endpoint, job, &removed).await;
    }
}
