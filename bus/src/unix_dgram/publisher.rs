//! The UNIX-datagram publisher: sends each event to the receiver sockets in
//! the bus folder whose interest file asks for the event's user (or that
//! have no interest file), without ever blocking the caller.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::IoSlice;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use rustix::pipe::PipeFlags;
use storage_hooks::{ChangeHook, HookError, MailboxEvent};

use super::ensure_bus_dir;
use super::interest::{interest_path, user_hash, INTEREST_SUFFIX};
use super::interest_view::Routing;
use super::interest_watch::{Drained, InterestWatch};
use crate::rate_log::RateLimitedLog;
use crate::wire::{self, FrameHeader, MAX_HEADER_LEN};
use crate::{BusCounters, BusError, CountersSnapshot, UnixConfig};

/// A folder mtime younger than this may hide a later change within the same
/// clock tick, so the folder is rescanned until its mtime is older.
const RACY_MTIME: Duration = Duration::from_millis(50);

/// How long the retry thread waits for writability before looking again.
const RETRY_POLL: Duration = Duration::from_millis(20);

/// Records in quick succession before a publisher starts holding them back.
const BURST_BEFORE_COALESCE: u32 = 8;

/// How often an idle retry thread checks whether its publisher still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Suffix of receiver sockets in the bus folder.
pub(crate) const SOCKET_SUFFIX: &str = ".sock";

/// The watch is drained at least this often even when every receiver's
/// copy says "yes", so a cleared bit stops costing datagrams soon.
const DRAIN_AT_LEAST_EVERY: Duration = Duration::from_millis(10);

/// An interest file (or its temporary) without a socket is removed once
/// it is this old: a subscriber writes it just before binding its socket.
const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// Publishes events to every subscriber process over UNIX datagrams.
/// Cheap to clone; all clones share one set of receiver sockets.
#[derive(Debug, Clone)]
pub struct UnixPublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    id: u64,
    limits: Limits,
    counters: Arc<BusCounters>,
    state: Mutex<State>,
    scan_log: RateLimitedLog,
    interest_log: RateLimitedLog,
    /// Events not sent to a receiver because it had not subscribed the user.
    skipped: AtomicU64,
    wake: Arc<Wake>,
}

/// Wakes the retry thread (a non-blocking pipe it polls alongside the
/// sockets of full receivers).
#[derive(Debug)]
struct Wake {
    read: OwnedFd,
    write: OwnedFd,
}

impl Wake {
    fn new() -> std::io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Self { read, write })
    }

    fn notify(&self) {
        // A full pipe already holds a wake-up.
        let _ = rustix::io::write(&self.write, &[1]);
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    peers: Vec<Peer>,
    /// (mtime seconds, mtime nanoseconds, inode) of the folder at the last scan.
    stamp: Option<(i64, i64, u64)>,
    /// Socket names that refused connections and could not be unlinked.
    dead: HashSet<OsString>,
    /// The retry thread is working on pending batches.
    retry_running: bool,
    /// The retry thread exists (it sleeps while nothing is pending).
    retry_spawned: bool,
    /// Reports changed interest files (`None`: inotify unavailable, every
    /// decision reads one byte of the receiver's file).
    watch: Option<InterestWatch>,
    /// When the watch was last drained.
    drained_at: Option<Instant>,
}

/// One receiver socket and what is still owed to it.
#[derive(Debug)]
struct Peer {
    name: OsString,
    sock: Arc<UnixDatagram>,
    /// Which events this receiver wants (its interest file).
    routing: Routing,
    /// Sequence number of the last frame sent (or skipped) to this receiver.
    last_seq: u64,
    /// Encoded records waiting to be sent as one frame.
    pending: Vec<u8>,
    pending_count: u32,
    /// When the first record of `pending` was queued.
    batch_started: Option<Instant>,
    /// The last send attempt hit a full receiver queue (`EAGAIN`).
    blocked: bool,
    /// When the last frame was sent.
    last_send: Option<Instant>,
    /// When the last record was handed to this receiver.
    last_record: Option<Instant>,
    /// Records in a row that came within `coalesce` of the one before.
    burst: u32,
}

/// What happened to a delivery attempt.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Done,
    Pending,
    Dead,
}

fn is_dead(e: Errno) -> bool {
    e == Errno::CONNREFUSED || e == Errno::NOENT || e == Errno::NOTCONN || e == Errno::PIPE
}

