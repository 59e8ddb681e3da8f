//! Subscriber-side filtering and delivery shared by both transports: keeps
//! the set of subscribed users, checks each event's modseq chain, and hands
//! messages to the application's queue without ever blocking the receive
//! loop on a single slow application.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use storage_hooks::event::EventDecodeError;
use storage_hooks::{EventKind, MailboxEvent};

use crate::rate_log::RateLimitedLog;
use crate::wire::{Record, WireError};
use crate::{BusCounters, BusMessage, ResyncReason};

/// Per-user subscription state: how many sessions asked for the user, and
/// the last `modseq_after` seen per mailbox.
#[derive(Debug, Default)]
struct UserState {
    sessions: u32,
    modseq: HashMap<String, u64>,
}

/// Subscribed users, counted per session: a user stays subscribed from the
/// first [`UserTable::subscribe`] until the matching last
/// [`UserTable::unsubscribe`]. After [`UserTable::subscribe_all`] every
/// user counts as subscribed (a push relay); users are then added on their
/// first event, with no sessions, to track their modseq chain.
#[derive(Debug, Default)]
pub struct UserTable {
    users: Mutex<HashMap<String, UserState>>,
    all: AtomicBool,
}

impl UserTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, UserState>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one session of `user`; true if this is its first.
    pub fn subscribe(&self, user: &str) -> bool {
        let mut users = self.lock();
        match users.get_mut(user) {
            Some(st) => {
                st.sessions = st.sessions.saturating_add(1);
                false
            }
            None => {
                users.insert(user.to_owned(), UserState { sessions: 1, modseq: HashMap::new() });
                true
            }
        }
    }

    /// Removes one session of `user`; true if that was its last (the user
    /// is no longer subscribed). Unknown users are ignored.
    pub fn unsubscribe(&self, user: &str) -> bool {
        let mut users = self.lock();
        // Users added by the wildcard have no sessions to remove.
        let Some(st) = users.get_mut(user).filter(|st| st.sessions > 0) else { return false };
        st.sessions -= 1;
        if st.sessions == 0 {
            users.remove(user);
            true
        } else {
            false
        }
    }

    /// Subscribes every user, for good (a consumer of all events).
    pub fn subscribe_all(&self) {
        self.all.store(true, Ordering::SeqCst);
    }

    /// True after [`UserTable::subscribe_all`].
    pub fn is_all(&self) -> bool {
        self.all.load(Ordering::SeqCst)
    }

    /// True if `user` is subscribed.
    pub fn contains(&self, user: &str) -> bool {
        self.is_all() || self.lock().contains_key(user)
    }

    /// Number of users with sessions.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|st| st.sessions > 0).count()
    }

    /// True if nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the modseq state of `user` (or of everyone), after a resync.
    fn forget(&self, user: Option<&str>) {
        let mut users = self.lock();
        match user {
            Some(u) => {
                if let Some(st) = users.get_mut(u) {
                    st.modseq.clear();
                }
            }
            None => users.values_mut().for_each(|st| st.modseq.clear()),
        }
    }
}

/// Outcome of checking an event against the subscribed users.
enum Check {
    NotSubscribed,
    InOrder,
    Gap,
}

/// Records the event's modseq; reports a gap if `modseq_before` is ahead of
/// the last `modseq_after` seen for the mailbox.
fn check_modseq(boxes: &mut HashMap<String, u64>, ev: &MailboxEvent) -> Check {
    match ev.kind {
        EventKind::MailboxDelete => {
            boxes.remove(&ev.mailbox);
            return Check::InOrder;
        }
        EventKind::MailboxRename => {
            if let Some(old) = &ev.old_mailbox {
                boxes.remove(old);
            }
        }
        _ => {}
    }
    if ev.modseq_after == 0 {
        return Check::InOrder;
    }
    match boxes.get_mut(&ev.mailbox) {
        Some(last) => {
            let gap = ev.modseq_before > *last;
            *last = (*last).max(ev.modseq_after);
            if gap {
                Check::Gap
            } else {
                Check::InOrder
            }
        }
        None => {
            boxes.insert(ev.mailbox.clone(), ev.modseq_after);
            Check::InOrder
        }
    }
}

