//! [`Hibernator`]: the slab of hibernated sessions and everything that
//! happens to them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use storage_hooks::{EventKind, MailboxEvent, UidSet};

use super::command::{self, Recognized};
use super::counters::{Counters, HandBackReason};
use super::mailbox_state::{already_in_view, difference, MailboxState};
use super::render::{self, StatusItem};
use super::session::{HibernatedSession, Tag, SessionMeta, CLOSE_PENDING, CONDSTORE, IDLE, NO_MAILBOX, QRESYNC, READ_ONLY};
use super::source::{ChangedFlags, StateSource};
use super::wheel::TimerWheel;
use super::SessionKey;
use crate::record::{HibernationRecord, SelectedView, MAX_PENDING_INPUT};

/// Tunables of the core.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Keepalive interval for idling clients (`imap_idle_notify_interval`).
    pub keepalive_interval: Duration,
    /// Granularity of the keepalive wheel.
    pub tick: Duration,
    /// Most unwritten output kept for one client before it is disconnected.
    pub max_output: usize,
    /// An IDLE lasting this long ends with `* BYE` (the worker's `idle_timeout`).
    pub idle_timeout: Duration,
    /// This long without a command ends a non-IDLE session (the worker's `autologout`).
    pub autologout: Duration,
    /// Whether a cached STATUS of a mailbox no session here has selected
    /// can be trusted.
    pub unselected_status: UnselectedStatus,
}

/// How far the STATUS cache of a mailbox no hibernated session has
/// selected is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnselectedStatus {
    /// Every change reaches the process as a bus event (our own writes,
    /// and outside writers caught by a watcher on every mailbox): the
    /// cache is current.
    #[default]
    Cached,
    /// Outside writers are only watched in the mailboxes sessions have
    /// selected ([`WatchChange`]): a change another program made in any
    /// other mailbox is found only by reading, so STATUS of such a mailbox
    /// reads the store each time (which also announces what it finds).
    ReadEachTime,
}

/// A mailbox gained its first or lost its last hibernated session here:
/// the driver watches its directories for outside writers only meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    /// The first session of this process selected `mailbox` of `user`.
    Selected {
        /// The user.
        user: String,
        /// The mailbox (decoded name).
        mailbox: String,
    },
    /// The last session of this process with `mailbox` selected is gone.
    Released {
        /// The user.
        user: String,
        /// The mailbox (decoded name).
        mailbox: String,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keepalive_interval: Duration::from_secs(120),
            tick: Duration::from_secs(1),
            max_output: 256 * 1024,
            idle_timeout: Duration::from_secs(30 * 60),
            autologout: Duration::from_secs(30 * 60),
            unselected_status: UnselectedStatus::default(),
        }
    }
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Action<H> {
    /// Start receiving bus events for this user.
    Subscribe(String),
    /// Stop receiving bus events for this user.
    Unsubscribe(String),
    /// Pass the session (descriptor and record) back to a worker.
    HandBack {
        /// The client's descriptor.
        handle: H,
        /// The session's state, with every unprocessed input byte.
        record: Box<HibernationRecord>,
        /// Why.
        reason: HandBackReason,
    },
    /// Close the client connection (all output was written).
    Close {
        /// The client's descriptor.
        handle: H,
    },
}

/// One line of `dormouse who`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// Master session id.
    pub session_id: u64,
    /// Login name.
    pub user: String,
    /// Client address.
    pub peer: SocketAddr,
    /// True if the client talks TLS (run here, or 1.2 proxied by the master).
    pub tls: bool,
    /// True while in IDLE.
    pub idle: bool,
    /// Selected mailbox.
    pub mailbox: Option<String>,
    /// Hibernated since (ms since the UNIX epoch).
    pub since_ms: u64,
}

#[derive(Debug)]
struct UserEntry {
    name: Box<str>,
    maildir: Box<Path>,
    sessions: u32,
    mailboxes: HashMap<Box<str>, u32>,
    /// The user's sessions with NOTIFY in effect.
    notify_sessions: Vec<SessionKey>,
}

/// The flag read of one event, reused for every session on the mailbox.
struct FlagRead {
    mailbox: u32,
    since: u64,
    at_modseq: u64,
    changes: Rc<Vec<ChangedFlags>>,
}

/// All hibernated sessions of one process.
pub struct Hibernator<S, H> {
    settings: Settings,
    source: S,
    sessions: Vec<Option<HibernatedSession<H>>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    users: Vec<Option<UserEntry>>,
    free_users: Vec<u32>,
    user_index: HashMap<Box<str>, u32>,
    mailboxes: Vec<Option<MailboxState>>,
    free_mailboxes: Vec<u32>,
    wheel: TimerWheel,
    actions: Vec<Action<H>>,
    watch_changes: Vec<WatchChange>,
    dirty: Vec<SessionKey>,
    flag_read: Option<FlagRead>,
    counters: Counters,
    /// Start of the core's seconds clock.
    epoch: Instant,
    /// Current time, as last told by the driver.
    clock: Instant,
}