impl Peer {
    /// Sends one frame with the next sequence number.
    fn send(&mut self, publisher: u64, count: u32, body: &[u8]) -> Result<(), Errno> {
        let seq = self.last_seq + 1;
        let mut hbuf = [0u8; MAX_HEADER_LEN];
        let head = wire::encode_header(&FrameHeader { publisher, seq, count }, &mut hbuf);
        let iov = [IoSlice::new(head), IoSlice::new(body)];
        rustix::net::sendmsg(&*self.sock, &iov, &mut SendAncillaryBuffer::default(), SendFlags::DONTWAIT)?;
        self.last_seq = seq;
        Ok(())
    }

    /// Gives up on the pending batch; skipping a sequence number makes the
    /// receiver detect the loss.
    fn drop_pending(&mut self, counters: &BusCounters) {
        counters.add_dropped_send(u64::from(self.pending_count));
        counters.add_gaps(1);
        self.last_seq += 1;
        self.pending.clear();
        self.pending_count = 0;
        self.batch_started = None;
    }

    /// Hands one record to this receiver. A record following the previous
    /// frame within `limits.coalesce` is held back and sent with the ones
    /// after it as one frame, so a busy receiver is woken once per batch
    /// instead of once per event; a quiet bus sends every event at once.
    fn deliver(&mut self, publisher: u64, record: &[u8], limits: &Limits, counters: &BusCounters, now: Instant) -> Delivery {
        let close = self.last_record.is_some_and(|t| now.duration_since(t) < limits.coalesce);
        self.burst = if close { self.burst.saturating_add(1) } else { 0 };
        self.last_record = Some(now);
        if self.pending_count == 0 {
            // Only a sustained stream is held back; a short burst (or a
            // quiet bus) goes out at once, keeping latency low.
            let recent = self.last_send.is_some_and(|t| now.duration_since(t) < limits.coalesce);
            if !recent || self.burst < BURST_BEFORE_COALESCE {
                return match self.send(publisher, 1, record) {
                    Ok(()) => {
                        self.last_send = Some(now);
                        counters.add_events_out(1);
                        Delivery::Done
                    }
                    Err(e) if e == Errno::AGAIN => {
                        self.start_batch(record, now);
                        self.blocked = true;
                        Delivery::Pending
                    }
                    Err(e) if is_dead(e) => Delivery::Dead,
                    Err(e) => {
                        tracing::warn!(receiver = ?self.name, error = %e, "bus: send failed; receiver will resync");
                        counters.add_dropped_send(1);
                        counters.add_gaps(1);
                        self.last_send = Some(now);
                        self.last_seq += 1;
                        Delivery::Done
                    }
                };
            }
            self.start_batch(record, now);
            return Delivery::Pending;
        }
        if MAX_HEADER_LEN + self.pending.len() + record.len() > limits.max_frame {
            self.drop_pending(counters);
            self.start_batch(record, now);
        } else {
            self.pending.extend_from_slice(record);
            self.pending_count += 1;
        }
        if self.blocked || self.is_due(limits, now) {
            self.flush(publisher, counters, now)
        } else {
            Delivery::Pending
        }
    }

    fn start_batch(&mut self, record: &[u8], now: Instant) {
        self.pending.extend_from_slice(record);
        self.pending_count = 1;
        self.batch_started = Some(now);
    }

    /// True if the held-back batch should leave now.
    fn is_due(&self, limits: &Limits, now: Instant) -> bool {
        self.pending_count > 0
            && (self.pending.len() >= limits.max_frame / 2
                || self.batch_started.is_none_or(|t| now.duration_since(t) >= limits.coalesce))
    }

    /// When the held-back batch is due (`None` if nothing is held back).
    fn due_at(&self, limits: &Limits) -> Option<Instant> {
        if self.pending_count == 0 || self.blocked {
            return None;
        }
        Some(self.batch_started.map_or_else(Instant::now, |t| t + limits.coalesce))
    }

    fn flush(&mut self, publisher: u64, counters: &BusCounters, now: Instant) -> Delivery {
        if self.pending_count == 0 {
            return Delivery::Done;
        }
        let body = std::mem::take(&mut self.pending);
        let result = self.send(publisher, self.pending_count, &body);
        self.pending = body;
        match result {
            Ok(()) => {
                counters.add_events_out(u64::from(self.pending_count));
                self.pending.clear();
                self.pending_count = 0;
                self.batch_started = None;
                self.blocked = false;
                self.last_send = Some(now);
                Delivery::Done
            }
            Err(e) if e == Errno::AGAIN => {
                self.blocked = true;
                Delivery::Pending
            }
            Err(e) if is_dead(e) => Delivery::Dead,
            Err(e) => {
                tracing::warn!(receiver = ?self.name, error = %e, "bus: batch send failed; receiver will resync");
                self.drop_pending(counters);
                self.blocked = false;
                Delivery::Done
            }
        }
    }
}

