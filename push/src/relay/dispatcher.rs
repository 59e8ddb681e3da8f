//! The relay engine: events in, one delivery per matching endpoint out,
//! never blocking the caller.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::completion::Completion;
use super::counters::{RelayCounters, RelayCountersSnapshot};
use super::dead_letter::{DeadLetterLog, DEAD_LETTER_FILE};
use super::delivered_log::{DeliveredLog, DEFAULT_CAPACITY, DELIVERED_FILE};
use super::delivery::{DeliveryContext, Job, PreparedEvent};
use super::endpoint::Endpoint;
use super::endpoint_queue::EndpointQueue;
use super::RelayConfig;
use crate::registration_store::RegistrationStore;
use crate::web_push::{WebPushConfig, MAX_PAYLOAD_BYTES};
use crate::{ExternalEvent, Registration};

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A global endpoint of the configuration is unusable.
    #[error("push.relay.endpoints[{index}]: {reason}")]
    GlobalEndpoint {
        /// Its position in the configuration.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// A state file could not be opened.
    #[error("cannot open {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registration file could not be read.
    #[error("registrations: {0}")]
    Registrations(#[from] crate::registration_store::RegistrationError),
    /// The event source failed.
    #[error("event source: {0}")]
    Source(String),
}

/// How the relay is built.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// `[push.relay]`.
    pub relay: RelayConfig,
    /// `push.max_event_bytes`.
    pub max_event_bytes: usize,
    /// Registrations and dead letters live here.
    pub state_dir: PathBuf,
    /// Keep the delivered log (JetStream mode: sources that redeliver).
    pub remember_delivered: bool,
    /// `[push.webpush]`.
    pub webpush: WebPushConfig,
}

/// The endpoints currently served.
#[derive(Debug, Default)]
struct EndpointSet {
    global: Vec<Arc<EndpointQueue>>,
    by_user: HashMap<String, Vec<Arc<EndpointQueue>>>,
    by_key: HashMap<String, Arc<EndpointQueue>>,
}

/// Routes events to endpoint queues. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<RelayInner>,
}

#[derive(Debug)]
struct RelayInner {
    ctx: Arc<DeliveryContext>,
    endpoints: RwLock<EndpointSet>,
    queue_capacity: usize,
    concurrency: usize,
    max_event_bytes: usize,
}

impl Relay {
    /// Builds the relay with the configured global endpoints and no
    /// registrations yet (see [`Relay::set_registrations`]). Needs a tokio
    /// runtime (endpoint workers are tasks).
    ///
    /// # Errors
    /// [`RelayError`] for a bad global endpoint, the HTTP client or state files.
    pub fn new(settings: &RelaySettings) -> Result<Relay, RelayError> {
        let cfg = &settings.relay;
        let http = super::webhook::http_client(Duration::from_millis(cfg.timeout_ms))
            .map_err(|e| RelayError::Http(e.to_string()))?;
        let store = RegistrationStore::new(&settings.state_dir);
        store.ensure_dir()?;
        let delivered = if settings.remember_delivered {
            let path = settings.state_dir.join(DELIVERED_FILE);
            Some(DeliveredLog::open(path.clone(), DEFAULT_CAPACITY).map_err(|source| RelayError::State { path, source })?)
        } else {
            None
        };
        let ctx = Arc::new(DeliveryContext {
            http,
            counters: Arc::new(RelayCounters::default()),
            dead_letters: DeadLetterLog::new(settings.state_dir.join(DEAD_LETTER_FILE)),
            backoff: Backoff::from_config(cfg),
            max_attempts: cfg.max_attempts,
            delivered,
            store,
            pending: AtomicUsize::new(0),
            webpush: super::delivery::WebPushSlot::new(settings.webpush.clone(), settings.state_dir.clone()),
        });
        let inner = RelayInner {
            ctx,
            endpoints: RwLock::new(EndpointSet::default()),
            queue_capacity: cfg.queue_per_endpoint,
            concurrency: cfg.concurrency_per_endpoint,
            max_event_bytes: settings.max_event_bytes,
        };
        let relay = Relay { inner: Arc::new(inner) };
        let mut global = Vec::new();
        for (index, ep) in cfg.endpoints.iter().enumerate() {
            let endpoint = Endpoint::from_global(index, ep).map_err(|reason| RelayError::GlobalEndpoint { index, reason })?;
            global.push(Arc::new(relay.start_queue(endpoint)));
        }
        {
            let mut set = relay.write();
            for q in &global {
                set.by_key.insert(q.endpoint().key.clone(), q.clone());
            }
            set.global = global;
        }
        relay.update_registration_count();
        Ok(relay)
    }

