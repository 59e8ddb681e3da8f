//! Notices mail changed behind our back (procmail, Postfix, mutt, another
//! server writing the Maildir) and publishes it as the same events our own
//! writes produce, through the user's store hooks.
//!
//! One [`MaildirWatcher`] per process, one inotify instance inside it, one
//! watch per directory shared by every session of a user
//! ([`MaildirWatcher::watch_user`] / [`MaildirWatcher::unwatch_user`] are
//! reference counted). Watched: the Maildir root (folders created, removed,
//! renamed) and `new/` and `cur/` of every mailbox; or, for a process that
//! only needs the mailboxes its sessions have selected (the hibernate
//! process: [`MaildirWatcher::watch_mailbox`]), `new/` and `cur/` of those
//! alone, since every inotify watch pins an inode and a dentry in the
//! kernel (about 1 KB each, the biggest share of a hibernated session). `tmp/` and our own
//! files (uidlist, keywords, index, status, locks) are never watched or
//! ignored by name. A watcher thread coalesces bursts (events arriving
//! within [`WatcherConfig::debounce`] of each other, at most
//! [`WatcherConfig::max_batch`] per batch) and then reconciles each touched
//! mailbox once ([`UserStore::reconcile_outside_changes`]): one event per
//! kind per batch, nothing for changes the store already knew (our own).
//!
//! When `fs.inotify.max_user_watches` runs out (or the configured
//! [`WatcherConfig::max_watches`] budget), this is logged once with the
//! number of watches needed and the users that did not get their watches
//! are stat-polled every [`WatcherConfig::poll_interval`]. An inotify queue
//! overflow triggers a rescan of every watched user, so no change is lost.
//!
//! The system calls sit behind two small traits ([`WatchRegistry`],
//! [`EventReader`]): Linux uses inotify (`inotify_source.rs`); macOS, iOS
//! and the BSDs use kqueue (`kqueue_source.rs`), which reports only "this
//! directory changed" ([`RawKind::DirChanged`]) and has no overflow. On any
//! other system every user is stat-polled.

mod folder_set;
#[cfg(target_os = "linux")]
mod inotify_source;
#[cfg(kqueue)]
mod kqueue_source;
mod own_files;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use folder_set::{emit_folder_events, FolderSet};

use crate::UserStore;

/// Our own mailbox-list lock at the root: folder changes while it exists are ours.
const LIST_LOCK_FILE: &str = "dormouse-mailboxes.lock";
/// Prefix of our own temporary folder names (create, delete).
const OWN_FOLDER_PREFIX: &str = "..dormouse-";
/// How long after seeing our own marker folder changes are attributed to us.
const OWN_MARKER_WINDOW: Duration = Duration::from_secs(2);
/// A file created in `new/`/`cur/` without `close()` yet is waited for this long.
const WRITE_GRACE: Duration = Duration::from_secs(2);
/// Longest sleep of the watcher thread between checks.
const TICK: Duration = Duration::from_millis(100);

/// Watcher settings.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Quiet time that ends a batch of file-system events.
    pub debounce: Duration,
    /// Longest time events are collected into one batch.
    pub max_batch: Duration,
    /// Stat-poll interval for users without inotify watches.
    pub poll_interval: Duration,
    /// Most watches this process adds (`None`: until the kernel refuses).
    pub max_watches: Option<usize>,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            debounce: Duration::from_millis(15),
            max_batch: Duration::from_millis(100),
            poll_interval: Duration::from_secs(5),
            max_watches: None,
        }
    }
}

/// Counters of a running watcher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatcherStats {
    /// Users with at least one session.
    pub users: usize,
    /// Directory watches in place.
    pub watches: usize,
    /// Users stat-polled instead of watched.
    pub polled_users: usize,
    /// Batches of file-system events processed.
    pub batches: u64,
    /// Events published.
    pub events: u64,
    /// Queue overflows seen.
    pub overflows: u64,
    /// Mailbox reconciles run (each a locked load).
    pub reconciles: u64,
}