/// Size and time limits of a publisher's batches.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame: usize,
    coalesce: Duration,
}

impl UnixPublisher {
    /// Opens a publisher on the bus folder `config.dir` (created with mode
    /// 0700 if missing). Does not need an async runtime.
    ///
    /// # Errors
    /// [`BusError::BusDir`] if the folder is unusable.
    pub fn open(config: &UnixConfig) -> Result<Self, BusError> {
        ensure_bus_dir(&config.dir)?;
        let wake = Wake::new().map_err(|source| BusError::Socket { path: config.dir.clone(), source })?;
        // Before any interest file is read, so no change can slip past.
        let watch = match config.interest_watch.then(|| InterestWatch::open(&config.dir)) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::info!(dir = %config.dir.display(), error = %e,
                    "bus: cannot watch the bus folder; reading interest files per event instead");
                None
            }
        };
        let inner = Inner {
            dir: config.dir.clone(),
            id: rand::random(),
            limits: Limits {
                max_frame: config.max_frame_bytes,
                coalesce: Duration::from_micros(config.coalesce_us),
            },
            counters: Arc::new(BusCounters::default()),
            state: Mutex::new(State { watch, ..State::default() }),
            scan_log: RateLimitedLog::new(Duration::from_secs(10)),
            interest_log: RateLimitedLog::new(Duration::from_secs(10)),
            skipped: AtomicU64::new(0),
            wake: Arc::new(wake),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The random id this publisher puts in every frame.
    pub fn publisher_id(&self) -> u64 {
        self.inner.id
    }

    /// Number of receiver sockets currently known.
    pub fn receiver_count(&self) -> usize {
        let mut st = self.inner.lock();
        self.inner.refresh(&mut st);
        st.peers.len()
    }

    /// Current counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }

    /// Events (per receiver) not sent because the receiver's interest file
    /// said it had not subscribed the event's user.
    pub fn skipped_by_routing(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// Sends `event` to every receiver that subscribed its user (by the
    /// receiver's interest file; a receiver without one gets every event).
    /// Never blocks: a receiver whose queue is full gets the event later
    /// (batched) or, if it stays full, detects a gap and resyncs. Events
    /// larger than one frame travel as a reference.
    ///
    /// Returns the largest number of bytes still waiting for one receiver
    /// (0 = delivered everywhere); callers may ignore it or use it to slow down.
    pub fn publish(&self, event: &MailboxEvent) -> usize {
        let mut record = wire::encode_event_record(event);
        if MAX_HEADER_LEN + record.len() > self.inner.limits.max_frame {
            record = wire::encode_reference_record(&event.user, &event.mailbox);
            self.inner.counters.add_references_out(1);
        }
        let inner = &self.inner;
        let mut st = inner.lock();
        inner.refresh(&mut st);
        let h = user_hash(&event.user);
        let now = Instant::now();
        // Draining the watch (a system call) is needed only to confirm a
        // "no": a copy's "yes" is safe to act on (at worst a wasted datagram).
        let recently = st.drained_at.is_some_and(|t| now.saturating_duration_since(t) < DRAIN_AT_LEAST_EVERY);
        let watched = if st.watch.is_some() && recently && st.peers.iter().all(|p| p.routing.surely_wants(h)) {
            true
        } else {
            inner.drain_watch(&mut st, now)
        };
        let mut max_pending = 0;
        let mut dead = Vec::new();
        let mut new_batch = false;
        let mut skipped = 0;
        for (i, peer) in st.peers.iter_mut().enumerate() {
            // Read after the event was committed, so a subscription that
            // was in place before is seen; sequence numbers count frames
            // sent to this receiver only, so skipping leaves no gap.
            if !peer.routing.wants(h, now, &inner.interest_log, watched) {
                skipped += 1;
                continue;
            }
            let was_idle = peer.pending_count == 0;
            match peer.deliver(inner.id, &record, &inner.limits, &inner.counters, now) {
                Delivery::Done => {}
                Delivery::Pending => {
                    new_batch |= was_idle;
                    max_pending = max_pending.max(peer.pending.len());
                }
                Delivery::Dead => dead.push(i),
            }
        }
        inner.remove_dead(&mut st, &dead);
        if skipped > 0 {
            inner.skipped.fetch_add(skipped, Ordering::Relaxed);
        }
        let any_pending = max_pending > 0;
        if any_pending && st.retry_running && new_batch {
            // The thread may be waiting on a later deadline or a full receiver.
            inner.wake.notify();
        } else if any_pending && !st.retry_running {
            st.retry_running = true;
            if st.retry_spawned {
                inner.wake.notify();
            } else {
                let weak = Arc::downgrade(&self.inner);
                let wake = inner.wake.clone();
                match std::thread::Builder::new().name("bus-retry".into()).spawn(move || retry_loop(weak, wake)) {
                    Ok(_) => st.retry_spawned = true,
                    Err(e) => {
                        st.retry_running = false;
                        tracing::warn!(error = %e, "bus: cannot start the retry thread; pending events wait for the next publish");
                    }
                }
            }
        }
        max_pending
    }

    /// Sends every held-back batch now (those of full receivers are tried
    /// once more); returns the largest number of bytes still waiting for one
    /// receiver (0 = nothing pending).
    pub fn flush_pending(&self) -> usize {
        self.inner.flush(FlushWhich::All)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rescans the folder if its mtime changed (or is too recent to trust).
    fn refresh(&self, st: &mut State) {
        let meta = match fs::metadata(&self.dir) {
            Ok(m) => m,
            Err(e) => {
                if let Some(suppressed) = self.scan_log.allow() {
                    tracing::warn!(dir = %self.dir.display(), error = %e, suppressed, "bus: cannot stat the bus folder");
                }
                return;
            }
        };
        let stamp = (meta.mtime(), meta.mtime_nsec(), meta.ino());
        let mtime = UNIX_EPOCH + Duration::new(stamp.0.max(0) as u64, stamp.1.clamp(0, 999_999_999) as u32);
        let racy = SystemTime::now().duration_since(mtime).map(|age| age < RACY_MTIME).unwrap_or(true);
        if st.stamp == Some(stamp) && !racy {
            return;
        }
        st.stamp = Some(stamp);
        let entries = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => {
                if let Some(suppressed) = self.scan_log.allow() {
                    tracing::warn!(dir = %self.dir.display(), error = %e, suppressed, "bus: cannot list the bus folder");
                }
                return;
            }
        };
        let all: Vec<OsString> = entries.filter_map(Result::ok).map(|e| e.file_name()).collect();
        let names: HashSet<OsString> =
            all.iter().filter(|n| n.to_str().is_some_and(|s| s.ends_with(SOCKET_SUFFIX))).cloned().collect();
        self.remove_orphan_interest(&all, &names);
        st.peers.retain(|p| names.contains(&p.name));
        st.dead.retain(|n| names.contains(n));
        for peer in &mut st.peers {
            if matches!(peer.routing, Routing::NoFile) {
                peer.routing = Routing::open(&interest_path(&self.dir.join(&peer.name)));
            }
        }
        for name in names {
            if st.dead.contains(&name) || st.peers.iter().any(|p| p.name == name) {
                continue;
            }
            let path = self.dir.join(&name);
            match connect(&path) {
                Ok(sock) => st.peers.push(Peer {
                    name,
                    sock: Arc::new(sock),
                    // The subscriber writes this file before binding its socket.
                    routing: Routing::open(&interest_path(&path)),
                    last_seq: 0,
                    pending: Vec::new(),
                    pending_count: 0,
                    batch_started: None,
                    blocked: false,
                    last_send: None,
                    last_record: None,
                    burst: 0,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    self.forget_stale(st, &name, "nobody is bound to it");
                }
                Err(e) => {
                    if let Some(suppressed) = self.scan_log.allow() {
                        tracing::warn!(socket = %path.display(), error = %e, suppressed, "bus: cannot connect to receiver");
                    }
                }
            }
        }
    }

    /// Marks the receivers whose interest file changed since the last call;
    /// true if the watch works (their bitmap copies are then up to date
    /// once re-read).
    fn drain_watch(&self, st: &mut State, now: Instant) -> bool {
        let Some(watch) = st.watch.as_mut() else { return false };
        st.drained_at = Some(now);
        let peers = &mut st.peers;
        let result = watch.drain(|name| {
            let Some(socket) = name.to_str().and_then(|n| n.strip_suffix(INTEREST_SUFFIX)) else { return };
            if let Some(peer) = peers.iter_mut().find(|p| p.name == socket) {
                peer.routing.changed();
            }
        });
        match result {
            Ok(Drained::Listed) => true,
            Ok(Drained::Overflow) => {
                st.peers.iter_mut().for_each(|p| p.routing.changed());
                true
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "bus: watching the bus folder failed; reading interest files per event instead");
                st.watch = None;
                false
            }
        }
    }

    /// Removes interest files (and their temporaries) left without a
    /// socket by subscribers that died, once they are old enough not to
    /// belong to a subscriber that is just starting.
    fn remove_orphan_interest(&self, all: &[OsString], sockets: &HashSet<OsString>) {
        for name in all {
            let Some(s) = name.to_str() else { continue };
            let base = s.strip_suffix(".tmp").unwrap_or(s);
            let Some(socket) = base.strip_suffix(INTEREST_SUFFIX) else { continue };
            if sockets.contains(std::ffi::OsStr::new(socket)) {
                continue;
            }
            let path = self.dir.join(name);
            let old = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > ORPHAN_AGE));
            if old && fs::remove_file(&path).is_ok() {
                tracing::info!(file = %path.display(), "bus: removed interest file of a receiver that is gone");
            }
        }
    }

    /// Removes the socket file (and interest file) of a receiver whose owner is gone.
    fn forget_stale(&self, st: &mut State, name: &OsString, why: &str) {
        let path = self.dir.join(name);
        self.counters.add_receivers_removed(1);
        let _ = fs::remove_file(interest_path(&path));
        match fs::remove_file(&path) {
            Ok(()) => tracing::info!(socket = %path.display(), why, "bus: removed receiver socket whose owner is gone"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %path.display(), why, error = %e, "bus: cannot remove dead receiver socket; ignoring it");
                st.dead.insert(name.clone());
            }
        }
    }

    fn remove_dead(&self, st: &mut State, dead: &[usize]) {
        for &i in dead.iter().rev() {
            let peer = st.peers.swap_remove(i);
            self.forget_stale(st, &peer.name, "sending was refused");
        }
    }

    fn flush(&self, which: FlushWhich) -> usize {
        let mut st = self.lock();
        let mut dead = Vec::new();
        let mut pending = 0;
        let now = Instant::now();
        for (i, peer) in st.peers.iter_mut().enumerate() {
            if peer.pending_count == 0 {
                continue;
            }
            let go = match which {
                FlushWhich::All => true,
                FlushWhich::Due => peer.blocked || peer.is_due(&self.limits, now),
            };
            let outcome = if go { peer.flush(self.id, &self.counters, now) } else { Delivery::Pending };
            match outcome {
                Delivery::Done => {}
                Delivery::Pending => pending = pending.max(peer.pending.len()),
                Delivery::Dead => dead.push(i),
            }
        }
        self.remove_dead(&mut st, &dead);
        pending
    }
}

