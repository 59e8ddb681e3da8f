//! Waking sessions when their user's mail changes (IDLE and pending updates).
//!
//! A worker keeps one [`WakeupRegistry`]: every session registers its user
//! and gets a [`SessionInbox`]. Change events reach the registry from two
//! sides, and no session ever polls:
//!
//! - [`WakeupHook`], a storage [`ChangeHook`] installed in the worker's own
//!   stores, so a change made by one session reaches the other sessions of
//!   the same user in this process at once;
//! - the event-bus subscriber (changes made by other processes: LMTP,
//!   `dormouse deliver`, other workers), which calls
//!   [`WakeupRegistry::dispatch`] for every received event. The registry
//!   tells a [`UserSubscriptionListener`] when a user gets their first
//!   session in this worker and when the last one ends, so the subscriber
//!   only asks the bus for users this worker serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use storage_hooks::{ChangeHook, HookError, MailboxEvent};
use tokio::sync::Notify;

/// Events kept per session before they are collapsed into one "something
/// changed" poke (a session that is busy for long must not grow without bound).
const MAX_QUEUED_EVENTS: usize = 64;

/// What is waiting for one session.
#[derive(Debug, Default)]
pub struct Pending {
    /// Events in arrival order.
    pub events: Vec<MailboxEvent>,
    /// True if events were dropped because the queue was full: the session
    /// must resync its selected mailbox as if it had changed.
    pub overflowed: bool,
}

/// One session's mailbox of change events plus the notifier that wakes its task.
#[derive(Debug, Default)]
pub struct SessionInbox {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl SessionInbox {
    fn poke(&self) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.events.clear();
            p.overflowed = true;
        }
        self.notify.notify_one();
    }

    fn push(&self, event: &MailboxEvent) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.events.len() >= MAX_QUEUED_EVENTS {
                p.events.clear();
                p.overflowed = true;
            } else if !p.overflowed {
                p.events.push(event.clone());
            }
        }
        self.notify.notify_one();
    }

    /// Takes everything queued so far.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until something is pushed (returns at once if a push happened
    /// since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Told when the set of users with sessions in this worker changes (the bus
/// subscriber implements it to subscribe and unsubscribe per user).
pub trait UserSubscriptionListener: Send + Sync {
    /// `user` got their first session here.
    fn user_added(&self, user: &str);
    /// `user`'s last session here ended.
    fn user_removed(&self, user: &str);
}

/// Sessions per user in this process, for waking them on changes.
#[derive(Default)]
pub struct WakeupRegistry {
    users: Mutex<HashMap<String, Vec<Weak<SessionInbox>>>>,
    listener: Mutex<Option<Arc<dyn UserSubscriptionListener>>>,
}

impl std::fmt::Debug for WakeupRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeupRegistry").field("users", &self.user_count()).finish_non_exhaustive()
    }
}

/// A session's registration; unregisters when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<WakeupRegistry>,
    user: String,
    inbox: Arc<SessionInbox>,
}

impl Registration {
    /// The session's inbox.
    pub fn inbox(&self) -> &SessionInbox {
        &self.inbox
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(&self.user, &self.inbox);
    }
}

impl WakeupRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Installs the listener told about users coming and going; users that
    /// already have sessions are reported to it at once.
    pub fn set_listener(&self, listener: Arc<dyn UserSubscriptionListener>) {
        let users: Vec<String> = self.users.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for user in &users {
            listener.user_added(user);
        }
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    fn listener(&self) -> Option<Arc<dyn UserSubscriptionListener>> {
        self.listener.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Registers a session of `user`.
    pub fn register(self: &Arc<Self>, user: &str) -> Registration {
        let inbox = Arc::new(SessionInbox::default());
        let first = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let list = users.entry(user.to_owned()).or_default();
            list.push(Arc::downgrade(&inbox));
            list.len() == 1
        };
        if first {
            if let Some(l) = self.listener() {
                l.user_added(user);
            }
        }
        Registration { registry: Arc::clone(self), user: user.to_owned(), inbox }
    }

    fn unregister(&self, user: &str, inbox: &Arc<SessionInbox>) {
        let last = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let Some(list) = users.get_mut(user) else { return };
            let me = Arc::as_ptr(inbox);
            list.retain(|w| w.as_ptr() != me && w.strong_count() > 0);
            if list.is_empty() {
                users.remove(user);
                true
            } else {
                false
            }
        };
        if last {
            if let Some(l) = self.listener() {
                l.user_removed(user);
            }
        }
    }

    /// Queues `event` for every session of `event.user` and wakes them.
    /// Returns how many sessions were woken.
    pub fn dispatch(&self, event: &MailboxEvent) -> usize {
        let inboxes: Vec<Arc<SessionInbox>> = {
            let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            match users.get(&event.user) {
                Some(list) => list.iter().filter_map(Weak::upgrade).collect(),
                None => return 0,
            }
        };
        for inbox in &inboxes {
            inbox.push(event);
        }
        inboxes.len()
    }

    /// Tells the sessions of `user` (all sessions with `None`) that something
    /// may have changed without saying what (the bus lost events); they
    /// resync their selected mailbox. Returns how many sessions were poked.
    pub fn poke(&self, user: Option<&str>) -> usize {
        let inboxes: Vec<Arc<SessionInbox>> = {
            let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            match user {
                Some(u) => users.get(u).map(|l| l.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default(),
                None => users.values().flatten().filter_map(Weak::upgrade).collect(),
            }
        };
        for inbox in &inboxes {
            inbox.poke();
        }
        inboxes.len()
    }

    /// Number of users with at least one session.
    pub fn user_count(&self) -> usize {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether `user` has sessions here.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).contains_key(user)
    }
}