/// Identity of one watch (the kernel's watch descriptor number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct WatchId(pub(crate) i32);

/// Which directory of a Maildir a watch is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirKind {
    /// The Maildir root (folder directories, our list lock).
    Root,
    /// A mailbox's `new/`.
    New,
    /// A mailbox's `cur/`.
    Cur,
}

/// What happened to a name in a watched directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    /// Created (file or directory). (inotify only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Created,
    /// Removed. (inotify only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Deleted,
    /// Renamed away. (inotify only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    MovedFrom,
    /// Renamed here. (inotify only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    MovedTo,
    /// A file opened for writing was closed. (inotify only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Written,
    /// Anything else (watch removed, ...).
    Other,
    /// Something in the directory changed, name unknown (kqueue).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    DirChanged,
}

/// A system-independent file-system event.
#[derive(Debug)]
pub(crate) enum RawEvent {
    /// Events were lost: rescan everything. (inotify only)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Overflow,
    /// Something changed in a watched directory.
    Changed {
        /// The watch.
        watch: WatchId,
        /// What happened.
        kind: RawKind,
        /// The name is a directory.
        is_dir: bool,
        /// Pairs the two halves of a rename.
        #[allow(dead_code)]
        cookie: u32,
        /// The name in the directory.
        name: Option<OsString>,
    },
}

/// Adds and removes directory watches (the system-call side).
pub(crate) trait WatchRegistry: Send {
    /// Watches `path`.
    fn add(&mut self, path: &Path, kind: DirKind) -> io::Result<WatchId>;
    /// Drops a watch.
    fn remove(&mut self, id: WatchId);
}

/// Reads file-system events (the system-call side).
pub(crate) trait EventReader: Send {
    /// Waits up to `timeout` for events and appends all that are ready.
    fn wait(&mut self, timeout: Duration, out: &mut Vec<RawEvent>) -> io::Result<()>;
}

/// A watched directory: whose, which mailbox, which part.
#[derive(Debug, Clone)]
struct Target {
    user: String,
    mailbox: String,
    kind: DirKind,
}

/// Modification times of a mailbox's `cur/` and `new/` (for polling).
type DirStamp = Option<((i64, i64), (i64, i64))>;

fn dir_mtime(path: &Path) -> Option<(i64, i64)> {
    std::fs::metadata(path).ok().map(|m| (m.mtime(), m.mtime_nsec()))
}

fn dir_stamp(path: &Path) -> DirStamp {
    Some((dir_mtime(&path.join("cur"))?, dir_mtime(&path.join("new"))?))
}

/// One watched user.
struct UserEntry {
    store: UserStore,
    sessions: usize,
    folders: FolderSet,
    /// Watches per mailbox (`""` = the root watch).
    watches: HashMap<String, Vec<WatchId>>,
    /// Mailboxes whose directories could not be watched yet (being built).
    missing: BTreeSet<String>,
    /// Stat-polled instead of watched.
    polled: bool,
    poll_root: Option<(i64, i64)>,
    poll_stamps: HashMap<String, DirStamp>,
    /// Folder changes until then are our own (list lock or temp folder seen).
    ours_until: Option<Instant>,
    /// `None`: every mailbox and the root are watched ([`MaildirWatcher::watch_user`]).
    /// `Some`: only these mailboxes, with their session counts
    /// ([`MaildirWatcher::watch_mailbox`]); no root watch, no folder list.
    selected: Option<HashMap<String, usize>>,
}

impl UserEntry {
    fn mailboxes(&self) -> Vec<String> {
        if let Some(selected) = &self.selected {
            return selected.keys().cloned().collect();
        }
        std::iter::once("INBOX".to_string()).chain(self.folders.folders.keys().cloned()).collect()
    }

    fn take_poll_stamps(&mut self) {
        self.poll_root = dir_mtime(self.store.root());
        self.poll_stamps =
            self.mailboxes().into_iter().map(|m| (m.clone(), self.store.mailbox_path(&m).ok().and_then(|p| dir_stamp(&p)))).collect();
    }
}

