//! Events from the durable JetStream stream of `[push.nats]`: at-least-once.
//!
//! A durable pull consumer (`[push.relay] consumer`, explicit acks, at most
//! `max_ack_pending` messages un-acknowledged, `ack_wait_secs`) reads the
//! stream's `<subject_prefix>.>` subjects. A message is acknowledged only
//! once every delivery it produced is final (delivered or dead-lettered),
//! so a relay killed at any moment gets the open ones again after a
//! restart. The delivered log (`delivered.log`) remembers finished
//! (registration, event id) pairs, so a redelivered message is sent only
//! to endpoints that had not finished it: duplicates are limited to the
//! requests in flight at the moment of a kill (the endpoint got the
//! request but the relay died before writing the log line), and they carry
//! the same `X-Dormouse-Event-Id`.
//!
//! On its first start the consumer begins with events published from then
//! on (`DeliverPolicy::New`); afterwards it resumes where it stopped, with
//! `ack_wait_secs` and `max_ack_pending` updated if the configuration
//! changed. If the
//! server redelivers a message still being worked on (its retries outlast
//! `ack_wait_secs`), the newer copy replaces the old one for the
//! acknowledgement and nothing is sent twice. At a graceful stop, open
//! messages are negatively acknowledged so the next start gets them at once.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::completion::Completion;
use super::{Relay, RelayConfig, RelayError};
use crate::config::PushNatsConfig;
use crate::ExternalEvent;

/// Feeds `relay` from the stream until `shutdown` turns true; then keeps
/// acknowledging for up to `drain` and releases what is still open.
///
/// # Errors
/// [`RelayError::Source`] if the consumer cannot be set up.
pub async fn run_jetstream_source(
    relay: &Relay,
    client: async_nats::Client,
    nats: &PushNatsConfig,
    cfg: &RelayConfig,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), RelayError> {
    let js = jetstream::new(client);
    let Some(consumer) = setup_consumer(&js, nats, cfg, &mut shutdown).await? else {
        return Ok(());
    };
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
    let mut open: HashMap<u64, jetstream::Message> = HashMap::new();
    let mut messages = None;
    let mut stopping = false;
    let error_log = bus::rate_log::RateLimitedLog::new(Duration::from_secs(10));
    let drain_deadline = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(drain_deadline);
    tracing::info!(stream = %nats.stream, consumer = %cfg.consumer, "push-relay: consuming the JetStream stream");
    loop {
        if messages.is_none() && !stopping {
            match consumer.messages().await {
                Ok(m) => messages = Some(m),
                Err(e) => {
                    if let Some(suppressed) = error_log.allow() {
                        tracing::warn!(error = %e, suppressed, "push-relay: cannot pull from the consumer; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if stopping && open.is_empty() {
            break;
        }
        tokio::select! {
            seq = ack_rx.recv() => {
                // The sender lives in this function, so the channel never closes.
                let Some(seq) = seq else { break };
                if let Some(msg) = open.remove(&seq) {
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(seq, error = %e, "push-relay: ack failed; the message will come again");
                    }
                }
            }
            next = async { messages.as_mut().expect("checked above").next().await }, if messages.is_some() => match next {
                Some(Ok(msg)) => handle(relay, msg, &mut open, &ack_tx).await,
                Some(Err(e)) => {
                    if let Some(suppressed) = error_log.allow() {
                        tracing::warn!(error = %e, suppressed, "push-relay: JetStream pull error");
                    }
                }
                None => messages = None,
            },
            () = super::runner::wait_stop(&mut shutdown), if !stopping => {
                stopping = true;
                // No new messages; the buffered ones come again after ack_wait.
                messages = None;
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + drain);
            }
            () = &mut drain_deadline, if stopping => break,
        }
    }
    for (seq, msg) in open.drain() {
        if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(seq, error = %e, "push-relay: nak failed; the message comes again after ack_wait");
        }
    }
    Ok(())
}

/// Creates (or finds) the stream and the durable consumer; `None` if
/// shutdown came first. Retries while the server is unreachable.
async fn setup_consumer(
    js: &jetstream::Context,
    nats: &PushNatsConfig,
    cfg: &RelayConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<jetstream::consumer::Consumer<pull::Config>>, RelayError> {
    let config = pull::Config {
        durable_name: Some(cfg.consumer.clone()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(cfg.ack_wait_secs),
        max_ack_pending: cfg.max_ack_pending,
        max_deliver: -1,
        filter_subject: format!("{}.>", nats.subject_prefix),
        ..Default::default()
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = async {
            crate::nats_publisher::ensure_stream(js, nats).await.map_err(|e| e.to_string())?;
            let stream = js.get_stream(&nats.stream).await.map_err(|e| e.to_string())?;
            match stream.consumer_info(&cfg.consumer).await {
                Ok(info) => {
                    // An existing consumer keeps its position and start
                    // policy; the limits follow the configuration.
                    let current = &info.config;
                    let wanted = pull::Config { deliver_policy: current.deliver_policy, ..config.clone() };
                    if current.ack_wait != wanted.ack_wait
                        || current.max_ack_pending != wanted.max_ack_pending
                        || current.filter_subject != wanted.filter_subject
                    {
                        tracing::info!(
                            consumer = %cfg.consumer,
                            ack_wait_secs = cfg.ack_wait_secs,
                            max_ack_pending = cfg.max_ack_pending,
                            "push-relay: consumer settings updated to the configuration"
                        );
                        stream.update_consumer(wanted).await.map_err(|e| e.to_string())
                    } else {
                        stream.get_consumer(&cfg.consumer).await.map_err(|e| e.to_string())
                    }
                }
                Err(_) => stream.get_or_create_consumer(&cfg.consumer, config.clone()).await.map_err(|e| e.to_string()),
            }
        }
        .await;
        match result {
            Ok(c) => return Ok(Some(c)),
            Err(reason) if attempt >= 30 => {
                return Err(RelayError::Source(format!("JetStream consumer {}: {reason}", cfg.consumer)));
            }
            Err(reason) => {
                tracing::warn!(attempt, reason, "push-relay: JetStream set-up failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = super::runner::wait_stop(shutdown) => return Ok(None),
                }
            }
        }
    }
}

/// Dispatches one stream message, tracking it until its deliveries are final.
async fn handle(
    relay: &Relay,
    msg: jetstream::Message,
    open: &mut HashMap<u64, jetstream::Message>,
    ack_tx: &mpsc::UnboundedSender<u64>,
) {
    let seq = match msg.info() {
        Ok(info) => info.stream_sequence,
        Err(e) => {
            tracing::warn!(error = %e, "push-relay: stream message without JetStream metadata; ignored");
            return;
        }
    };
    if let Some(slot) = open.get_mut(&seq) {
        // Redelivered while still being worked on: acknowledge the newest copy.
        *slot = msg;
        return;
    }
    let event = match ExternalEvent::from_json(&msg.payload) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(seq, subject = %msg.subject, error = %e, "push-relay: undecodable stream message; dropped");
            if let Err(e) = msg.ack_with(AckKind::Term).await {
                tracing::debug!(seq, error = %e, "push-relay: term failed");
            }
            return;
        }
    };
    open.insert(seq, msg);
    let tx = ack_tx.clone();
    relay.dispatch(&event, Some(Completion::new(move || {
        let _ = tx.send(seq);
    })));
}