/// Feeds decoded records into the application's queue.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    users: Arc<UserTable>,
    tx: mpsc::Sender<BusMessage>,
    counters: Arc<BusCounters>,
    bad_log: RateLimitedLog,
    overflowed: bool,
}

impl Dispatcher {
    pub(crate) fn new(users: Arc<UserTable>, tx: mpsc::Sender<BusMessage>, counters: Arc<BusCounters>) -> Self {
        Self { users, tx, counters, bad_log: RateLimitedLog::new(Duration::from_secs(10)), overflowed: false }
    }

    /// Counts and (rate-limited) logs a bad frame or record.
    pub(crate) fn bad_input(&self, source: &str, err: &WireError) {
        match err {
            WireError::UnknownVersion(_) | WireError::Event(EventDecodeError::UnknownVersion(_)) => {
                self.counters.add_dropped_unknown_version(1)
            }
            _ => self.counters.add_dropped_malformed(1),
        }
        if let Some(suppressed) = self.bad_log.allow() {
            tracing::warn!(source, error = %err, suppressed, "bus: dropped undecodable input");
        }
    }

    /// Handles one decoded record.
    pub(crate) fn record(&mut self, source: &str, record: Result<Record, WireError>) {
        match record {
            Err(e) => self.bad_input(source, &e),
            Ok(Record::Event(ev)) => {
                let check = {
                    let all = self.users.is_all();
                    let mut users = self.users.lock();
                    match users.get_mut(&ev.user) {
                        Some(st) => check_modseq(&mut st.modseq, &ev),
                        None if all => check_modseq(&mut users.entry(ev.user.clone()).or_default().modseq, &ev),
                        None => Check::NotSubscribed,
                    }
                };
                match check {
                    Check::NotSubscribed => self.counters.add_filtered(1),
                    Check::InOrder => self.push_event(ev),
                    Check::Gap => {
                        self.counters.add_gaps(1);
                        let (user, mailbox) = (ev.user.clone(), ev.mailbox.clone());
                        self.push(BusMessage::Resync {
                            user: Some(user),
                            mailbox: Some(mailbox),
                            reason: ResyncReason::ModseqGap,
                        });
                        self.push_event(ev);
                    }
                }
            }
            Ok(Record::Reference { user, mailbox }) => {
                if self.users.contains(&user) {
                    self.push(BusMessage::Resync {
                        user: Some(user),
                        mailbox: Some(mailbox),
                        reason: ResyncReason::Oversized,
                    });
                } else {
                    self.counters.add_filtered(1);
                }
            }
        }
    }

    /// Asks the application to resync every subscribed user.
    pub(crate) fn resync_all(&mut self, reason: ResyncReason) {
        self.users.forget(None);
        self.push(BusMessage::Resync { user: None, mailbox: None, reason });
    }

    fn push_event(&mut self, ev: MailboxEvent) {
        self.counters.add_events_in(1);
        self.push(BusMessage::Event(ev));
    }

