//! The NATS subscriber: one subscription per subscribed user, merged by one
//! tokio task into the application's queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::{Client, Event};
use futures::stream::{AbortHandle, Abortable, SelectAll, StreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::connect::{connect, round_trip};
use super::subject::subject_for_user;
use crate::dispatch::{Dispatcher, UserTable};
use crate::wire::decode_frame;
use crate::{BusCounters, BusError, BusMessage, CountersSnapshot, NatsConfig, ResyncReason, SubscriptionMode};

enum Command {
    SubscribeAll,
    Subscribe(String),
    Unsubscribe(String),
    Sync(oneshot::Sender<Result<(), String>>),
    Reconnected,
    SlowConsumer,
}

/// Receives the events of the users it subscribed to from NATS.
#[derive(Debug)]
pub struct NatsSubscriber {
    users: Arc<UserTable>,
    rx: mpsc::Receiver<BusMessage>,
    cmd: mpsc::UnboundedSender<Command>,
    counters: Arc<BusCounters>,
    client: Client,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::SubscribeAll => "SubscribeAll",
            Command::Subscribe(_) => "Subscribe",
            Command::Unsubscribe(_) => "Unsubscribe",
            Command::Sync(_) => "Sync",
            Command::Reconnected => "Reconnected",
            Command::SlowConsumer => "SlowConsumer",
        })
    }
}

impl NatsSubscriber {
    /// Connects and starts the receiving task on the current tokio runtime.
    ///
    /// # Errors
    /// [`BusError::NatsConnect`] if the server cannot be reached.
    pub async fn connect(cfg: &NatsConfig, queue_capacity: usize) -> Result<Self, BusError> {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let was_down = Arc::new(AtomicBool::new(false));
        let events_cmd = cmd.clone();
        let client = connect(cfg, move |event| {
            let cmd = events_cmd.clone();
            let was_down = was_down.clone();
            async move {
                match event {
                    Event::Disconnected => {
                        was_down.store(true, Ordering::SeqCst);
                        tracing::warn!("bus: NATS subscriber disconnected; will resync after reconnect");
                    }
                    Event::Connected => {
                        if was_down.swap(false, Ordering::SeqCst) {
                            tracing::info!("bus: NATS subscriber reconnected; resyncing subscribed users");
                            let _ = cmd.send(Command::Reconnected);
                        }
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "bus: NATS subscription dropped messages (slow consumer)");
                        let _ = cmd.send(Command::SlowConsumer);
                    }
                    other => tracing::info!(event = %other, "bus: NATS subscriber connection event"),
                }
            }
        })
        .await?;
        let users = Arc::new(UserTable::default());
        let counters = Arc::new(BusCounters::default());
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let dispatcher = Dispatcher::new(users.clone(), tx, counters.clone());
        let wildcard = cfg.subscription_mode == SubscriptionMode::Wildcard;
        let task = tokio::spawn(run(client.clone(), cfg.subject_prefix.clone(), wildcard, cmd_rx, dispatcher));
        Ok(Self { users, rx, cmd, counters, client, task })
    }

    /// Adds a session of `user`; the first one subscribes to the user's
    /// subject. Call [`NatsSubscriber::sync`] to wait until the server applies it.
    pub fn subscribe(&self, user: &str) {
        if self.users.subscribe(user) {
            let _ = self.cmd.send(Command::Subscribe(user.to_owned()));
        }
    }

    /// Subscribes every user for good (a consumer of all events, such as a
    /// push relay): one subscription to `<subject_prefix>.>` replaces the
    /// per-user ones. Call [`NatsSubscriber::sync`] to wait until it applies.
    pub fn subscribe_all(&self) {
        self.users.subscribe_all();
        let _ = self.cmd.send(Command::SubscribeAll);
    }

    /// Removes a session of `user`; after the last, the subscription is dropped.
    pub fn unsubscribe(&self, user: &str) {
        if self.users.unsubscribe(user) {
            let _ = self.cmd.send(Command::Unsubscribe(user.to_owned()));
        }
    }

    /// Number of subscribed users.
    pub fn subscribed_count(&self) -> usize {
        self.users.len()
    }

    /// Waits until every (un)subscribe requested so far is in effect at the
    /// server (a round trip through a temporary `_INBOX` subscription, so the
    /// connection needs publish and subscribe permission on `_INBOX.>`).
    ///
    /// # Errors
    /// [`BusError`] if the server did not confirm or the task stopped.
    pub async fn sync(&self) -> Result<(), BusError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Sync(tx)).map_err(|_| BusError::Closed)?;
        rx.await.map_err(|_| BusError::Closed)?.map_err(|reason| BusError::Nats { op: "flush", reason })
    }

    /// Waits for the next message; `None` once the task has stopped.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<BusMessage> {
        self.rx.try_recv().ok()
    }

    /// The underlying client (for diagnostics and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Current counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }
}