/// Why a watch could not be added.
enum AddFailure {
    /// Watch limit reached.
    Exhausted,
    /// The directory does not exist (yet).
    Missing,
    /// Anything else.
    Other(io::Error),
}

struct State {
    users: HashMap<String, UserEntry>,
    targets: HashMap<WatchId, Vec<Target>>,
    registry: Option<Box<dyn WatchRegistry>>,
    watch_count: usize,
}

struct Shared {
    state: Mutex<State>,
    config: WatcherConfig,
    stop: AtomicBool,
    exhaustion_logged: AtomicBool,
    batches: AtomicU64,
    events: AtomicU64,
    overflows: AtomicU64,
    reconciles: AtomicU64,
    rescan: AtomicBool,
}

/// The process's Maildir watcher (see the module docs).
pub struct MaildirWatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MaildirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaildirWatcher").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl MaildirWatcher {
    /// Starts the watcher thread with one inotify instance. If inotify
    /// cannot be opened (`max_user_instances`, not Linux) every user is polled.
    ///
    /// # Errors
    /// Spawning the thread failed.
    pub fn start(config: WatcherConfig) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        let source = match inotify_source::open() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, interval_ms = config.poll_interval.as_millis() as u64,
                    "inotify unavailable (fs.inotify.max_user_instances?); polling all users");
                None
            }
        };
        #[cfg(kqueue)]
        let source = match kqueue_source::open() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, interval_ms = config.poll_interval.as_millis() as u64,
                    "kqueue unavailable; polling all users");
                None
            }
        };
        #[cfg(not(any(target_os = "linux", kqueue)))]
        let source: Option<(Box<dyn WatchRegistry>, Box<dyn EventReader>)> = None;
        let (registry, reader) = match source {
            Some((r, e)) => (Some(r), Some(e)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State { users: HashMap::new(), targets: HashMap::new(), registry, watch_count: 0 }),
            config,
            stop: AtomicBool::new(false),
            exhaustion_logged: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
            rescan: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("maildir-watcher".into())
            .spawn(move || thread_shared.run(reader))?;
        Ok(MaildirWatcher { shared, thread: Some(thread) })
    }

    /// Registers one session of `store`'s user. The first session adds the
    /// watches; later ones only count.
    pub fn watch_user(&self, store: &UserStore) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(entry) = state.users.get_mut(store.user()) {
            entry.sessions += 1;
            return;
        }
        let folders = FolderSet::read(store).unwrap_or_else(|e| {
            tracing::warn!(user = %store.user(), error = %e, "reading folders failed");
            FolderSet::default()
        });
        let mut entry = UserEntry {
            store: store.clone(),
            sessions: 1,
            folders,
            watches: HashMap::new(),
            missing: BTreeSet::new(),
            polled: state.registry.is_none(),
            poll_root: None,
            poll_stamps: HashMap::new(),
            ours_until: None,
            selected: None,
        };
        if !entry.polled {
            let mailboxes = entry.mailboxes();
            let needed = 1 + 2 * mailboxes.len();
            let mut ok = shared.add_watch(&mut state, &mut entry, "", DirKind::Root).is_ok();
            for mailbox in &mailboxes {
                if !ok {
                    break;
                }
                ok = shared.watch_mailbox(&mut state, &mut entry, mailbox);
            }
            if !ok {
                shared.fall_back_to_polling(&mut state, &mut entry, needed);
            }
        }
        if entry.polled {
            entry.take_poll_stamps();
        }
        state.users.insert(store.user().to_string(), entry);
    }

    /// Registers one session of `store`'s user that has `mailbox` selected,
    /// watching only that mailbox's `new/` and `cur/` (no root, no other
    /// folder): what a hibernated session needs, at two watches per
    /// mailbox instead of two per folder plus the root. A user already
    /// watched whole ([`MaildirWatcher::watch_user`]) is only counted.
    pub fn watch_mailbox(&self, store: &UserStore, mailbox: &str) {
        let shared = &self.shared;
        let mut state = shared.lock();
        let user = store.user().to_string();
        let mut entry = match state.users.remove(&user) {
            Some(entry) => entry,
            None => UserEntry {
                store: store.clone(),
                sessions: 0,
                folders: FolderSet::default(),
                watches: HashMap::new(),
                missing: BTreeSet::new(),
                polled: state.registry.is_none(),
                poll_root: None,
                poll_stamps: HashMap::new(),
                ours_until: None,
                selected: Some(HashMap::new()),
            },
        };
        entry.sessions += 1;
        if let Some(selected) = entry.selected.as_mut() {
            let count = selected.entry(mailbox.to_string()).or_insert(0);
            *count += 1;
            if *count == 1 {
                if entry.polled {
                    let stamp = entry.store.mailbox_path(mailbox).ok().and_then(|p| dir_stamp(&p));
                    entry.poll_stamps.insert(mailbox.to_string(), stamp);
                } else if !shared.watch_mailbox(&mut state, &mut entry, mailbox) {
                    let needed = 2 * entry.mailboxes().len();
                    shared.fall_back_to_polling(&mut state, &mut entry, needed);
                }
            }
        }
        state.users.insert(user, entry);
    }

    /// Unregisters one session of `user` that had `mailbox` selected
    /// ([`MaildirWatcher::watch_mailbox`]); the mailbox's last one drops
    /// its watches, the user's last one the user.
    pub fn unwatch_mailbox(&self, user: &str, mailbox: &str) {
        let mut state = self.shared.lock();
        let Some(mut entry) = state.users.remove(user) else { return };
        entry.sessions = entry.sessions.saturating_sub(1);
        let last_of_mailbox = entry.selected.as_mut().is_some_and(|selected| match selected.get_mut(mailbox) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                selected.remove(mailbox);
                true
            }
            None => false,
        });
        if last_of_mailbox {
            self.shared.unwatch_mailbox(&mut state, &mut entry, mailbox);
            entry.missing.remove(mailbox);
            entry.poll_stamps.remove(mailbox);
        }
        if entry.sessions > 0 {
            state.users.insert(user.to_string(), entry);
        } else {
            let all: Vec<String> = entry.watches.keys().cloned().collect();
            for mailbox in all {
                self.shared.unwatch_mailbox(&mut state, &mut entry, &mailbox);
            }
        }
    }

    /// Unregisters one session of `user`; the last one drops the watches.
    pub fn unwatch_user(&self, user: &str) {
        let mut state = self.shared.lock();
        let Some(entry) = state.users.get_mut(user) else { return };
        entry.sessions = entry.sessions.saturating_sub(1);
        if entry.sessions > 0 {
            return;
        }
        if let Some(mut entry) = state.users.remove(user) {
            let all: Vec<String> = entry.watches.keys().cloned().collect();
            for mailbox in all {
                self.shared.unwatch_mailbox(&mut state, &mut entry, &mailbox);
            }
        }
    }

    /// Asks the watcher thread to rescan every watched user (as after a
    /// queue overflow).
    pub fn rescan_all(&self) {
        self.shared.rescan.store(true, Ordering::Release);
    }

    /// Current counters.
    pub fn stats(&self) -> WatcherStats {
        let state = self.shared.lock();
        WatcherStats {
            users: state.users.len(),
            watches: state.watch_count,
            polled_users: state.users.values().filter(|u| u.polled).count(),
            batches: self.shared.batches.load(Ordering::Relaxed),
            events: self.shared.events.load(Ordering::Relaxed),
            overflows: self.shared.overflows.load(Ordering::Relaxed),
            reconciles: self.shared.reconciles.load(Ordering::Relaxed),
        }
    }
}