impl<S: StateSource, H> Hibernator<S, H> {
    /// An empty hibernator.
    pub fn new(settings: Settings, source: S, now: Instant) -> Self {
        Hibernator {
            wheel: TimerWheel::new(settings.keepalive_interval, settings.tick, now),
            settings,
            source,
            sessions: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            users: Vec::new(),
            free_users: Vec::new(),
            user_index: HashMap::new(),
            mailboxes: Vec::new(),
            free_mailboxes: Vec::new(),
            actions: Vec::new(),
            watch_changes: Vec::new(),
            dirty: Vec::new(),
            flag_read: None,
            counters: Counters::default(),
            epoch: now,
            clock: now,
        }
    }

    /// Tells the core the current time (the driver calls this whenever it
    /// wakes up; commands and arrivals are timed with it).
    pub fn set_now(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    fn now_s(&self) -> u32 {
        u32::try_from(self.clock.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The driver measured that a change's notifications went out `ms`
    /// after the change (the core has no clock).
    pub fn record_notify_latency(&mut self, ms: u64) {
        self.counters.notified_after(ms);
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.counters.held as usize
    }

    /// True if no session is held.
    pub fn is_empty(&self) -> bool {
        self.counters.held == 0
    }

    /// Actions produced since the last call.
    pub fn take_actions(&mut self) -> Vec<Action<H>> {
        std::mem::take(&mut self.actions)
    }

    /// Mailboxes that gained their first or lost their last session since
    /// the last call (in order).
    pub fn take_watch_changes(&mut self) -> Vec<WatchChange> {
        std::mem::take(&mut self.watch_changes)
    }

    /// Sessions with output to write since the last call.
    pub fn take_dirty(&mut self) -> Vec<SessionKey> {
        std::mem::take(&mut self.dirty)
    }

    /// The session's pending output (empty if none or unknown key).
    pub fn take_output(&mut self, key: SessionKey) -> Vec<u8> {
        let Some(s) = self.get_mut(key) else { return Vec::new() };
        let out = s.buffers.as_mut().map(|b| std::mem::take(&mut b.output)).unwrap_or_default();
        s.shrink();
        out
    }

    /// The driver could not write `rest` (socket full): keep it, in front
    /// of any newer output. Returns false if the client must be dropped
    /// (too much unread output).
    pub fn output_blocked(&mut self, key: SessionKey, rest: &[u8]) -> bool {
        let max = self.settings.max_output;
        let Some(s) = self.get_mut(key) else { return false };
        let b = s.buffers();
        let mut joined = rest.to_vec();
        joined.extend_from_slice(&b.output);
        b.output = joined;
        b.output.len() <= max
    }

    /// All output of the session was written: complete a pending hand-back
    /// or close.
    pub fn output_flushed(&mut self, key: SessionKey) {
        let Some(s) = self.get_mut(key) else { return };
        if s.has_output() {
            return;
        }
        if s.bits & CLOSE_PENDING != 0 {
            self.log_session_end(key, "closed");
            if let Some((handle, unsubscribe)) = self.remove(key) {
                self.counters.ended += 1;
                self.actions.push(Action::Close { handle });
                self.push_unsubscribe(unsubscribe);
            }
            return;
        }
        if let Some(reason) = s.buffers.as_ref().and_then(|b| b.hand_back) {
            self.complete_hand_back(key, reason);
        }
    }

    /// True if the driver should read the session's socket (not while it
    /// is being handed back or closed: the rest stays in the kernel for the
    /// worker).
    pub fn wants_input(&self, key: SessionKey) -> bool {
        self.get(key).is_some_and(|s| !s.is_leaving())
    }

    /// Counts a session refused because the process is full.
    pub fn count_refused_full(&mut self) {
        self.counters.refused_full += 1;
    }

    /// The handle of a held session.
    pub fn handle(&self, key: SessionKey) -> Option<&H> {
        self.get(key).map(|s| &s.handle)
    }

    /// The handle of a held session, to change (the driver keeps a TLS
    /// session's state there).
    pub fn handle_mut(&mut self, key: SessionKey) -> Option<&mut H> {
        self.get_mut(key).map(|s| &mut s.handle)
    }

    /// True if the session has output waiting to be written.
    pub fn has_output(&self, key: SessionKey) -> bool {
        self.get(key).is_some_and(HibernatedSession::has_output)
    }

    /// When [`Hibernator::on_tick`] should next run.
    pub fn next_tick(&self) -> Instant {
        self.wheel.next_deadline()
    }

    /// Lists the sessions (for `dormouse who`).
    pub fn session_infos(&self) -> Vec<SessionInfo> {
        self.sessions.iter().flatten().map(|s| self.info(s)).collect()
    }

    /// The `logout` line the workers write for sessions that end there
    /// (Dovecot's "Logged out"), for one that ends while hibernated. No
    /// duration: the core has no clock.
    fn log_session_end(&self, key: SessionKey, end: &'static str) {
        if let Some(s) = self.get(key) {
            let info = self.info(s);
            tracing::info!(session = info.session_id, user = %info.user, peer = %info.peer.ip(), tls = info.tls, end, hibernated = true, "logout");
        }
    }

    fn info(&self, s: &HibernatedSession<H>) -> SessionInfo {
        SessionInfo {
            session_id: s.meta.session_id,
            user: self.user(s.user).map(|u| u.name.to_string()).unwrap_or_default(),
            peer: s.meta.peer.get(),
            tls: matches!(
                s.meta.transport,
                crate::record::ClientTransport::TlsProxied { .. } | crate::record::ClientTransport::Tls { .. }
            ),
            idle: s.is_idle(),
            mailbox: self.mailbox(s.mailbox).map(|m| m.name.to_string()),
            since_ms: s.meta.hibernated_at_ms,
        }
    }

    /// Takes a session from a worker. Its pending input is processed at
    /// once; an idling session is told about changes since the worker's
    /// last sync.
    pub fn admit(&mut self, record: HibernationRecord, handle: H, now_ms: u64) -> SessionKey {
        self.counters.hibernations += 1;
        self.counters.held += 1;
        let user = self.user_for(&record.user, &record.maildir);
        let mut bits = 0;
        if record.enabled.condstore {
            bits |= CONDSTORE;
        }
        if record.enabled.qresync {
            bits |= QRESYNC;
        }
        if record.idle_tag.is_some() {
            bits |= IDLE;
        }
        let meta = Box::new(SessionMeta {
            session_id: record.session_id,
            peer: record.peer.into(),
            local: record.local.into(),
            transport: record.transport,
            authenticated_at_ms: record.authenticated_at_ms,
            hibernated_at_ms: now_ms,
        });
        let mut session = HibernatedSession {
            handle,
            user,
            mailbox: NO_MAILBOX,
            bits,
            seen: 0,
            view: None,
            idle_tag: record.idle_tag.map(Tag::from),
            since_s: self.now_s(),
            meta,
            buffers: None,
        };
        if !record.pending_input.is_empty() {
            session.buffers().input = record.pending_input;
        }
        if record.notify.is_some() {
            session.buffers().notify = record.notify;
        }
        let notifying = session.notify().is_some();
        let key = self.insert(session);
        self.wheel.insert(key);
        if notifying {
            if let Some(u) = self.users.get_mut(user as usize).and_then(Option::as_mut) {
                u.notify_sessions.push(key);
            }
        }
        if let Some(sel) = record.selected {
            if let Err(reason) = self.attach_mailbox(key, sel) {
                self.hand_back(key, reason);
                return key;
            }
        }
        if self.get(key).is_some_and(HibernatedSession::is_idle) {
            if let Err(reason) = self.catch_up(key, true) {
                self.hand_back(key, reason);
                return key;
            }
        }
        self.process_input(key);
        key
    }

    /// Bytes from the client.
    pub fn on_input(&mut self, key: SessionKey, bytes: &[u8]) {
        let Some(s) = self.get_mut(key) else { return };
        if s.bits & CLOSE_PENDING != 0 {
            return;
        }
        s.buffers().input.extend_from_slice(bytes);
        self.process_input(key);
    }

    /// The client closed the connection or a write failed: drop the
    /// session; the returned handle is closed by the caller.
    pub fn client_gone(&mut self, key: SessionKey) -> Option<H> {
        self.log_session_end(key, "client_gone");
        let (handle, unsubscribe) = self.remove(key)?;
        self.counters.ended += 1;
        self.push_unsubscribe(unsubscribe);
        Some(handle)
    }

    /// Drops the sessions `select` picks (`dormouse kick`), except those
    /// already being handed back or closed; returns their handles, which
    /// the caller tells BYE and closes.
    pub fn take_matching(&mut self, mut select: impl FnMut(&SessionInfo) -> bool) -> Vec<H> {
        let keys: Vec<SessionKey> = (0..self.sessions.len())
            .filter(|&i| self.sessions[i].as_ref().is_some_and(|s| !s.is_leaving() && select(&self.info(s))))
            .map(|i| SessionKey { index: i as u32, generation: self.generations[i] })
            .collect();
        let mut handles = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some((handle, unsubscribe)) = self.remove(key) {
                self.counters.ended += 1;
                self.push_unsubscribe(unsubscribe);
                handles.push(handle);
            }
        }
        handles
    }

    /// Drops every session (process shutdown); returns their handles.
    pub fn drain_all(&mut self) -> Vec<H> {
        let keys: Vec<SessionKey> = (0..self.sessions.len())
            .filter(|&i| self.sessions[i].is_some())
            .map(|i| SessionKey { index: i as u32, generation: self.generations[i] })
            .collect();
        let handles = keys.into_iter().filter_map(|k| self.remove(k)).map(|(h, _)| h).collect();
        self.actions.clear();
        handles
    }

    /// Turns the keepalive wheel.
    pub fn on_tick(&mut self, now: Instant) {
        self.set_now(now);
        let now_s = self.now_s();
        let mut due = Vec::new();
        let sessions = &self.sessions;
        let generations = &self.generations;
        self.wheel.advance(now, |k| {
            let alive = sessions.get(k.index as usize).is_some_and(Option::is_some)
                && generations.get(k.index as usize) == Some(&k.generation);
            if alive {
                due.push(k);
            }
            alive
        });
        let (idle_limit, auto_limit) = (self.settings.idle_timeout.as_secs(), self.settings.autologout.as_secs());
        for key in due {
            let Some(s) = self.get_mut(key) else { continue };
            if s.is_leaving() {
                continue;
            }
            let quiet = u64::from(now_s.saturating_sub(s.since_s));
            if quiet >= if s.is_idle() { idle_limit } else { auto_limit } {
                // As the worker's session does at its deadline.
                let b = s.buffers();
                b.output.extend_from_slice(b"* BYE Disconnected for inactivity.\r\n");
                b.input.clear();
                s.bits |= CLOSE_PENDING;
                self.counters.timeouts += 1;
                self.dirty.push(key);
                continue;
            }
            if s.is_idle() {
                s.buffers().output.extend_from_slice(render::KEEPALIVE);
                self.counters.keepalives += 1;
                self.dirty.push(key);
            }
        }
    }

    /// A change event from the bus.
    pub fn on_event(&mut self, ev: &MailboxEvent) {
        self.counters.events_in += 1;
        let Some(&user) = self.user_index.get(ev.user.as_str()) else { return };
        self.notify_event(user, ev);
        match ev.kind {
            EventKind::MailboxDelete => self.mailbox_gone(user, &ev.mailbox),
            EventKind::MailboxRename => {
                if let Some(old) = &ev.old_mailbox {
                    self.mailbox_gone(user, old);
                }
                self.mailbox_gone(user, &ev.mailbox);
            }
            EventKind::MailboxCreate | EventKind::MailboxSubscribe | EventKind::MailboxUnsubscribe => {}
            EventKind::MessageNew
            | EventKind::MessageAppend
            | EventKind::MessageExpunge
            | EventKind::FlagsSet
            | EventKind::FlagsClear => self.message_event(user, ev),
        }
    }

    /// The bus says events may have been lost: resync the named mailboxes
    /// (all of a user's, or of every user) from storage.
    pub fn on_resync(&mut self, user: Option<&str>, mailbox: Option<&str>) {
        let targets: Vec<u32> = (0..self.mailboxes.len() as u32)
            .filter(|&i| {
                self.mailbox(i).is_some_and(|m| {
                    user.is_none_or(|u| self.user(m.user).is_some_and(|e| &*e.name == u))
                        && mailbox.is_none_or(|n| &*m.name == n)
                })
            })
            .collect();
        for mb in targets {
            self.resync(mb);
        }
    }

    /// The bus subscription for `user` is in effect: changes made between
    /// our storage reads and this moment were not seen as events, so check
    /// each cached mailbox's status record (cheap) and resync those that
    /// moved.
    pub fn on_subscribed(&mut self, user: &str) {
        let Some(&u) = self.user_index.get(user) else { return };
        let Some(entry) = self.user(u) else { return };
        let (name, maildir) = (entry.name.to_string(), entry.maildir.to_path_buf());
        let mbs: Vec<u32> = entry.mailboxes.values().copied().collect();
        for mb in mbs {
            let Some(state) = self.mailbox(mb) else { continue };
            let known = state.status;
            let fresh = self.source.status(&name, &maildir, state.name.as_ref());
            let moved = match (&fresh, known) {
                (Ok(f), Some(k)) => f.highestmodseq != k.highestmodseq || f.uidvalidity != k.uidvalidity,
                _ => true,
            };
            if moved {
                self.resync(mb);
            }
        }
    }

    // ---- internals ----

    fn get(&self, key: SessionKey) -> Option<&HibernatedSession<H>> {
        let i = key.index as usize;
        if self.generations.get(i) != Some(&key.generation) {
            return None;
        }
        self.sessions.get(i)?.as_ref()
    }

    fn get_mut(&mut self, key: SessionKey) -> Option<&mut HibernatedSession<H>> {
        let i = key.index as usize;
        if self.generations.get(i) != Some(&key.generation) {
            return None;
        }
        self.sessions.get_mut(i)?.as_mut()
    }

    fn user(&self, i: u32) -> Option<&UserEntry> {
        self.users.get(i as usize)?.as_ref()
    }

    fn mailbox(&self, i: u32) -> Option<&MailboxState> {
        self.mailboxes.get(i as usize)?.as_ref()
    }

    fn mailbox_mut(&mut self, i: u32) -> Option<&mut MailboxState> {
        self.mailboxes.get_mut(i as usize)?.as_mut()
    }

    fn insert(&mut self, session: HibernatedSession<H>) -> SessionKey {
        if let Some(i) = self.free.pop() {
            self.sessions[i as usize] = Some(session);
            SessionKey { index: i, generation: self.generations[i as usize] }
        } else {
            self.sessions.push(Some(session));
            self.generations.push(0);
            SessionKey { index: (self.sessions.len() - 1) as u32, generation: 0 }
        }
    }

    fn user_for(&mut self, name: &str, maildir: &Path) -> u32 {
        if let Some(&i) = self.user_index.get(name) {
            if let Some(u) = self.users[i as usize].as_mut() {
                u.sessions += 1;
            }
            return i;
        }
        let entry = UserEntry {
            name: name.into(),
            maildir: maildir.into(),
            sessions: 1,
            mailboxes: HashMap::new(),
            notify_sessions: Vec::new(),
        };
        let i = match self.free_users.pop() {
            Some(i) => {
                self.users[i as usize] = Some(entry);
                i
            }
            None => {
                self.users.push(Some(entry));
                (self.users.len() - 1) as u32
            }
        };
        self.user_index.insert(name.into(), i);
        self.actions.push(Action::Subscribe(name.to_string()));
        i
    }

    fn mailbox_for(&mut self, user: u32, name: &str) -> u32 {
        if let Some(&i) = self.user(user).and_then(|u| u.mailboxes.get(name)) {
            return i;
        }
        let state = MailboxState::new(user, name);
        let i = match self.free_mailboxes.pop() {
            Some(i) => {
                self.mailboxes[i as usize] = Some(state);
                i
            }
            None => {
                self.mailboxes.push(Some(state));
                (self.mailboxes.len() - 1) as u32
            }
        };
        if let Some(u) = self.users[user as usize].as_mut() {
            u.mailboxes.insert(name.into(), i);
        }
        i
    }

    fn drop_mailbox(&mut self, mb: u32) {
        let Some(state) = self.mailboxes.get_mut(mb as usize).and_then(Option::take) else { return };
        if let Some(u) = self.users.get_mut(state.user as usize).and_then(Option::as_mut) {
            u.mailboxes.remove(&state.name);
        }
        self.free_mailboxes.push(mb);
        if self.flag_read.as_ref().is_some_and(|f| f.mailbox == mb) {
            self.flag_read = None;
        }
    }

    /// Joins the session to its mailbox's shared state.
    fn attach_mailbox(&mut self, key: SessionKey, sel: SelectedView) -> Result<(), HandBackReason> {
        let user = self.get(key).map(|s| s.user).ok_or(HandBackReason::StorageError)?;
        let mb = self.mailbox_for(user, &sel.mailbox);
        let (uname, maildir) = {
            let u = self.user(user).ok_or(HandBackReason::StorageError)?;
            (u.name.to_string(), u.maildir.to_path_buf())
        };
        let needs_load = self.mailbox(mb).is_some_and(|m| m.current.is_none());
        if needs_load {
            let status = match self.source.status(&uname, &maildir, &sel.mailbox) {
                Ok(st) => st,
                Err(e) => {
                    tracing::debug!(error = %e, "status read failed on hibernation");
                    return Err(HandBackReason::StorageError);
                }
            };
            let (uids, status) = if status.uidvalidity == sel.uidvalidity && status.highestmodseq == sel.highest_modseq_seen {
                // Nothing changed since the worker's last sync: the view is current.
                (sel.uids.clone(), status)
            } else {
                match self.source.snapshot(&uname, &maildir, &sel.mailbox) {
                    Ok(snap) => (snap.uids, snap.status),
                    Err(_) => return Err(HandBackReason::StorageError),
                }
            };
            let state = self.mailbox_mut(mb).ok_or(HandBackReason::StorageError)?;
            state.status = Some(status);
            state.modseq = status.highestmodseq;
            state.flag_floor = status.highestmodseq;
            state.set_current(uids);
        }
        let state = self.mailbox_mut(mb).ok_or(HandBackReason::StorageError)?;
        let valid = state.status.is_some_and(|st| st.uidvalidity == sel.uidvalidity);
        let view = state.share(sel.uids);
        let first = state.sessions.is_empty();
        state.sessions.push(key);
        if first {
            let mailbox = state.name.to_string();
            self.watch_changes.push(WatchChange::Selected { user: uname, mailbox });
        }
        let s = self.get_mut(key).ok_or(HandBackReason::StorageError)?;
        s.mailbox = mb;
        s.seen = sel.highest_modseq_seen;
        s.view = Some(view);
        if sel.read_only {
            s.bits |= READ_ONLY;
        }
        if valid {
            Ok(())
        } else {
            Err(HandBackReason::UidValidity)
        }
    }

    /// Processes complete lines of input until one needs a worker.
    fn process_input(&mut self, key: SessionKey) {
        loop {
            let Some(s) = self.get_mut(key) else { return };
            if s.is_leaving() {
                return;
            }
            let Some(b) = s.buffers.as_mut() else { return };
            let Some(len) = command::line_len(&b.input) else {
                let too_long = b.input.len() > command::MAX_LINE;
                s.shrink();
                if too_long {
                    self.hand_back(key, HandBackReason::LongLine);
                }
                return;
            };
            if len > command::MAX_LINE {
                self.hand_back(key, HandBackReason::LongLine);
                return;
            }
            let line: Vec<u8> = b.input[..len].to_vec();
            let idling = s.is_idle();
            let recognized = command::recognize(&line, idling);
            let consumed = self.answer(key, recognized, idling);
            if !consumed {
                return;
            }
            if let Some(b) = self.get_mut(key).and_then(|s| s.buffers.as_mut()) {
                b.input.drain(..len.min(b.input.len()));
            }
        }
    }

    /// Answers one recognized line. Returns false if the line was not
    /// consumed (the session is being handed back or closed).
    fn answer(&mut self, key: SessionKey, recognized: Recognized, idling: bool) -> bool {
        let has_mailbox = self.get(key).is_some_and(|s| s.mailbox != NO_MAILBOX);
        match recognized {
            Recognized::Blank => return true,
            Recognized::Done => {
                if let Err(reason) = self.catch_up(key, false) {
                    self.hand_back(key, reason);
                    return false;
                }
                let Some(s) = self.get_mut(key) else { return false };
                let tag = s.idle_tag.take().map(|t| t.as_str().to_string()).unwrap_or_default();
                s.bits &= !IDLE;
                render::tagged_ok(&mut s.buffers().output, &tag, "Idle completed.");
            }
            Recognized::Noop(tag) => {
                if let Err(reason) = self.catch_up(key, false) {
                    self.hand_back(key, reason);
                    return false;
                }
                let Some(s) = self.get_mut(key) else { return false };
                render::tagged_ok(&mut s.buffers().output, &tag, "NOOP completed.");
            }
            Recognized::Check(tag) => {
                if !has_mailbox {
                    self.hand_back(key, HandBackReason::Command);
                    return false;
                }
                if let Err(reason) = self.catch_up(key, false) {
                    self.hand_back(key, reason);
                    return false;
                }
                let Some(s) = self.get_mut(key) else { return false };
                render::tagged_ok(&mut s.buffers().output, &tag, "CHECK completed.");
            }
            Recognized::Idle(tag) => {
                if let Err(reason) = self.catch_up(key, false) {
                    self.hand_back(key, reason);
                    return false;
                }
                let Some(s) = self.get_mut(key) else { return false };
                s.buffers().output.extend_from_slice(b"+ idling\r\n");
                s.bits |= IDLE;
                s.idle_tag = Some(Tag::from(tag));
            }
            Recognized::Logout(tag) => {
                let Some(s) = self.get_mut(key) else { return false };
                let b = s.buffers();
                b.output.extend_from_slice(b"* BYE Logging out.\r\n");
                render::tagged_ok(&mut b.output, &tag, "Logout completed.");
                b.input.clear();
                s.bits |= CLOSE_PENDING;
                self.counters.answered += 1;
                self.dirty.push(key);
                return false;
            }
            Recognized::Status { tag, mailbox, items } => {
                if !self.answer_status(key, &tag, &mailbox, &items) {
                    self.hand_back(key, HandBackReason::Command);
                    return false;
                }
            }
            Recognized::Other => {
                let reason = if idling { HandBackReason::IdleInput } else { HandBackReason::Command };
                self.hand_back(key, reason);
                return false;
            }
        }
        self.counters.answered += 1;
        let now_s = self.now_s();
        if let Some(s) = self.get_mut(key) {
            s.since_s = now_s;
        }
        self.dirty.push(key);
        true
    }

    /// STATUS from the cached status, or from the storage status record
    /// (then cached). False if storage cannot answer (the worker will).
    fn answer_status(&mut self, key: SessionKey, tag: &str, mailbox: &str, items: &[StatusItem]) -> bool {
        let Some(user) = self.get(key).map(|s| s.user) else { return false };
        let trust_unselected = self.settings.unselected_status == UnselectedStatus::Cached;
        let cached = self
            .user(user)
            .and_then(|u| u.mailboxes.get(mailbox))
            .and_then(|&mb| self.mailbox(mb))
            .filter(|m| trust_unselected || !m.sessions.is_empty())
            .and_then(|m| m.status);
        let status = match cached {
            Some(st) => {
                self.counters.status_from_cache += 1;
                st
            }
            None => {
                let Some(u) = self.user(user) else { return false };
                let (name, maildir) = (u.name.to_string(), u.maildir.to_path_buf());
                match self.source.status(&name, &maildir, mailbox) {
                    Ok(st) => {
                        let mb = self.mailbox_for(user, mailbox);
                        if let Some(m) = self.mailbox_mut(mb) {
                            m.status = Some(st);
                            if m.current.is_none() {
                                m.modseq = st.highestmodseq;
                            }
                        }
                        st
                    }
                    Err(_) => return false,
                }
            }
        };
        let encoded = storage_hooks::mutf7::encode(mailbox);
        let Some(s) = self.get_mut(key) else { return false };
        if items.contains(&StatusItem::HighestModSeq) {
            s.bits |= CONDSTORE;
        }
        let out = &mut s.buffers().output;
        render::status(out, &encoded, &status, items);
        render::tagged_ok(out, tag, "Status completed.");
        true
    }

    /// Brings the session's view up to the mailbox's current state, writing
    /// EXPUNGE/VANISHED, FETCH FLAGS and EXISTS like the worker's sync.
    fn catch_up(&mut self, key: SessionKey, notify: bool) -> Result<(), HandBackReason> {
        let Some(s) = self.get(key) else { return Ok(()) };
        let mb = s.mailbox;
        let Some(state) = self.mailbox(mb) else { return Ok(()) };
        let Some(current) = state.current.clone() else { return Ok(()) };
        let Some(old) = s.view.clone() else { return Ok(()) };
        let seen = s.seen;
        let target_modseq = state.modseq;
        let need_flags = seen < state.last_flag_modseq || seen < state.flag_floor;
        if Arc::ptr_eq(&old, &current) && !need_flags {
            if let Some(s) = self.get_mut(key) {
                s.seen = s.seen.max(target_modseq);
            }
            return Ok(());
        }
        let flag_changes = if need_flags { Some(self.read_flags(mb, seen)?) } else { None };
        let Some(s) = self.get_mut(key) else { return Ok(()) };
        let ext = s.ext();
        let mut out = Vec::new();
        let unchanged_view = Arc::ptr_eq(&old, &current);
        let gone = if unchanged_view { UidSet::new() } else { difference(&old, &current) };
        render::expunges(&mut out, &old, &gone, ext);
        if let Some(changes) = flag_changes {
            for c in changes.iter().filter(|c| c.modseq > seen && old.contains(c.uid)) {
                if let Some(rank) = current.rank(c.uid) {
                    render::flags_fetch(&mut out, rank + 1, c.uid, &c.flags, c.modseq, ext);
                }
            }
        }
        if !unchanged_view && current.len() != old.len() - gone.len() {
            render::exists(&mut out, current.len());
        }
        s.view = Some(current);
        s.seen = seen.max(target_modseq);
        if !out.is_empty() {
            s.buffers().output.extend_from_slice(&out);
            if notify {
                self.counters.notifications += 1;
            }
            self.dirty.push(key);
        }
        Ok(())
    }

    /// Flag changes after `since` in mailbox `mb`, read from storage once
    /// per change and shared by every session that needs them.
    fn read_flags(&mut self, mb: u32, since: u64) -> Result<Rc<Vec<ChangedFlags>>, HandBackReason> {
        let state = self.mailbox(mb).ok_or(HandBackReason::StorageError)?;
        if let Some(f) = &self.flag_read {
            if f.mailbox == mb && f.since <= since && f.at_modseq == state.modseq {
                return Ok(f.changes.clone());
            }
        }
        let user = self.user(state.user).ok_or(HandBackReason::StorageError)?;
        let changes = self
            .source
            .changed_flags(&user.name, &user.maildir, &state.name, since)
            .map_err(|_| HandBackReason::StorageError)?;
        let changes = Rc::new(changes);
        self.flag_read = Some(FlagRead { mailbox: mb, since, at_modseq: state.modseq, changes: changes.clone() });
        Ok(changes)
    }

    fn message_event(&mut self, user: u32, ev: &MailboxEvent) {
        let Some(&mb) = self.user(user).and_then(|u| u.mailboxes.get(ev.mailbox.as_str())) else { return };
        let Some(state) = self.mailbox_mut(mb) else { return };
        if state.current.is_none() {
            // Status-only cache: follow the chain, or forget the status.
            if ev.modseq_before == state.modseq && state.status.is_some_and(|s| s.uidvalidity == ev.uidvalidity) {
                state.status = Some(ev.status);
                state.modseq = ev.modseq_after;
            } else if ev.modseq_after > state.modseq {
                state.status = None;
                state.modseq = 0;
            }
            return;
        }
        let same_validity = state.status.is_some_and(|s| s.uidvalidity == ev.uidvalidity);
        if same_validity && ev.modseq_after <= state.modseq {
            // Events of one group commit share a MODSEQ, so a MODSEQ not
            // above ours does not prove the change is in the view: only
            // the UIDs (or a storage read at or after it) do.
            if !already_in_view(state, ev) {
                self.resync(mb);
            }
            return;
        }
        if !same_validity || ev.modseq_before != state.modseq {
            self.resync(mb);
            return;
        }
        state.status = Some(ev.status);
        state.modseq = ev.modseq_after;
        let mut next = state.current.as_deref().cloned().unwrap_or_default();
        match ev.kind {
            EventKind::MessageNew | EventKind::MessageAppend => {
                for r in ev.uids.ranges() {
                    let mut ranges = next.ranges().to_vec();
                    ranges.push(*r);
                    next = UidSet::from_ranges(ranges);
                }
                state.set_current(next);
            }
            EventKind::MessageExpunge => {
                state.set_current(difference(&next, &ev.uids));
            }
            _ => state.last_flag_modseq = ev.modseq_after,
        }
        self.notify_idle(mb);
    }

    /// Writes the NOTIFY responses `ev` produces for the user's sessions
    /// with NOTIFY in effect (other mailboxes' STATUS, MailboxName,
    /// SubscriptionChange), without waking them. Runs before the event's
    /// effect on the selected mailbox, so a rename or delete that hands a
    /// session back is reported first.
    fn notify_event(&mut self, user: u32, ev: &MailboxEvent) {
        let keys = match self.user(user) {
            Some(u) if !u.notify_sessions.is_empty() => u.notify_sessions.clone(),
            _ => return,
        };
        for key in keys {
            let selected = self.get(key).and_then(|s| self.mailbox(s.mailbox)).map(|m| m.name.to_string());
            let Some(s) = self.get_mut(key) else { continue };
            if s.is_leaving() {
                continue;
            }
            let condstore = s.bits & CONDSTORE != 0;
            let Some(mut spec) = s.buffers.as_mut().and_then(|b| b.notify.take()) else { continue };
            let mut out = Vec::new();
            let wrote = spec.on_event(ev, selected.as_deref(), condstore, &mut out);
            let b = s.buffers();
            b.notify = Some(spec);
            if wrote {
                b.output.extend_from_slice(&out);
                self.counters.notifications += 1;
                self.dirty.push(key);
            }
        }
    }

    fn notify_idle(&mut self, mb: u32) {
        let keys: Vec<SessionKey> = self.mailbox(mb).map(|m| m.sessions.clone()).unwrap_or_default();
        for key in keys {
            let idle = self.get(key).is_some_and(|s| s.is_idle() && !s.is_leaving());
            if idle {
                if let Err(reason) = self.catch_up(key, true) {
                    self.hand_back(key, reason);
                }
            }
        }
    }

    /// Re-reads a mailbox from storage after a gap.
    fn resync(&mut self, mb: u32) {
        self.counters.resyncs += 1;
        let Some(state) = self.mailbox(mb) else { return };
        let Some(user) = self.user(state.user) else { return };
        let (uname, maildir, name) = (user.name.to_string(), user.maildir.to_path_buf(), state.name.to_string());
        if state.current.is_none() {
            if let Some(m) = self.mailbox_mut(mb) {
                m.status = None;
                m.modseq = 0;
            }
            return;
        }
        let old_validity = state.status.map(|s| s.uidvalidity);
        let snap = self.source.snapshot(&uname, &maildir, &name);
        let reason = match &snap {
            Err(_) => Some(HandBackReason::StorageError),
            Ok(s) if Some(s.status.uidvalidity) != old_validity => Some(HandBackReason::UidValidity),
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            let keys = self.mailbox(mb).map(|m| m.sessions.clone()).unwrap_or_default();
            for key in keys {
                self.hand_back(key, reason);
            }
            self.drop_mailbox(mb);
            return;
        }
        let Ok(snap) = snap else { return };
        if self.flag_read.as_ref().is_some_and(|f| f.mailbox == mb) {
            self.flag_read = None;
        }
        if let Some(m) = self.mailbox_mut(mb) {
            m.status = Some(snap.status);
            m.modseq = snap.status.highestmodseq;
            m.flag_floor = snap.status.highestmodseq;
            m.set_current(snap.uids);
        }
        self.notify_idle(mb);
    }

    fn mailbox_gone(&mut self, user: u32, name: &str) {
        let Some(&mb) = self.user(user).and_then(|u| u.mailboxes.get(name)) else { return };
        let keys = self.mailbox(mb).map(|m| m.sessions.clone()).unwrap_or_default();
        for key in keys {
            self.hand_back(key, HandBackReason::MailboxChanged);
        }
        self.drop_mailbox(mb);
    }

    /// Hands the session back now, or once its output is written.
    fn hand_back(&mut self, key: SessionKey, reason: HandBackReason) {
        let Some(s) = self.get_mut(key) else { return };
        if s.has_output() {
            s.buffers().hand_back = Some(reason);
            self.dirty.push(key);
        } else {
            self.complete_hand_back(key, reason);
        }
    }

    fn complete_hand_back(&mut self, key: SessionKey, reason: HandBackReason) {
        let Some(s) = self.get(key) else { return };
        let user = self.user(s.user);
        let selected = self.mailbox(s.mailbox).zip(s.view.as_ref()).map(|(m, view)| SelectedView {
            mailbox: m.name.to_string(),
            read_only: s.bits & READ_ONLY != 0,
            uidvalidity: m.status.map_or(0, |st| st.uidvalidity),
            uids: (**view).clone(),
            highest_modseq_seen: s.seen,
        });
        let mut pending_input = s.buffers.as_ref().map(|b| b.input.clone()).unwrap_or_default();
        // The rest stays in the socket for the worker to read.
        pending_input.truncate(MAX_PENDING_INPUT);
        let record = Box::new(HibernationRecord {
            session_id: s.meta.session_id,
            user: user.map(|u| u.name.to_string()).unwrap_or_default(),
            maildir: user.map(|u| u.maildir.to_path_buf()).unwrap_or_default(),
            peer: s.meta.peer.get(),
            local: s.meta.local.get(),
            transport: s.meta.transport,
            authenticated_at_ms: s.meta.authenticated_at_ms,
            enabled: s.ext(),
            idle_tag: s.idle_tag.as_ref().map(|t| t.as_str().to_string()),
            selected,
            pending_input,
            // The TLS and compression states live in the driver's handle;
            // it adds them.
            tls: None,
            notify: s.notify().cloned(),
            deflate: None,
        });
        if let Some((handle, unsubscribe)) = self.remove(key) {
            self.counters.hand_back(reason);
            self.actions.push(Action::HandBack { handle, record, reason });
            self.push_unsubscribe(unsubscribe);
        }
    }

    fn push_unsubscribe(&mut self, user: Option<String>) {
        if let Some(user) = user {
            self.actions.push(Action::Unsubscribe(user));
        }
    }

    /// Takes the session out of every index; returns its handle and, if it
    /// was the user's last session, the user to unsubscribe.
    fn remove(&mut self, key: SessionKey) -> Option<(H, Option<String>)> {
        self.get(key)?;
        let i = key.index as usize;
        let s = self.sessions[i].take()?;
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.free.push(key.index);
        self.counters.held -= 1;
        let mut released = None;
        if let Some(m) = self.mailbox_mut(s.mailbox) {
            if let Some(pos) = m.sessions.iter().position(|k| *k == key) {
                m.sessions.swap_remove(pos);
                if m.sessions.is_empty() {
                    released = Some(m.name.to_string());
                }
            }
            if m.sessions.is_empty() {
                // Without selecting sessions, keep only the cheap status cache.
                m.current = None;
                m.previous = std::sync::Weak::new();
            }
        }
        if let (Some(mailbox), Some(u)) = (released, self.user(s.user)) {
            self.watch_changes.push(WatchChange::Released { user: u.name.to_string(), mailbox });
        }
        let mut last = false;
        let mut unsubscribe = None;
        if let Some(u) = self.users.get_mut(s.user as usize).and_then(Option::as_mut) {
            u.notify_sessions.retain(|k| *k != key);
            u.sessions -= 1;
            last = u.sessions == 0;
        }
        if last {
            if let Some(u) = self.users[s.user as usize].take() {
                for (_, mb) in u.mailboxes.iter() {
                    self.mailboxes[*mb as usize] = None;
                    self.free_mailboxes.push(*mb);
                }
                self.flag_read = None;
                self.user_index.remove(&u.name);
                self.free_users.push(s.user);
                unsubscribe = Some(u.name.into_string());
            }
        }
        drop(s.buffers);
        Some((s.handle, unsubscribe))
    }
}

impl<S, H> std::fmt::Debug for Hibernator<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hibernator").field("counters", &self.counters).finish_non_exhaustive()
    }
}

