//! The bus subscriber runs on its own small tokio thread; bus messages
//! reach the epoll thread through a queue and an eventfd, and
//! subscribe/unsubscribe requests go the other way. A [`SubscriptionHook`]
//! (the process's Maildir watcher) hears of each user subscribed and
//! unsubscribed on that thread, never on the epoll thread.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use bus::{BusConfig, BusMessage, BusSubscriber};

use super::DriverError;
use rustix::event::{eventfd, EventfdFlags};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Told on the bus thread when a user's subscription starts (after it is
/// in effect on the bus) and ends; calls for one user come in order.
pub trait SubscriptionHook: Send + Sync {
    /// The user has hibernated sessions here now.
    fn user_subscribed(&self, user: &str);
    /// The user's last hibernated session left.
    fn user_unsubscribed(&self, user: &str);
    /// The first hibernated session here selected `mailbox` of `user`
    /// (told before the user's subscription, for a new user).
    fn mailbox_selected(&self, _user: &str, _mailbox: &str) {}
    /// The last hibernated session here with `mailbox` selected left.
    fn mailbox_released(&self, _user: &str, _mailbox: &str) {}
}

/// A request to the bus thread.
#[derive(Debug)]
enum BusCommand {
    Subscribe(String),
    Unsubscribe(String),
    /// `recheck`: the user's subscription is already in effect, so once the
    /// hook has added its watch the core checks the user's state again
    /// (a change made between its read and the watch would be missed).
    Selected { user: String, mailbox: String, recheck: bool },
    Released { user: String, mailbox: String },
}

/// What the bus thread hands to the epoll thread.
#[derive(Debug)]
pub enum BridgeItem {
    /// A message from the subscriber.
    Bus(Box<BusMessage>),
    /// The subscription of this user is in effect now: state read from
    /// storage before this point must be checked against storage again.
    Subscribed(String),
    /// The bus endpoint stopped.
    Stopped,
}

/// The epoll thread's handle on the bus thread.
#[derive(Debug)]
pub struct BusBridge {
    commands: UnboundedSender<BusCommand>,
    messages: mpsc::Receiver<BridgeItem>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl BusBridge {
    /// Starts the bus thread and opens the subscriber there.
    ///
    /// # Errors
    /// The subscriber could not be opened (bad config, NATS unreachable).
    pub fn start(config: BusConfig) -> Result<Self, DriverError> {
        Self::start_with_hook(config, None)
    }

    /// Like [`BusBridge::start`], telling `hook` of users subscribed and
    /// unsubscribed.
    ///
    /// # Errors
    /// The subscriber could not be opened (bad config, NATS unreachable).
    pub fn start_with_hook(config: BusConfig, hook: Option<Arc<dyn SubscriptionHook>>) -> Result<Self, DriverError> {
        let wake = Arc::new(
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(std::io::Error::from)?,
        );
        let (cmd_tx, mut cmd_rx) = unbounded_channel::<BusCommand>();
        let (msg_tx, msg_rx) = mpsc::channel::<BridgeItem>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), DriverError>>();
        let wake2 = wake.clone();
        let thread = std::thread::Builder::new()
            .name("hibernate-bus".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(DriverError::Io(e)));
                        return;
                    }
                };
                // The hook may own a runtime of its own (the Maildir
                // watcher does): it must be dropped outside `block_on`, or
                // tokio panics, so the future only borrows it.
                let hook = &hook;
                rt.block_on(async move {
                    let mut sub = match BusSubscriber::from_config(&config).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(DriverError::Bus(e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let notify = |m: BridgeItem| {
                        let stop = msg_tx.send(m).is_err();
                        let _ = rustix::io::write(wake2.as_fd(), &1u64.to_ne_bytes());
                        stop
                    };
                    loop {
                        tokio::select! {
                            cmd = cmd_rx.recv() => match cmd {
                                Some(BusCommand::Subscribe(u)) => {
                                    sub.subscribe(&u);
                                    if let Err(e) = sub.sync().await {
                                        tracing::warn!(error = %e, "bus subscription not confirmed");
                                    }
                                    if let Some(hook) = &hook {
                                        hook.user_subscribed(&u);
                                    }
                                    if notify(BridgeItem::Subscribed(u)) {
                                        return;
                                    }
                                }
                                Some(BusCommand::Selected { user, mailbox, recheck }) => {
                                    if let Some(hook) = &hook {
                                        hook.mailbox_selected(&user, &mailbox);
                                        if recheck && notify(BridgeItem::Subscribed(user)) {
                                            return;
                                        }
                                    }
                                }
                                Some(BusCommand::Released { user, mailbox }) => {
                                    if let Some(hook) = &hook {
                                        hook.mailbox_released(&user, &mailbox);
                                    }
                                }
                                Some(BusCommand::Unsubscribe(u)) => {
                                    sub.unsubscribe(&u);
                                    if let Some(hook) = &hook {
                                        hook.user_unsubscribed(&u);
                                    }
                                }
                                None => return,
                            },
                            msg = sub.recv() => {
                                let Some(msg) = msg else {
                                    notify(BridgeItem::Stopped);
                                    return;
                                };
                                // Batch what is already queued behind one wake-up.
                                let mut batch = vec![msg];
                                while let Some(m) = sub.try_recv() {
                                    batch.push(m);
                                }
                                for m in batch {
                                    if msg_tx.send(BridgeItem::Bus(Box::new(m))).is_err() {
                                        return;
                                    }
                                }
                                let _ = rustix::io::write(wake2.as_fd(), &1u64.to_ne_bytes());
                            }
                        }
                    }
                });
                drop(rt);
            })
            .map_err(DriverError::Io)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(DriverError::Io(std::io::Error::other("bus thread died"))),
        }
        Ok(BusBridge { commands: cmd_tx, messages: msg_rx, wake, thread: Some(thread) })
    }

    /// The descriptor that becomes readable when messages are queued.
    pub fn wake_fd(&self) -> &OwnedFd {
        &self.wake
    }

    /// Subscribes to a user's events.
    pub fn subscribe(&self, user: String) {
        let _ = self.commands.send(BusCommand::Subscribe(user));
    }

    /// Unsubscribes.
    pub fn unsubscribe(&self, user: String) {
        let _ = self.commands.send(BusCommand::Unsubscribe(user));
    }

    /// Tells the hook the first session here selected `mailbox`; with
    /// `recheck` (the user is subscribed already) the core is then asked to
    /// check the user's state again, as after a subscription.
    pub fn mailbox_selected(&self, user: String, mailbox: String, recheck: bool) {
        let _ = self.commands.send(BusCommand::Selected { user, mailbox, recheck });
    }

    /// Tells the hook the last session here with `mailbox` selected left.
    pub fn mailbox_released(&self, user: String, mailbox: String) {
        let _ = self.commands.send(BusCommand::Released { user, mailbox });
    }

    /// Queued items (clears the eventfd).
    pub fn drain(&self) -> Vec<BridgeItem> {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(self.wake.as_fd(), &mut counter);
        self.messages.try_iter().collect()
    }
}