impl Drop for MaildirWatcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_watch(&self, state: &mut State, entry: &mut UserEntry, mailbox: &str, kind: DirKind) -> Result<(), AddFailure> {
        if self.config.max_watches.is_some_and(|max| state.watch_count >= max) {
            return Err(AddFailure::Exhausted);
        }
        let base: PathBuf = if mailbox.is_empty() {
            entry.store.root().to_path_buf()
        } else {
            entry.store.mailbox_path(mailbox).map_err(|e| AddFailure::Other(io::Error::other(e.to_string())))?
        };
        let path = match kind {
            DirKind::Root => base,
            DirKind::New => base.join("new"),
            DirKind::Cur => base.join("cur"),
        };
        let Some(registry) = state.registry.as_mut() else { return Err(AddFailure::Exhausted) };
        let id = registry.add(&path, kind).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => AddFailure::Exhausted,
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => AddFailure::Missing,
            _ => AddFailure::Other(e),
        })?;
        let targets = state.targets.entry(id).or_default();
        if targets.is_empty() {
            state.watch_count += 1;
        }
        targets.push(Target { user: entry.store.user().to_string(), mailbox: mailbox.to_string(), kind });
        entry.watches.entry(mailbox.to_string()).or_default().push(id);
        Ok(())
    }

    /// Watches `new/` and `cur/` of `mailbox`. False if the watch limit was hit.
    fn watch_mailbox(&self, state: &mut State, entry: &mut UserEntry, mailbox: &str) -> bool {
        for kind in [DirKind::New, DirKind::Cur] {
            match self.add_watch(state, entry, mailbox, kind) {
                Ok(()) => {}
                Err(AddFailure::Exhausted) => return false,
                Err(AddFailure::Missing) => {
                    // Still being built (maildirmake): retried every tick.
                    self.unwatch_mailbox(state, entry, mailbox);
                    entry.missing.insert(mailbox.to_string());
                    return true;
                }
                Err(AddFailure::Other(e)) => {
                    tracing::warn!(user = %entry.store.user(), mailbox, error = %e, "adding a watch failed");
                    entry.missing.insert(mailbox.to_string());
                    return true;
                }
            }
        }
        entry.missing.remove(mailbox);
        true
    }

    fn unwatch_mailbox(&self, state: &mut State, entry: &mut UserEntry, mailbox: &str) {
        let user = entry.store.user();
        for id in entry.watches.remove(mailbox).unwrap_or_default() {
            let Some(targets) = state.targets.get_mut(&id) else { continue };
            targets.retain(|t| !(t.user == user && t.mailbox == mailbox));
            if targets.is_empty() {
                state.targets.remove(&id);
                state.watch_count = state.watch_count.saturating_sub(1);
                if let Some(registry) = state.registry.as_mut() {
                    registry.remove(id);
                }
            }
        }
    }

    fn fall_back_to_polling(&self, state: &mut State, entry: &mut UserEntry, needed_for_user: usize) {
        let had: usize = entry.watches.values().map(Vec::len).sum();
        if !self.exhaustion_logged.swap(true, Ordering::AcqRel) {
            tracing::error!(
                in_use = state.watch_count,
                needed = state.watch_count - had + needed_for_user,
                configured_max = ?self.config.max_watches,
                poll_interval_ms = self.config.poll_interval.as_millis() as u64,
                "inotify watches exhausted (raise fs.inotify.max_user_watches to at least `needed`); users without watches are stat-polled"
            );
        }
        let all: Vec<String> = entry.watches.keys().cloned().collect();
        for mailbox in all {
            self.unwatch_mailbox(state, entry, &mailbox);
        }
        entry.missing.clear();
        entry.polled = true;
        entry.take_poll_stamps();
    }

    /// The watcher thread.
    fn run(self: Arc<Self>, mut reader: Option<Box<dyn EventReader>>) {
        let mut raw = Vec::new();
        let mut writing: HashMap<(WatchId, OsString), Instant> = HashMap::new();
        let mut deferred: BTreeSet<(String, String)> = BTreeSet::new();
        let mut next_poll = Instant::now() + self.config.poll_interval;
        while !self.stop.load(Ordering::Acquire) {
            let tick = if deferred.is_empty() { TICK } else { self.config.debounce.max(Duration::from_millis(5)) };
            match reader.as_mut() {
                Some(r) => {
                    if let Err(e) = r.wait(tick, &mut raw) {
                        tracing::error!(error = %e, "reading inotify events failed");
                        std::thread::sleep(TICK);
                    }
                    if !raw.is_empty() {
                        // Coalesce the burst: until quiet for `debounce`, at most `max_batch`.
                        let start = Instant::now();
                        while start.elapsed() < self.config.max_batch {
                            let before = raw.len();
                            let _ = r.wait(self.config.debounce, &mut raw);
                            if raw.len() == before {
                                break;
                            }
                        }
                    }
                }
                None => std::thread::sleep(tick),
            }
            let mut overflow = self.rescan.swap(false, Ordering::AcqRel);
            let mut dirty = std::mem::take(&mut deferred);
            let mut roots = BTreeSet::new();
            if !raw.is_empty() {
                self.batches.fetch_add(1, Ordering::Relaxed);
                overflow |= self.classify(raw.drain(..), &mut dirty, &mut roots, &mut writing);
            }
            if overflow {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("inotify queue overflow or rescan request: rescanning every watched user");
                let users: Vec<String> = self.lock().users.keys().cloned().collect();
                for user in users {
                    self.resync_folders(&user);
                    for mailbox in self.lock().users.get(&user).map(UserEntry::mailboxes).unwrap_or_default() {
                        dirty.insert((user.clone(), mailbox));
                    }
                }
            }
            for user in &roots {
                self.resync_folders(user);
            }
            // Files still being written (created, not closed) wait a little.
            let now = Instant::now();
            writing.retain(|_, until| now < *until);
            let busy: BTreeSet<(String, String)> = {
                let state = self.lock();
                writing.keys().filter_map(|(w, _)| state.targets.get(w)).flatten().map(|t| (t.user.clone(), t.mailbox.clone())).collect()
            };
            for key in dirty {
                if busy.contains(&key) {
                    deferred.insert(key);
                } else {
                    self.reconcile(&key.0, &key.1);
                }
            }
            self.retry_missing();
            if Instant::now() >= next_poll {
                self.poll();
                next_poll = Instant::now() + self.config.poll_interval;
            }
        }
    }

    /// Sorts raw events into touched mailboxes and users whose root
    /// changed. Returns true on overflow.
    fn classify(
        &self,
        events: impl Iterator<Item = RawEvent>,
        dirty: &mut BTreeSet<(String, String)>,
        roots: &mut BTreeSet<String>,
        writing: &mut HashMap<(WatchId, OsString), Instant>,
    ) -> bool {
        let mut overflow = false;
        let mut state = self.lock();
        let now = Instant::now();
        for ev in events {
            let (watch, kind, is_dir, name) = match ev {
                RawEvent::Overflow => {
                    overflow = true;
                    continue;
                }
                RawEvent::Changed { watch, kind, is_dir, name, .. } => (watch, kind, is_dir, name),
            };
            if kind == RawKind::DirChanged {
                self.classify_dir_change(&mut state, watch, dirty, roots, writing, now);
                continue;
            }
            let Some(name) = name else { continue };
            if kind == RawKind::Other {
                continue;
            }
            let Some(targets) = state.targets.get(&watch).cloned() else { continue };
            for target in targets {
                match target.kind {
                    DirKind::Root => {
                        let Some(n) = name.to_str() else { continue };
                        if n.starts_with(OWN_FOLDER_PREFIX) || n.starts_with(LIST_LOCK_FILE) {
                            if let Some(entry) = state.users.get_mut(&target.user) {
                                entry.ours_until = Some(now + OWN_MARKER_WINDOW);
                            }
                            roots.insert(target.user.clone());
                        } else if is_dir && crate::mailbox_name::MailboxName::from_dir_name(n).is_some() {
                            roots.insert(target.user.clone());
                        }
                    }
                    DirKind::New | DirKind::Cur => {
                        if is_dir {
                            continue;
                        }
                        let own = match kind {
                            RawKind::MovedFrom | RawKind::Deleted => Some(crate::own_changes::Change::Gone),
                            RawKind::MovedTo => Some(crate::own_changes::Change::Arrived),
                            _ => None,
                        };
                        if let Some(change) = own {
                            let sub = if target.kind == DirKind::New { "new" } else { "cur" };
                            let path = state.users.get(&target.user).and_then(|u| u.store.mailbox_path(&target.mailbox).ok());
                            if path.is_some_and(|p| crate::own_changes::take(&p.join(sub).join(&name), change)) {
                                // This process's own rename or removal, made
                                // and committed under the lock: nothing to find.
                                continue;
                            }
                        }
                        match kind {
                            RawKind::Created | RawKind::MovedTo
                                if target.kind == DirKind::New && own_files::written_by_live_dormouse(&name) =>
                            {
                                // Its writer numbers it (and publishes it) itself.
                                writing.insert((watch, name.clone()), now + own_files::OWN_FILE_GRACE);
                            }
                            RawKind::Created => {
                                // A hard link (our COPY) is complete at once; a
                                // plain `cp` is complete at close.
                                let sub = if target.kind == DirKind::New { "new" } else { "cur" };
                                let linked = state.users.get(&target.user).and_then(|u| u.store.mailbox_path(&target.mailbox).ok()).and_then(|p| std::fs::metadata(p.join(sub).join(&name)).ok()).is_none_or(|m| m.nlink() > 1);
                                if !linked {
                                    writing.insert((watch, name.clone()), now + WRITE_GRACE);
                                }
                            }
                            RawKind::MovedTo => {}
                            _ => {
                                writing.remove(&(watch, name.clone()));
                            }
                        }
                        dirty.insert((target.user, target.mailbox));
                    }
                }
            }
        }
        overflow
    }

    /// A directory changed without saying which name (kqueue): the root
    /// re-reads the folders, `new/`/`cur/` reconcile their mailbox. Files a
    /// live dormouse is still numbering in `new/` keep it waiting, as with inotify.
    fn classify_dir_change(
        &self,
        state: &mut State,
        watch: WatchId,
        dirty: &mut BTreeSet<(String, String)>,
        roots: &mut BTreeSet<String>,
        writing: &mut HashMap<(WatchId, OsString), Instant>,
        now: Instant,
    ) {
        let Some(targets) = state.targets.get(&watch).cloned() else { return };
        for target in targets {
            match target.kind {
                DirKind::Root => {
                    roots.insert(target.user);
                }
                DirKind::New | DirKind::Cur => {
                    if target.kind == DirKind::New {
                        let dir = state.users.get(&target.user).and_then(|u| u.store.mailbox_path(&target.mailbox).ok()).map(|p| p.join("new"));
                        for entry in dir.and_then(|d| std::fs::read_dir(d).ok()).into_iter().flatten().flatten() {
                            let name = entry.file_name();
                            if own_files::written_by_live_dormouse(&name) {
                                writing.entry((watch, name)).or_insert(now + own_files::OWN_FILE_GRACE);
                            }
                        }
                    }
                    dirty.insert((target.user, target.mailbox));
                }
            }
        }
    }

    /// Reconciles one mailbox of a watched user.
    fn reconcile(&self, user: &str, mailbox: &str) {
        let Some(store) = self.lock().users.get(user).map(|u| u.store.clone()) else { return };
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        match store.reconcile_outside_changes(mailbox) {
            Ok(report) => {
                self.events.fetch_add(report.events as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(user, mailbox, error = %e, "reconciling outside changes failed"),
        }
    }

    /// Re-reads a user's folders, adjusts watches, and publishes folder
    /// events unless the change was our own.
    fn resync_folders(&self, user: &str) {
        let Some((store, old)) =
            self.lock().users.get(user).filter(|u| u.selected.is_none()).map(|u| (u.store.clone(), u.folders.clone()))
        else {
            // Not watched, or only selected mailboxes (no folder list kept).
            return;
        };
        let now_set = match FolderSet::read(&store) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(user, error = %e, "reading folders failed");
                return;
            }
        };
        let changes = old.diff(&now_set);
        if changes.is_empty() {
            return;
        }
        let ours = {
            let mut state = self.lock();
            let Some(mut entry) = state.users.remove(user) else { return };
            for mailbox in changes.vanished() {
                self.unwatch_mailbox(&mut state, &mut entry, mailbox);
                entry.missing.remove(mailbox);
            }
            entry.folders = now_set.clone();
            if !entry.polled {
                let appeared: Vec<String> = changes.appeared().map(str::to_string).collect();
                for mailbox in &appeared {
                    if !self.watch_mailbox(&mut state, &mut entry, mailbox) {
                        let needed = 1 + 2 * entry.mailboxes().len();
                        self.fall_back_to_polling(&mut state, &mut entry, needed);
                        break;
                    }
                }
            } else {
                entry.take_poll_stamps();
            }
            let ours = entry.ours_until.is_some_and(|t| Instant::now() < t) || store.root().join(LIST_LOCK_FILE).exists();
            state.users.insert(user.to_string(), entry);
            ours
        };
        if !ours {
            let n = emit_folder_events(&store, &now_set, &changes);
            self.events.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Messages already inside a folder that appeared from outside.
        for mailbox in changes.created.iter() {
            self.reconcile(user, mailbox);
            // Its uidlist exists now: a later rename pairs by UIDVALIDITY.
            if let Some(entry) = self.lock().users.get_mut(user) {
                entry.folders.refresh(&store, mailbox);
            }
        }
    }

    /// Retries watches on folders that were still being built.
    fn retry_missing(&self) {
        let mut state = self.lock();
        let users: Vec<String> = state.users.iter().filter(|(_, u)| !u.missing.is_empty() && !u.polled).map(|(n, _)| n.clone()).collect();
        let mut reconcile = Vec::new();
        for user in users {
            let Some(mut entry) = state.users.remove(&user) else { continue };
            for mailbox in std::mem::take(&mut entry.missing) {
                let wanted = match &entry.selected {
                    Some(selected) => selected.contains_key(&mailbox),
                    None => entry.folders.folders.contains_key(&mailbox) || mailbox == "INBOX",
                };
                if !wanted {
                    continue;
                }
                if !self.watch_mailbox(&mut state, &mut entry, &mailbox) {
                    let needed = 1 + 2 * entry.mailboxes().len();
                    self.fall_back_to_polling(&mut state, &mut entry, needed);
                    break;
                }
                if !entry.missing.contains(&mailbox) {
                    reconcile.push((user.clone(), mailbox));
                }
            }
            state.users.insert(user, entry);
        }
        drop(state);
        for (user, mailbox) in reconcile {
            self.reconcile(&user, &mailbox);
        }
    }

    /// Stat-polls the users without watches.
    fn poll(&self) {
        let users: Vec<String> = self.lock().users.iter().filter(|(_, u)| u.polled).map(|(n, _)| n.clone()).collect();
        for user in users {
            let root_changed = {
                let mut state = self.lock();
                let Some(entry) = state.users.get_mut(&user) else { continue };
                if entry.selected.is_some() {
                    // Only its selected mailboxes are followed, not its folders.
                    false
                } else {
                    let root = dir_mtime(entry.store.root());
                    let changed = root != entry.poll_root;
                    entry.poll_root = root;
                    changed
                }
            };
            if root_changed {
                self.resync_folders(&user);
            }
            let changed: Vec<String> = {
                let mut state = self.lock();
                let Some(entry) = state.users.get_mut(&user) else { continue };
                let mut changed = Vec::new();
                for mailbox in entry.mailboxes() {
                    let stamp = entry.store.mailbox_path(&mailbox).ok().and_then(|p| dir_stamp(&p));
                    if entry.poll_stamps.insert(mailbox.clone(), stamp) != Some(stamp) {
                        changed.push(mailbox);
                    }
                }
                changed
            };
            for mailbox in changed {
                self.reconcile(&user, &mailbox);
            }
        }
    }
}
