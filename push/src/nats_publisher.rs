//! External events on NATS, stored by a JetStream stream.
//!
//! [`PushNatsPublisher`] is a storage [`ChangeHook`]: the storage thread only
//! queues the internal event (never blocks; a full queue drops the event,
//! counts it and logs at most every 10 s). A background task turns each
//! internal event into its [`ExternalEvent`]s (under the `[push.headers]`
//! policy, bounded to `max_event_bytes`) and publishes each one to
//!
//! ```text
//! <push.nats.subject_prefix>.<user token>.<EventName>
//! ```
//!
//! (the user token is [`bus::nats::user_token`], the opaque SHA-256 token of
//! the internal bus) with the header `Nats-Msg-Id: <event id>`, so the
//! stream drops a re-publish of the same event within its duplicate window.
//! Acks are awaited pipelined (at most [`MAX_IN_FLIGHT`] events unsettled
//! at once, counting those waiting to be sent again); a publish whose ack
//! fails or times out is sent again, same id, with backoff, while the others
//! go on. During an outage the task therefore stops taking events and the
//! queue in front of it fills up, which bounds memory. Delivery to the stream is therefore at-least-once and
//! consumers de-duplicate on `id`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use async_nats::Client;
use bus::rate_log::RateLimitedLog;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use storage_hooks::{ChangeHook, HookError, MailboxEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::PushNatsConfig;
use crate::{ExternalEvent, PushConfig};

/// Most external events sent and not yet acknowledged at once (awaiting
/// their ack or waiting to be sent again).
pub const MAX_IN_FLIGHT: usize = 512;
/// How long one ack may take before the event is published again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// First re-publish delay; doubles per attempt up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest re-publish delay.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Shortest time between two attempts to re-create a vanished stream.
const STREAM_RECHECK: Duration = Duration::from_secs(2);

/// Errors of the NATS push publisher.
#[derive(Debug, thiserror::Error)]
pub enum PushNatsError {
    /// The NATS connection could not be opened.
    #[error("push: {0}")]
    Connect(#[from] bus::BusError),
    /// The JetStream stream could not be read, created or updated.
    #[error("push: JetStream stream {stream}: {reason}")]
    Stream {
        /// Stream name.
        stream: String,
        /// What the server or client said.
        reason: String,
    },
    /// The publish queue is full; the event was dropped (and counted).
    #[error("push: NATS publish queue full")]
    QueueFull,
    /// The publishing task has stopped.
    #[error("push: NATS publishing task stopped")]
    Closed,
}

/// What [`ensure_stream`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSetup {
    /// The stream did not exist and was created.
    Created,
    /// The stream existed with other subjects or limits and was updated.
    Updated,
    /// The stream existed as configured.
    Unchanged,
}

/// Counters of a [`PushNatsPublisher`] (monotonic since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushNatsCounters {
    /// Internal events accepted into the queue.
    pub queued: u64,
    /// Internal events dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// External events published for the first time.
    pub published: u64,
    /// External events acknowledged by the stream (duplicates included).
    pub acked: u64,
    /// Acks saying the stream already had the event (same id).
    pub duplicates: u64,
    /// Re-publishes after a failed or timed-out ack.
    pub retried: u64,
    /// External events given up (the server refused them for good).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    dropped_queue_full: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PushNatsCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PushNatsCounters {
            queued: get(&self.queued),
            dropped_queue_full: get(&self.dropped_queue_full),
            published: get(&self.published),
            acked: get(&self.acked),
            duplicates: get(&self.duplicates),
            retried: get(&self.retried),
            failed: get(&self.failed),
        }
    }
}

/// Work for the publishing task, in queue order.
enum Job {
    Event(Box<MailboxEvent>),
    /// Answer once every external event queued before this one is settled.
    Flush(oneshot::Sender<()>),
}