impl Drop for BusBridge {
    fn drop(&mut self) {
        // Closing the command channel ends the bus thread's loop.
        let (tx, _) = unbounded_channel();
        drop(std::mem::replace(&mut self.commands, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;

    /// Records the hook calls in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl SubscriptionHook for Recorder {
        fn user_subscribed(&self, user: &str) {
            self.0.lock().unwrap().push(format!("+{user}"));
        }
        fn user_unsubscribed(&self, user: &str) {
            self.0.lock().unwrap().push(format!("-{user}"));
        }
    }

    #[test]
    fn the_hook_hears_subscriptions_in_order_before_they_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let bridge = BusBridge::start_with_hook(BusConfig::unix_in_run_dir(dir.path()), Some(recorder.clone())).unwrap();
        bridge.subscribe("bob".into());
        bridge.unsubscribe("bob".into());
        bridge.subscribe("carol".into());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut subscribed = Vec::new();
        while subscribed.len() < 2 {
            assert!(Instant::now() < deadline, "subscriptions never confirmed");
            for item in bridge.drain() {
                if let BridgeItem::Subscribed(u) = item {
                    // Watching starts before the epoll thread resyncs.
                    assert!(recorder.0.lock().unwrap().contains(&format!("+{u}")));
                    subscribed.push(u);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(subscribed, ["bob", "carol"]);
        drop(bridge);
        assert_eq!(*recorder.0.lock().unwrap(), ["+bob", "-bob", "+carol"]);
    }

    /// A hook owning a runtime, as the Maildir watcher does; records
    /// whether it was dropped without a panic.
    struct RuntimeHook {
        rt: Option<tokio::runtime::Runtime>,
        dropped: Arc<std::sync::atomic::AtomicBool>,
    }

    impl SubscriptionHook for RuntimeHook {
        fn user_subscribed(&self, _: &str) {}
        fn user_unsubscribed(&self, _: &str) {}
    }

    impl Drop for RuntimeHook {
        fn drop(&mut self) {
            drop(self.rt.take());
            self.dropped.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn stopping_drops_a_hook_that_owns_a_runtime_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // The bridge holds the only reference, as in the hibernate process.
        let hook = Arc::new(RuntimeHook { rt: Some(rt), dropped: dropped.clone() });
        let bridge = BusBridge::start_with_hook(BusConfig::unix_in_run_dir(dir.path()), Some(hook)).unwrap();
        drop(bridge);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the hook's drop panicked on the bus thread");
    }
}