/// The storage hook that feeds the worker's own changes into its registry.
#[derive(Debug)]
pub struct WakeupHook {
    registry: Arc<WakeupRegistry>,
}

impl WakeupHook {
    /// A hook dispatching into `registry`.
    pub fn new(registry: Arc<WakeupRegistry>) -> Arc<Self> {
        Arc::new(Self { registry })
    }
}

impl ChangeHook for WakeupHook {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        self.registry.dispatch(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use storage_hooks::{EventKind, Flags, MailboxStatus, UidSet};

    fn event(user: &str) -> MailboxEvent {
        MailboxEvent {
            kind: EventKind::MessageNew,
            user: user.into(),
            mailbox: "INBOX".into(),
            old_mailbox: None,
            uidvalidity: 1,
            uids: UidSet::default(),
            flags: Flags::default(),
            status: MailboxStatus::default(),
            modseq_before: 1,
            modseq_after: 2,
            summary: None,
            timestamp_ms: 0,
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);
    impl UserSubscriptionListener for Recorder {
        fn user_added(&self, user: &str) {
            self.0.lock().unwrap().push(format!("+{user}"));
        }
        fn user_removed(&self, user: &str) {
            self.0.lock().unwrap().push(format!("-{user}"));
        }
    }

    #[tokio::test]
    async fn dispatch_wakes_only_that_users_sessions() {
        let reg = WakeupRegistry::new();
        let a1 = reg.register("alice");
        let a2 = reg.register("alice");
        let b = reg.register("bob");
        assert_eq!(reg.dispatch(&event("alice")), 2);
        tokio::time::timeout(Duration::from_secs(5), a1.inbox().notified()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), a2.inbox().notified()).await.unwrap();
        assert_eq!(a1.inbox().take().events.len(), 1);
        assert!(b.inbox().take().events.is_empty());
        assert_eq!(reg.dispatch(&event("carol")), 0);
    }

    #[test]
    fn hook_feeds_registry_and_queue_is_bounded() {
        let reg = WakeupRegistry::new();
        let s = reg.register("alice");
        let hook = WakeupHook::new(Arc::clone(&reg));
        for _ in 0..(MAX_QUEUED_EVENTS + 5) {
            hook.on_change(&event("alice")).unwrap();
        }
        let p = s.inbox().take();
        assert!(p.overflowed);
        assert!(p.events.is_empty());
        let after = s.inbox().take();
        assert!(!after.overflowed);
    }

    #[test]
    fn poke_marks_overflow_for_user_or_everyone() {
        let reg = WakeupRegistry::new();
        let a = reg.register("alice");
        let b = reg.register("bob");
        assert_eq!(reg.poke(Some("alice")), 1);
        assert!(a.inbox().take().overflowed);
        assert!(!b.inbox().take().overflowed);
        assert_eq!(reg.poke(None), 2);
        assert!(a.inbox().take().overflowed && b.inbox().take().overflowed);
        assert_eq!(reg.poke(Some("nobody")), 0);
    }

    #[test]
    fn listener_sees_first_and_last_session() {
        let reg = WakeupRegistry::new();
        let early = reg.register("zed");
        let rec = Arc::new(Recorder::default());
        reg.set_listener(rec.clone());
        let a1 = reg.register("alice");
        let a2 = reg.register("alice");
        drop(a1);
        assert!(reg.has_user("alice"));
        drop(a2);
        assert!(!reg.has_user("alice"));
        drop(early);
        assert_eq!(*rec.0.lock().unwrap(), vec!["+zed", "+alice", "-alice", "-zed"]);
        assert_eq!(reg.user_count(), 0);
    }
}
