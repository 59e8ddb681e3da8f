//! One delivery (an event for one endpoint) from its first attempt to its
//! final state: delivered, or written to the dead-letter log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::backoff::Backoff;
use super::completion::Completion;
use super::counters::RelayCounters;
use super::dead_letter::{DeadLetter, DeadLetterLog};
use super::delivered_log::DeliveredLog;
use super::endpoint::{Endpoint, EndpointTarget};
use super::webhook::{send_webhook, WebhookRequest};
use super::AttemptOutcome;
use crate::registration_store::RegistrationStore;
use crate::web_push::{WebPushConfig, WebPushSender};
use crate::ExternalEventKind;

/// An event ready to send: its bounded JSON body and what the headers need.
#[derive(Debug)]
pub struct PreparedEvent {
    /// The event id.
    pub id: String,
    /// The event type.
    pub kind: ExternalEventKind,
    /// The event's user.
    pub user: String,
    /// The JSON body (`to_json_bounded(push.max_event_bytes)`).
    pub body: Vec<u8>,
    /// A shorter body for Web Push when `body` is above its limit.
    pub webpush_body: Option<Vec<u8>>,
}

/// The Web Push sender, made when the first Web Push delivery needs it
/// (it creates the VAPID key file on first use).
#[derive(Debug)]
pub struct WebPushSlot {
    cfg: WebPushConfig,
    state_dir: PathBuf,
    sender: OnceLock<Result<WebPushSender, String>>,
}

impl WebPushSlot {
    /// A slot for `cfg`, keys under `state_dir`.
    pub fn new(cfg: WebPushConfig, state_dir: PathBuf) -> Self {
        WebPushSlot { cfg, state_dir, sender: OnceLock::new() }
    }

    /// The sender, or why there is none.
    fn get(&self, http: &reqwest::Client) -> Result<&WebPushSender, &str> {
        self.sender
            .get_or_init(|| {
                WebPushSender::new(&self.cfg, &self.state_dir, http.clone()).map_err(|e| {
                    tracing::error!(error = %e, "push-relay: Web Push unavailable");
                    format!("Web Push unavailable: {e}")
                })
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// One queued delivery.
#[derive(Debug)]
pub struct Job {
    /// The event.
    pub event: Arc<PreparedEvent>,
    /// Told when this delivery is final (JetStream mode).
    pub done: Option<Arc<Completion>>,
}

/// What every endpoint's workers share.
#[derive(Debug)]
pub struct DeliveryContext {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Counters.
    pub counters: Arc<RelayCounters>,
    /// Where failed deliveries go.
    pub dead_letters: DeadLetterLog,
    /// Retry delays.
    pub backoff: Backoff,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Finished pairs (JetStream mode).
    pub delivered: Option<DeliveredLog>,
    /// Registration store, to drop registrations whose target is gone.
    pub store: RegistrationStore,
    /// Deliveries queued or in progress, for draining at shutdown.
    pub pending: AtomicUsize,
    /// Web Push sending.
    pub webpush: WebPushSlot,
}

impl DeliveryContext {
    /// Marks `job` final for `endpoint`: remembers the pair (when a source
    /// waits for completions) and releases the completion.
    pub fn finish(&self, endpoint: &Endpoint, job: &Job) {
        if let (Some(log), Some(_)) = (&self.delivered, &job.done) {
            log.record(&endpoint.key, &job.event.id);
        }
        self.pending.fetch_sub(1, Ordering::SeqCst);
        if let Some(done) = &job.done {
            done.finish();
        }
    }

    /// Writes `job` to the dead-letter log and marks it final.
    pub fn dead_letter(&self, endpoint: &Endpoint, job: &Job, attempts: u32, reason: &str) {
        self.counters.add_dead_lettered(1);
        tracing::warn!(
            registration = %endpoint.key,
            url = %endpoint.display_url,
            event_id = %job.event.id,
            attempts,
            reason,
            "push-relay: delivery dead-lettered"
        );
        let event = serde_json::from_slice(&job.event.body).unwrap_or(serde_json::Value::Null);
        self.dead_letters.append(&DeadLetter {
            time_ms: storage_hooks::durable::now_ms(),
            registration: endpoint.key.clone(),
            user: job.event.user.clone(),
            url: endpoint.display_url.clone(),
            attempts,
            reason: reason.to_owned(),
            event,
        });
        self.finish(endpoint, job);
    }

    /// Makes attempts until `job` is delivered or given up. Cancelled by
    /// dropping the future (shutdown): the delivery then stays open.
    pub async fn deliver(&self, endpoint: &Endpoint, job: Job, removed: &AtomicBool) {
        let mut attempt = 0u32;
        loop {
            if removed.load(Ordering::SeqCst) {
                self.dead_letter(endpoint, &job, attempt, "registration removed");
                return;
            }
            attempt += 1;
            self.counters.add_attempts(1);
            if attempt > 1 {
                self.counters.add_retries(1);
            }
            let outcome = match &endpoint.target {
                EndpointTarget::Webhook { url, secret } => {
                    let req = WebhookRequest {
                        event_name: job.event.kind.as_str(),
                        event_id: &job.event.id,
                        attempt,
                        body: &job.event.body,
                    };
                    send_webhook(&self.http, url, secret, req).await
                }
                EndpointTarget::Webpush { endpoint, p256dh, auth } => match self.webpush.get(&self.http) {
                    Ok(sender) => {
                        let body = job.event.webpush_body.as_deref().unwrap_or(&job.event.body);
                        sender.send(endpoint, p256dh, auth, body).await
                    }
                    Err(reason) => AttemptOutcome::Permanent { reason: reason.to_owned() },
                },
            };
            match outcome {
                AttemptOutcome::Delivered { .. } => {
                    self.counters.add_deliveries_ok(1);
                    self.finish(endpoint, &job);
                    return;
                }
                AttemptOutcome::Retry { reason, retry_after } if attempt < self.max_attempts => {
                    let delay = self.backoff.delay(attempt, retry_after);
                    tracing::debug!(
                        registration = %endpoint.key,
                        event_id = %job.event.id,
                        attempt,
                        reason,
                        delay_ms = delay.as_millis() as u64,
                        "push-relay: attempt failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                AttemptOutcome::Retry { reason, .. } => {
                    self.dead_letter(endpoint, &job, attempt, &format!("gave up after {attempt} attempts: {reason}"));
                    return;
                }
                AttemptOutcome::Permanent { reason } => {
                    self.dead_letter(endpoint, &job, attempt, &reason);
                    return;
                }
                AttemptOutcome::Gone { reason } => {
                    self.dead_letter(endpoint, &job, attempt, &format!("subscription gone: {reason}"));
                    removed.store(true, Ordering::SeqCst);
                    self.remove_registration(endpoint);
                    return;
                }
            }
        }
    }

    /// Drops a registration whose target no longer exists.
    fn remove_registration(&self, endpoint: &Endpoint) {
        if endpoint.user.is_none() {
            return;
        }
        match self.store.remove(&endpoint.key) {
            Ok(_) => tracing::info!(registration = %endpoint.key, "push-relay: registration removed (target gone)"),
            Err(crate::registration_store::RegistrationError::NotFound(_)) => {}
            Err(e) => tracing::warn!(registration = %endpoint.key, error = %e, "push-relay: cannot remove a gone registration"),
        }
    }
}