/// Publishes external events to JetStream. Cheap to clone; the hook side
/// ([`PushNatsPublisher::publish`], [`ChangeHook::on_change`]) never blocks
/// and may be called from any thread.
#[derive(Debug, Clone)]
pub struct PushNatsPublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Job>,
    client: Client,
    counters: Arc<Counters>,
    full_log: RateLimitedLog,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Event(ev) => write!(f, "Event({:?})", ev.kind),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl PushNatsPublisher {
    /// Connects with the `[bus.nats]` settings `nats` (credentials, TLS),
    /// makes sure the stream of `push.nats` exists with its limits, and
    /// starts the publishing task on the current tokio runtime.
    /// `queue_capacity` bounds the internal events waiting for the task.
    ///
    /// # Errors
    /// [`PushNatsError::Connect`] if no server is reachable,
    /// [`PushNatsError::Stream`] if the stream cannot be set up (e.g. the
    /// server has no JetStream).
    pub async fn connect(nats: &bus::NatsConfig, push: &PushConfig, queue_capacity: usize) -> Result<Self, PushNatsError> {
        let mut conn = nats.clone();
        conn.client_name = format!("{}-push", nats.client_name);
        let client = bus::nats::connect(&conn, |event| async move {
            tracing::info!(%event, "push: NATS connection event");
        })
        .await?;
        Self::with_client(client, push, queue_capacity).await
    }

    /// Like [`PushNatsPublisher::connect`] on an existing client.
    ///
    /// # Errors
    /// [`PushNatsError::Stream`] if the stream cannot be set up.
    pub async fn with_client(client: Client, push: &PushConfig, queue_capacity: usize) -> Result<Self, PushNatsError> {
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(MAX_IN_FLIGHT * 2)
            .build(client.clone());
        let setup = ensure_stream(&js, &push.nats).await?;
        tracing::debug!(stream = %push.nats.stream, ?setup, "push: JetStream stream ready");
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let task = PublishLoop::new(js, push.clone(), rx, counters.clone());
        tokio::spawn(task.run());
        let inner = Inner { tx, client, counters, full_log: RateLimitedLog::new(Duration::from_secs(10)) };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Queues `event` for publishing. Never blocks.
    ///
    /// # Errors
    /// [`PushNatsError::QueueFull`] if the queue is full (the event is
    /// dropped and counted), [`PushNatsError::Closed`] if the task stopped.
    pub fn publish(&self, event: &MailboxEvent) -> Result<(), PushNatsError> {
        let inner = &self.inner;
        match inner.tx.try_send(Job::Event(Box::new(event.clone()))) {
            Ok(()) => {
                Counters::add(&inner.counters.queued);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Counters::add(&inner.counters.dropped_queue_full);
                Err(PushNatsError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushNatsError::Closed),
        }
    }

    /// Waits until every event queued so far is acknowledged by the stream
    /// (or given up). Waits through server outages: callers that must not
    /// hang bound it with a timeout.
    ///
    /// # Errors
    /// [`PushNatsError::Closed`] if the task stopped.
    pub async fn flush(&self) -> Result<(), PushNatsError> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(Job::Flush(tx)).await.map_err(|_| PushNatsError::Closed)?;
        rx.await.map_err(|_| PushNatsError::Closed)
    }

    /// Current counters.
    pub fn counters(&self) -> PushNatsCounters {
        self.inner.counters.snapshot()
    }

    /// The underlying client (for diagnostics and tests).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

impl ChangeHook for PushNatsPublisher {
    /// A full queue (e.g. during a long server outage) is counted and logged
    /// at most every 10 s, not reported per event.
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        match self.publish(event) {
            Ok(()) => Ok(()),
            Err(PushNatsError::QueueFull) => {
                if let Some(suppressed) = self.inner.full_log.allow() {
                    tracing::warn!(suppressed, "push: NATS publish queue full; external events dropped");
                }
                Ok(())
            }
            Err(e) => Err(HookError(e.to_string())),
        }
    }
}

/// The subject of an external event: `<prefix>.<user token>.<EventName>`.
pub fn event_subject(prefix: &str, event: &ExternalEvent) -> String {
    format!("{prefix}.{}.{}", bus::nats::user_token(&event.user), event.event.as_str())
}

/// Creates the stream of `cfg` over `<subject_prefix>.>` (limits retention,
/// file storage) if it is missing; if it exists with other subjects,
/// `max_age`, `max_bytes` or duplicate window, updates those (and logs it).
/// Safe against other processes doing the same at the same time.
///
/// # Errors
/// [`PushNatsError::Stream`] with the server's or client's reason.
pub async fn ensure_stream(js: &jetstream::Context, cfg: &PushNatsConfig) -> Result<StreamSetup, PushNatsError> {
    let fail = |reason: String| PushNatsError::Stream { stream: cfg.stream.clone(), reason };
    let apply = |c: &mut stream::Config| {
        c.subjects = vec![format!("{}.>", cfg.subject_prefix)];
        c.max_age = Duration::from_secs(cfg.max_age_secs);
        c.max_bytes = cfg.max_bytes;
        c.duplicate_window = Duration::from_secs(cfg.duplicate_window_secs);
    };
    // Two rounds: a create can lose a race against another process.
    for _ in 0..2 {
        match js.get_stream(&cfg.stream).await {
            Ok(existing) => {
                let current = existing.cached_info().config.clone();
                let mut wanted = current.clone();
                apply(&mut wanted);
                if wanted == current {
                    return Ok(StreamSetup::Unchanged);
                }
                js.update_stream(wanted.clone()).await.map_err(|e| fail(format!("update: {e}")))?;
                tracing::info!(
                    stream = %cfg.stream,
                    subjects = ?wanted.subjects,
                    old_subjects = ?current.subjects,
                    max_age_secs = cfg.max_age_secs,
                    old_max_age_secs = current.max_age.as_secs(),
                    max_bytes = cfg.max_bytes,
                    old_max_bytes = current.max_bytes,
                    duplicate_window_secs = cfg.duplicate_window_secs,
                    old_duplicate_window_secs = current.duplicate_window.as_secs(),
                    "push: JetStream stream limits updated to the configuration"
                );
                return Ok(StreamSetup::Updated);
            }
            Err(e) if is_stream_not_found(&e) => {
                let mut config = stream::Config {
                    name: cfg.stream.clone(),
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    ..Default::default()
                };
                apply(&mut config);
                match js.create_stream(config).await {
                    Ok(_) => {
                        tracing::info!(stream = %cfg.stream, prefix = %cfg.subject_prefix, "push: JetStream stream created");
                        return Ok(StreamSetup::Created);
                    }
                    Err(e) if is_name_taken(&e) => continue,
                    Err(e) => return Err(fail(format!("create: {e}"))),
                }
            }
            Err(e) => return Err(fail(format!("lookup: {e}"))),
        }
    }
    Err(fail("created and deleted again by someone else while being set up".into()))
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(err)
        if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

fn is_name_taken(e: &jetstream::context::CreateStreamError) -> bool {
    matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(err)
        if err.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST)
}

/// One external event on its way to the stream.
#[derive(Debug)]
struct Outgoing {
    /// Order of conversion, for [`PushNatsPublisher::flush`].
    seq: u64,
    subject: String,
    id: String,
    payload: Bytes,
    /// Publishes so far.
    attempts: u32,
}

type AckFuture = BoxFuture<'static, (Outgoing, Result<PublishAck, PublishError>)>;

/// The background task's state.
struct PublishLoop {
    js: jetstream::Context,
    cfg: PushConfig,
    rx: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    next_seq: u64,
    /// Converted, not yet sent.
    ready: VecDeque<Outgoing>,
    /// Waiting for their re-publish time, by (due, seq).
    retry: BTreeMap<(Instant, u64), Outgoing>,
    in_flight: FuturesUnordered<AckFuture>,
    /// Seqs of events neither acked nor given up.
    unsettled: BTreeSet<u64>,
    /// Flush callers with the seq every earlier event must have passed.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// All senders are gone: finish what is queued, then stop.
    closed: bool,
    /// Set by a "no stream" ack: re-create the stream before re-publishing.
    stream_missing: bool,
    last_stream_check: Option<Instant>,
    error_log: RateLimitedLog,
}

impl PublishLoop {
    fn new(js: jetstream::Context, cfg: PushConfig, rx: mpsc::Receiver<Job>, counters: Arc<Counters>) -> Self {
        PublishLoop {
            js,
            cfg,
            rx,
            counters,
            next_seq: 0,
            ready: VecDeque::new(),
            retry: BTreeMap::new(),
            in_flight: FuturesUnordered::new(),
            unsettled: BTreeSet::new(),
            flushes: Vec::new(),
            closed: false,
            stream_missing: false,
            last_stream_check: None,
            error_log: RateLimitedLog::new(Duration::from_secs(10)),
        }
    }

    async fn run(mut self) {
        loop {
            self.recreate_stream_if_missing().await;
            self.start_publishes().await;
            self.answer_flushes();
            if self.closed && self.unsettled.is_empty() {
                return;
            }
            let intake = self.outstanding() < MAX_IN_FLIGHT && self.ready.is_empty() && !self.closed;
            let mut next_retry = self.retry.keys().next().map(|(due, _)| *due);
            if let (true, Some(due), Some(checked)) = (self.stream_missing, next_retry, self.last_stream_check) {
                next_retry = Some(due.max(checked + STREAM_RECHECK));
            }
            let retry_wait = tokio::time::sleep_until(next_retry.unwrap_or_else(|| Instant::now() + RETRY_MAX));
            tokio::select! {
                Some((msg, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => self.on_ack(msg, result),
                job = self.rx.recv(), if intake => match job {
                    Some(Job::Event(ev)) => self.convert(&ev),
                    Some(Job::Flush(done)) => self.flushes.push((self.next_seq, done)),
                    None => self.closed = true,
                },
                () = retry_wait, if next_retry.is_some() => {}
            }
        }
    }

    /// Turns one internal event into its external events, ready to send.
    fn convert(&mut self, event: &MailboxEvent) {
        for ext in ExternalEvent::from_mailbox_event(event, &self.cfg.headers) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.unsettled.insert(seq);
            self.ready.push_back(Outgoing {
                seq,
                subject: event_subject(&self.cfg.nats.subject_prefix, &ext),
                payload: Bytes::from(ext.to_json_bounded(self.cfg.max_event_bytes)),
                id: ext.id,
                attempts: 0,
            });
        }
    }

    /// Events sent and not settled: awaiting an ack or a re-publish.
    fn outstanding(&self) -> usize {
        self.in_flight.len() + self.retry.len()
    }

    /// Sends due re-publishes (already counted as outstanding), then new
    /// events while fewer than [`MAX_IN_FLIGHT`] are outstanding.
    async fn start_publishes(&mut self) {
        let now = Instant::now();
        while !self.stream_missing {
            match self.retry.first_key_value() {
                Some((&(at, _), _)) if at <= now => {}
                _ => break,
            }
            if let Some((_, msg)) = self.retry.pop_first() {
                self.send(msg).await;
            }
        }
        while self.outstanding() < MAX_IN_FLIGHT {
            let Some(msg) = self.ready.pop_front() else { break };
            self.send(msg).await;
        }
    }

    async fn send(&mut self, mut msg: Outgoing) {
        if msg.attempts == 0 {
            Counters::add(&self.counters.published);
        } else {
            Counters::add(&self.counters.retried);
        }
        msg.attempts += 1;
        let publish = PublishMessage::build().message_id(&msg.id).payload(msg.payload.clone());
        let sent = self.js.send_publish(msg.subject.clone(), publish).await;
        self.in_flight.push(Box::pin(async move {
            let result = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            (msg, result)
        }));
    }

    fn on_ack(&mut self, msg: Outgoing, result: Result<PublishAck, PublishError>) {
        match result {
            Ok(ack) => {
                Counters::add(&self.counters.acked);
                if ack.duplicate {
                    Counters::add(&self.counters.duplicates);
                }
                self.unsettled.remove(&msg.seq);
            }
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                // Cannot succeed however often it is sent (the server's
                // max_payload is below push.max_event_bytes).
                Counters::add(&self.counters.failed);
                tracing::warn!(id = %msg.id, bytes = msg.payload.len(), error = %e, "push: external event refused by NATS, dropped");
                self.unsettled.remove(&msg.seq);
            }
            Err(e) => {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.stream_missing = true;
                }
                if let Some(suppressed) = self.error_log.allow() {
                    tracing::warn!(error = %e, attempts = msg.attempts, suppressed, "push: JetStream publish not acknowledged; publishing again");
                }
                let exp = msg.attempts.saturating_sub(1).min(16);
                let delay = RETRY_FIRST.saturating_mul(1 << exp).min(RETRY_MAX);
                self.retry.insert((Instant::now() + delay, msg.seq), msg);
            }
        }
    }

    /// After a "no stream" answer (someone deleted it), sets it up again,
    /// at most every [`STREAM_RECHECK`].
    async fn recreate_stream_if_missing(&mut self) {
        if !self.stream_missing || self.last_stream_check.is_some_and(|t| t.elapsed() < STREAM_RECHECK) {
            return;
        }
        self.last_stream_check = Some(Instant::now());
        match ensure_stream(&self.js, &self.cfg.nats).await {
            Ok(setup) => {
                tracing::info!(?setup, stream = %self.cfg.nats.stream, "push: JetStream stream was missing");
                self.stream_missing = false;
            }
            Err(e) => tracing::warn!(error = %e, "push: cannot set up the JetStream stream; will retry"),
        }
    }

    fn answer_flushes(&mut self) {
        let settled_below = self.unsettled.first().copied().unwrap_or(self.next_seq);
        let mut i = 0;
        while i < self.flushes.len() {
            if self.flushes[i].0 <= settled_below {
                let (_, done) = self.flushes.swap_remove(i);
                let _ = done.send(());
            } else {
                i += 1;
            }
        }
    }
}