    fn push(&mut self, msg: BusMessage) {
        if let BusMessage::Resync { user, .. } = &msg {
            self.counters.add_resyncs(1);
            if let Some(u) = user {
                self.users.forget(Some(u));
            }
        }
        if self.overflowed {
            self.counters.add_dropped_queue_full(1);
            return;
        }
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.add_dropped_queue_full(1);
                self.overflowed = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Called after each receive batch: if messages were dropped because the
    /// queue was full, waits for room and queues one resync of everyone.
    /// Returns false once the application dropped its end of the queue.
    pub(crate) async fn end_batch(&mut self) -> bool {
        if self.overflowed {
            self.overflowed = false;
            self.users.forget(None);
            self.counters.add_resyncs(1);
            let msg = BusMessage::Resync { user: None, mailbox: None, reason: ResyncReason::QueueOverflow };
            if self.tx.send(msg).await.is_err() {
                return false;
            }
        }
        !self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_hooks::{Flags, MailboxStatus, UidSet};

    fn ev(user: &str, before: u64, after: u64) -> MailboxEvent {
        MailboxEvent {
            kind: EventKind::MessageNew,
            user: user.into(),
            mailbox: "INBOX".into(),
            old_mailbox: None,
            uidvalidity: 1,
            uids: UidSet::from_range(1, 1),
            flags: Flags::default(),
            status: MailboxStatus::default(),
            modseq_before: before,
            modseq_after: after,
            summary: None,
            timestamp_ms: 0,
        }
    }

    #[tokio::test]
    async fn filters_users_and_detects_modseq_gaps() {
        let users = Arc::new(UserTable::default());
        let counters = Arc::new(BusCounters::default());
        let (tx, mut rx) = mpsc::channel(16);
        let mut d = Dispatcher::new(users.clone(), tx, counters.clone());
        assert!(users.subscribe("a"));
        assert!(!users.subscribe("a")); // a second session
        assert!(!users.unsubscribe("a")); // one session left
        assert!(!users.unsubscribe("nobody"));
        d.record("t", Ok(Record::Event(ev("b", 1, 2))));
        d.record("t", Ok(Record::Event(ev("a", 1, 2))));
        d.record("t", Ok(Record::Event(ev("a", 2, 3))));
        d.record("t", Ok(Record::Event(ev("a", 5, 6)))); // 3..5 missed
        assert!(d.end_batch().await);
        assert_eq!(rx.recv().await, Some(BusMessage::Event(ev("a", 1, 2))));
        assert_eq!(rx.recv().await, Some(BusMessage::Event(ev("a", 2, 3))));
        assert!(matches!(
            rx.recv().await,
            Some(BusMessage::Resync { reason: ResyncReason::ModseqGap, mailbox: Some(_), .. })
        ));
        assert_eq!(rx.recv().await, Some(BusMessage::Event(ev("a", 5, 6))));
        let s = counters.snapshot();
        assert_eq!((s.filtered, s.events_in, s.gaps, s.resyncs), (1, 3, 1, 1));
        assert!(users.unsubscribe("a"));
        d.record("t", Ok(Record::Event(ev("a", 6, 7))));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn subscribe_all_passes_every_user_and_checks_their_chains() {
        let users = Arc::new(UserTable::default());
        let counters = Arc::new(BusCounters::default());
        let (tx, mut rx) = mpsc::channel(16);
        let mut d = Dispatcher::new(users.clone(), tx, counters.clone());
        d.record("t", Ok(Record::Event(ev("a", 1, 2))));
        users.subscribe_all();
        assert!(users.contains("anyone"));
        d.record("t", Ok(Record::Event(ev("b", 1, 2))));
        d.record("t", Ok(Record::Event(ev("c", 4, 5))));
        d.record("t", Ok(Record::Event(ev("b", 3, 4)))); // 2..3 missed
        assert!(d.end_batch().await);
        assert_eq!(rx.recv().await, Some(BusMessage::Event(ev("b", 1, 2))));
        assert_eq!(rx.recv().await, Some(BusMessage::Event(ev("c", 4, 5))));
        assert!(matches!(rx.recv().await, Some(BusMessage::Resync { reason: ResyncReason::ModseqGap, .. })));
        assert_eq!(rx.recv().await, Some(BusMessage::Event(ev("b", 3, 4))));
        // Users seen through the wildcard have no sessions.
        assert_eq!(users.len(), 0);
        assert!(!users.unsubscribe("b"));
        assert_eq!(counters.snapshot().filtered, 1);
    }

    #[tokio::test]
    async fn overflow_turns_into_one_resync() {
        let users = Arc::new(UserTable::default());
        let counters = Arc::new(BusCounters::default());
        let (tx, mut rx) = mpsc::channel(2);
        let mut d = Dispatcher::new(users.clone(), tx, counters.clone());
        users.subscribe("a");
        for i in 0..5 {
            d.record("t", Ok(Record::Event(ev("a", i, i + 1))));
        }
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = rx.recv().await {
                got.push(m);
            }
            got
        });
        assert!(d.end_batch().await);
        drop(d);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[2], BusMessage::Resync { user: None, reason: ResyncReason::QueueOverflow, .. }));
        assert_eq!(counters.snapshot().dropped_queue_full, 3);
    }
}