/// Which batches [`Inner::flush`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushWhich {
    /// Every batch.
    All,
    /// Batches of full receivers, and held-back batches whose time is up.
    Due,
}

fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Sends held-back batches when they are due and waits for full receivers
/// to drain; sleeps while nothing is pending; exits once the publisher is gone.
fn retry_loop(weak: Weak<Inner>, wake: Arc<Wake>) {
    loop {
        let (blocked, wait) = {
            let Some(inner) = weak.upgrade() else { return };
            let mut st = inner.lock();
            if st.peers.iter().all(|p| p.pending_count == 0) {
                st.retry_running = false;
                drop(st);
                drop(inner);
                while !wait_readable(&wake, &[], IDLE_CHECK) {
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
                wake.drain();
                continue;
            }
            let blocked: Vec<Arc<UnixDatagram>> =
                st.peers.iter().filter(|p| p.pending_count > 0 && p.blocked).map(|p| p.sock.clone()).collect();
            let now = Instant::now();
            let next_due = st.peers.iter().filter_map(|p| p.due_at(&inner.limits)).min();
            let wait = next_due.map_or(RETRY_POLL, |t| t.saturating_duration_since(now).min(RETRY_POLL));
            (blocked, wait)
        };
        if wait_readable(&wake, &blocked, wait) {
            wake.drain();
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.flush(FlushWhich::Due);
    }
}

/// Polls the wake pipe (readable) and `blocked` sockets (writable) for at
/// most `wait`; true if the wake pipe fired.
fn wait_readable(wake: &Wake, blocked: &[Arc<UnixDatagram>], wait: Duration) -> bool {
    let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(blocked.len() + 1);
    fds.push(PollFd::new(&wake.read, PollFlags::IN));
    fds.extend(blocked.iter().map(|s| PollFd::new(&**s, PollFlags::OUT)));
    let timeout = rustix::event::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(_) => !fds[0].revents().is_empty(),
        Err(e) => {
            if e != Errno::INTR {
                tracing::warn!(error = %e, "bus: poll in retry thread failed");
                std::thread::sleep(RETRY_POLL);
            }
            false
        }
    }
}

impl ChangeHook for UnixPublisher {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        self.publish(event);
        Ok(())
    }
}