    fn start_queue(&self, endpoint: Endpoint) -> EndpointQueue {
        EndpointQueue::start(endpoint, self.inner.ctx.clone(), self.inner.queue_capacity, self.inner.concurrency)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, EndpointSet> {
        self.inner.endpoints.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, EndpointSet> {
        self.inner.endpoints.read().unwrap_or_else(|e| e.into_inner())
    }

    fn update_registration_count(&self) {
        let n = self.read().by_key.len();
        self.inner.ctx.counters.set_registrations(n as u64);
    }

    /// Replaces the user registrations: new ones get a queue, removed ones
    /// stop (their queued deliveries are dead-lettered as "registration
    /// removed"), unchanged ones keep their queue and in-flight deliveries.
    pub fn set_registrations(&self, registrations: &[Registration]) {
        let mut set = self.write();
        let wanted: HashSet<&str> = registrations.iter().map(|r| r.id.as_str()).collect();
        let global_keys: HashSet<String> = set.global.iter().map(|q| q.endpoint().key.clone()).collect();
        let gone: Vec<String> =
            set.by_key.keys().filter(|k| !global_keys.contains(*k) && !wanted.contains(k.as_str())).cloned().collect();
        for key in gone {
            if let Some(q) = set.by_key.remove(&key) {
                q.mark_removed();
                tracing::info!(registration = %key, "push-relay: registration removed");
            }
        }
        for reg in registrations {
            if set.by_key.contains_key(&reg.id) {
                continue;
            }
            match Endpoint::from_registration(reg) {
                Ok(endpoint) => {
                    tracing::info!(registration = %reg.id, user = %reg.user, url = %endpoint.display_url, "push-relay: registration active");
                    set.by_key.insert(reg.id.clone(), Arc::new(self.start_queue(endpoint)));
                }
                Err(reason) => tracing::warn!(registration = %reg.id, reason, "push-relay: registration ignored"),
            }
        }
        let mut by_user: HashMap<String, Vec<Arc<EndpointQueue>>> = HashMap::new();
        for q in set.by_key.values() {
            if let Some(user) = &q.endpoint().user {
                by_user.entry(user.clone()).or_default().push(q.clone());
            }
        }
        set.by_user = by_user;
        drop(set);
        self.update_registration_count();
    }

    /// Queues `event` for every matching endpoint without waiting. A full
    /// queue dead-letters that delivery ("queue full"); other endpoints are
    /// unaffected. `done`, if given, completes once every delivery is final
    /// (at once if nothing matches); pairs the delivered log already holds
    /// are skipped.
    pub fn dispatch(&self, event: &ExternalEvent, done: Option<Arc<Completion>>) {
        let ctx = &self.inner.ctx;
        ctx.counters.add_events_in(1);
        let body = event.to_json_bounded(self.inner.max_event_bytes);
        // Web Push carries at most one 4 KiB record: a smaller cut for it.
        let webpush_body = (body.len() > MAX_PAYLOAD_BYTES).then(|| event.to_json_bounded(MAX_PAYLOAD_BYTES));
        let prepared = Arc::new(PreparedEvent {
            id: event.id.clone(),
            kind: event.event,
            user: event.user.clone(),
            body,
            webpush_body,
        });
        {
            let set = self.read();
            let user_endpoints = set.by_user.get(&event.user).into_iter().flatten();
            for q in set.global.iter().chain(user_endpoints) {
                let endpoint = q.endpoint();
                if !endpoint.wants(event.event) {
                    continue;
                }
                if let (Some(log), Some(_)) = (&ctx.delivered, &done) {
                    if log.contains(&endpoint.key, &event.id) {
                        ctx.counters.add_duplicates_skipped(1);
                        continue;
                    }
                }
                if let Some(d) = &done {
                    d.add();
                }
                ctx.pending.fetch_add(1, Ordering::SeqCst);
                let job = Job { event: prepared.clone(), done: done.clone() };
                if let Err(job) = q.offer(job) {
                    ctx.counters.add_queue_full(1);
                    ctx.dead_letter(endpoint, &job, 0, "queue full");
                }
            }
        }
        if let Some(d) = done {
            d.finish();
        }
    }

    /// Deliveries queued or in progress.
    pub fn pending(&self) -> usize {
        self.inner.ctx.pending.load(Ordering::SeqCst)
    }

    /// Waits until nothing is pending or `timeout` passed; returns what is
    /// still pending.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let start = Instant::now();
        while self.pending() > 0 && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pending()
    }

    /// Stops every endpoint worker now; open deliveries stay open (a
    /// JetStream source redelivers them after a restart).
    pub fn abort(&self) {
        let set = self.read();
        for q in set.by_key.values() {
            q.abort();
        }
    }

    /// Counts a bus resync (events may have been missed).
    pub fn count_resync(&self) {
        self.inner.ctx.counters.add_resyncs(1);
    }

    /// The counters now.
    pub fn counters(&self) -> RelayCountersSnapshot {
        self.inner.ctx.counters.snapshot()
    }

    /// The dead-letter log's path.
    pub fn dead_letter_path(&self) -> &Path {
        self.inner.ctx.dead_letters.path()
    }
}
