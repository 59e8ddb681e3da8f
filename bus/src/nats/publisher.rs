//! The NATS publisher: the storage thread only queues; a tokio task publishes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use storage_hooks::{ChangeHook, HookError, MailboxEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::connect::connect;
use super::subject::subject_for_user;
use crate::rate_log::RateLimitedLog;
use crate::wire::{self, FrameHeader, MAX_HEADER_LEN};
use crate::{BusCounters, BusError, CountersSnapshot, NatsConfig};

/// Messages published before each flush to the server.
const MAX_BATCH: usize = 4096;

enum Job {
    Publish { subject: String, payload: Bytes },
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Publishes events to NATS. Cheap to clone; [`NatsPublisher::publish`]
/// never blocks (it queues for a background task) and may be called from any
/// thread, inside or outside the runtime.
#[derive(Debug, Clone)]
pub struct NatsPublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Job>,
    client: Client,
    prefix: String,
    id: u64,
    seq: AtomicU64,
    max_payload: usize,
    counters: Arc<BusCounters>,
    full_log: RateLimitedLog,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Publish { subject, payload } => write!(f, "Publish({subject}, {} bytes)", payload.len()),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NatsPublisher {
    /// Connects, creates the JetStream stream if configured, and starts the
    /// publishing task on the current tokio runtime.
    ///
    /// # Errors
    /// [`BusError`] if the server cannot be reached or the stream not created.
    pub async fn connect(cfg: &NatsConfig, queue_capacity: usize) -> Result<Self, BusError> {
        let client = connect(cfg, |event| async move {
            tracing::info!(%event, "bus: NATS publisher connection event");
        })
        .await?;
        if cfg.jetstream.enabled {
            ensure_stream(&client, cfg).await?;
        }
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let counters = Arc::new(BusCounters::default());
        let task = tokio::spawn(publish_loop(client.clone(), rx, counters.clone()));
        let max_payload = client.server_info().max_payload;
        let inner = Inner {
            tx,
            client,
            prefix: cfg.subject_prefix.clone(),
            id: rand::random(),
            seq: AtomicU64::new(0),
            max_payload: if max_payload == 0 { 1024 * 1024 } else { max_payload },
            counters,
            full_log: RateLimitedLog::new(Duration::from_secs(10)),
            task,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Queues `event` for publishing. Never blocks.
    ///
    /// # Errors
    /// [`BusError::QueueFull`] if the queue is full (the event is dropped and
    /// counted; subscribers detect the modseq gap), [`BusError::Closed`] if
    /// the task stopped.
    pub fn publish(&self, event: &MailboxEvent) -> Result<(), BusError> {
        let inner = &self.inner;
        let seq = inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut record = wire::encode_event_record(event);
        if MAX_HEADER_LEN + record.len() > inner.max_payload {
            record = wire::encode_reference_record(&event.user, &event.mailbox);
            inner.counters.add_references_out(1);
        }
        let payload = wire::encode_frame(&FrameHeader { publisher: inner.id, seq, count: 1 }, &record);
        let job = Job::Publish { subject: subject_for_user(&inner.prefix, &event.user), payload: Bytes::from(payload) };
        inner.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                inner.counters.add_dropped_queue_full(1);
                BusError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => BusError::Closed,
        })
    }

    /// Waits until everything queued so far was written to the server.
    ///
    /// # Errors
    /// [`BusError`] if the flush failed or the task stopped.
    pub async fn flush(&self) -> Result<(), BusError> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(Job::Flush(tx)).await.map_err(|_| BusError::Closed)?;
        rx.await.map_err(|_| BusError::Closed)?.map_err(|reason| BusError::Nats { op: "flush", reason })
    }

    /// The underlying client (for diagnostics and tests).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Current counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }
}

async fn ensure_stream(client: &Client, cfg: &NatsConfig) -> Result<(), BusError> {
    let js = async_nats::jetstream::new(client.clone());
    let js_cfg = &cfg.jetstream;
    let stream_cfg = async_nats::jetstream::stream::Config {
        name: js_cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        max_age: Duration::from_secs(js_cfg.max_age_secs),
        max_bytes: js_cfg.max_bytes,
        ..Default::default()
    };
    js.get_or_create_stream(stream_cfg)
        .await
        .map_err(|e| BusError::Nats { op: "create JetStream stream", reason: e.to_string() })?;
    Ok(())
}

async fn publish_loop(client: Client, mut rx: mpsc::Receiver<Job>, counters: Arc<BusCounters>) {
    while let Some(first) = rx.recv().await {
        let mut waiting = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(job) = next.take() {
            match job {
                Job::Publish { subject, payload } => match client.publish(subject, payload).await {
                    Ok(()) => counters.add_events_out(1),
                    Err(e) => {
                        counters.add_dropped_send(1);
                        tracing::warn!(error = %e, "bus: NATS publish failed");
                    }
                },
                Job::Flush(done) => waiting.push(done),
            }
            n += 1;
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let result = client.flush().await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(error = %e, "bus: NATS flush failed");
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}

impl ChangeHook for NatsPublisher {
    /// A full queue (e.g. while the server is unreachable) is counted and
    /// logged here at most every 10 s, not reported per event.
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        match self.publish(event) {
            Ok(()) => Ok(()),
            Err(BusError::QueueFull) => {
                if let Some(suppressed) = self.inner.full_log.allow() {
                    tracing::warn!(suppressed, "bus: NATS publish queue full; events dropped, subscribers will resync");
                }
                Ok(())
            }
            Err(e) => Err(HookError(e.to_string())),
        }
    }
}