impl Drop for NatsSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    client: Client,
    prefix: String,
    mut wildcard: bool,
    mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    mut dispatcher: Dispatcher,
) {
    let mut streams: SelectAll<Abortable<async_nats::Subscriber>> = SelectAll::new();
    let mut handles: HashMap<String, AbortHandle> = HashMap::new();
    // The client reports every message it dropped; one resync is emitted
    // once the messages already received are delivered.
    let mut slow_consumer = false;
    if wildcard {
        match client.subscribe(format!("{prefix}.>")).await {
            Ok(sub) => streams.push(futures::stream::abortable(sub).0),
            Err(e) => {
                tracing::error!(error = %e, "bus: NATS wildcard subscribe failed");
                return;
            }
        }
    }
    loop {
        tokio::select! {
            biased;
            cmd = cmd_rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::SubscribeAll => {
                        if wildcard {
                            continue;
                        }
                        match client.subscribe(format!("{prefix}.>")).await {
                            Ok(sub) => {
                                wildcard = true;
                                streams.push(futures::stream::abortable(sub).0);
                                // The wildcard carries their events now; two
                                // subscriptions would deliver each twice.
                                for (_, h) in handles.drain() {
                                    h.abort();
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "bus: NATS wildcard subscribe failed"),
                        }
                    }
                    Command::Subscribe(user) => {
                        // In wildcard mode the user table alone decides.
                        if wildcard || handles.contains_key(&user) {
                            continue;
                        }
                        match client.subscribe(subject_for_user(&prefix, &user)).await {
                            Ok(sub) => {
                                let (stream, handle) = futures::stream::abortable(sub);
                                streams.push(stream);
                                handles.insert(user, handle);
                            }
                            Err(e) => tracing::warn!(error = %e, "bus: NATS subscribe failed"),
                        }
                    }
                    Command::Unsubscribe(user) => {
                        // Aborting ends the stream; polling the set once drops
                        // it now, and dropping the subscriber queues the UNSUB
                        // ahead of any later round trip.
                        if let Some(h) = handles.remove(&user) {
                            h.abort();
                            while let Some(Some(msg)) = streams.next().now_or_never() {
                                handle_message(&mut dispatcher, &msg);
                            }
                        }
                    }
                    Command::Sync(done) => {
                        let _ = done.send(round_trip(&client).await);
                    }
                    Command::Reconnected => {
                        // The client re-sent the subscriptions before this round
                        // trip, so once it returns the server has them all.
                        if let Err(e) = round_trip(&client).await {
                            tracing::warn!(error = %e, "bus: NATS round trip after reconnect failed");
                        }
                        dispatcher.resync_all(ResyncReason::Reconnected);
                    }
                    Command::SlowConsumer => slow_consumer = true,
                }
            }
            msg = streams.next(), if !streams.is_empty() => {
                if let Some(msg) = msg {
                    handle_message(&mut dispatcher, &msg);
                }
            }
            () = std::future::ready(()), if slow_consumer => {
                slow_consumer = false;
                dispatcher.resync_all(ResyncReason::SlowConsumer);
            }
        }
        if !dispatcher.end_batch().await {
            return;
        }
    }
}

fn handle_message(dispatcher: &mut Dispatcher, msg: &async_nats::Message) {
    match decode_frame(&msg.payload) {
        Ok(frame) => {
            for record in frame.records {
                dispatcher.record("nats", record);
            }
        }
        Err(e) => dispatcher.bad_input("nats", &e),
    }
}
