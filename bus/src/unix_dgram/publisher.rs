//! The UNIX-datagram publisher: sends each event to every receiver socket in
//! the bus folder without ever blocking the caller.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::IoSlice;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use storage_hooks::{ChangeHook, HookError, MailboxEvent};

use super::ensure_bus_dir;
use crate::rate_log::RateLimitedLog;
use crate::wire::{self, FrameHeader, MAX_HEADER_LEN};
use crate::{BusCounters, BusError, CountersSnapshot, UnixConfig};

/// A folder mtime younger than this may hide a later change within the same
/// clock tick, so the folder is rescanned until its mtime is older.
const RACY_MTIME: Duration = Duration::from_millis(50);

/// How long the retry thread waits for writability before looking again.
const RETRY_POLL: Duration = Duration::from_millis(20);

/// Suffix of receiver sockets in the bus folder.
pub(crate) const SOCKET_SUFFIX: &str = ".sock";

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
    max_frame: usize,
    counters: Arc<BusCounters>,
    state: Mutex<State>,
    scan_log: RateLimitedLog,
}

#[derive(Debug, Default)]
struct State {
    peers: Vec<Peer>,
    /// (mtime seconds, mtime nanoseconds, inode) of the folder at the last scan.
    stamp: Option<(i64, i64, u64)>,
    /// Socket names that refused connections and could not be unlinked.
    dead: HashSet<OsString>,
    retry_running: bool,
}

/// One receiver socket and what is still owed to it.
#[derive(Debug)]
struct Peer {
    name: OsString,
    sock: Arc<UnixDatagram>,
    /// Sequence number of the last frame sent (or skipped) to this receiver.
    last_seq: u64,
    /// Encoded records waiting for the receiver's queue to drain.
    pending: Vec<u8>,
    pending_count: u32,
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
    }

    fn deliver(&mut self, publisher: u64, record: &[u8], max_frame: usize, counters: &BusCounters) -> Delivery {
        if self.pending_count == 0 {
            return match self.send(publisher, 1, record) {
                Ok(()) => {
                    counters.add_events_out(1);
                    Delivery::Done
                }
                Err(e) if e == Errno::AGAIN => {
                    self.pending.extend_from_slice(record);
                    self.pending_count = 1;
                    Delivery::Pending
                }
                Err(e) if is_dead(e) => Delivery::Dead,
                Err(e) => {
                    tracing::warn!(receiver = ?self.name, error = %e, "bus: send failed; receiver will resync");
                    counters.add_dropped_send(1);
                    counters.add_gaps(1);
                    self.last_seq += 1;
                    Delivery::Done
                }
            };
        }
        if MAX_HEADER_LEN + self.pending.len() + record.len() > max_frame {
            self.drop_pending(counters);
        }
        self.pending.extend_from_slice(record);
        self.pending_count += 1;
        self.flush(publisher, counters)
    }

    fn flush(&mut self, publisher: u64, counters: &BusCounters) -> Delivery {
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
                Delivery::Done
            }
            Err(e) if e == Errno::AGAIN => Delivery::Pending,
            Err(e) if is_dead(e) => Delivery::Dead,
            Err(e) => {
                tracing::warn!(receiver = ?self.name, error = %e, "bus: batch send failed; receiver will resync");
                self.drop_pending(counters);
                Delivery::Done
            }
        }
    }
}

impl UnixPublisher {
    /// Opens a publisher on the bus folder `config.dir` (created with mode
    /// 0700 if missing). Does not need an async runtime.
    ///
    /// # Errors
    /// [`BusError::BusDir`] if the folder is unusable.
    pub fn open(config: &UnixConfig) -> Result<Self, BusError> {
        ensure_bus_dir(&config.dir)?;
        let inner = Inner {
            dir: config.dir.clone(),
            id: rand::random(),
            max_frame: config.max_frame_bytes,
            counters: Arc::new(BusCounters::default()),
            state: Mutex::new(State::default()),
            scan_log: RateLimitedLog::new(Duration::from_secs(10)),
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

    /// Sends `event` to every receiver. Never blocks: a receiver whose queue
    /// is full gets the event later (batched) or, if it stays full, detects a
    /// gap and resyncs. Events larger than one frame travel as a reference.
    ///
    /// Returns the largest number of bytes still waiting for one receiver
    /// (0 = delivered everywhere); callers may ignore it or use it to slow down.
    pub fn publish(&self, event: &MailboxEvent) -> usize {
        let mut record = wire::encode_event_record(event);
        if MAX_HEADER_LEN + record.len() > self.inner.max_frame {
            record = wire::encode_reference_record(&event.user, &event.mailbox);
            self.inner.counters.add_references_out(1);
        }
        let inner = &self.inner;
        let mut st = inner.lock();
        inner.refresh(&mut st);
        let mut max_pending = 0;
        let mut dead = Vec::new();
        for (i, peer) in st.peers.iter_mut().enumerate() {
            match peer.deliver(inner.id, &record, inner.max_frame, &inner.counters) {
                Delivery::Done => {}
                Delivery::Pending => max_pending = max_pending.max(peer.pending.len()),
                Delivery::Dead => dead.push(i),
            }
        }
        inner.remove_dead(&mut st, &dead);
        let any_pending = max_pending > 0;
        if any_pending && !st.retry_running {
            st.retry_running = true;
            let weak = Arc::downgrade(&self.inner);
            let spawned = std::thread::Builder::new().name("bus-retry".into()).spawn(move || retry_loop(weak));
            if let Err(e) = spawned {
                st.retry_running = false;
                tracing::warn!(error = %e, "bus: cannot start the retry thread; pending events wait for the next publish");
            }
        }
        max_pending
    }

    /// Tries once more to send every pending batch; returns the largest
    /// number of bytes still waiting for one receiver (0 = nothing pending).
    pub fn flush_pending(&self) -> usize {
        self.inner.flush_all()
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
        let names: HashSet<OsString> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n.to_str().is_some_and(|s| s.ends_with(SOCKET_SUFFIX)))
            .collect();
        st.peers.retain(|p| names.contains(&p.name));
        st.dead.retain(|n| names.contains(n));
        for name in names {
            if st.dead.contains(&name) || st.peers.iter().any(|p| p.name == name) {
                continue;
            }
            let path = self.dir.join(&name);
            match connect(&path) {
                Ok(sock) => st.peers.push(Peer {
                    name,
                    sock: Arc::new(sock),
                    last_seq: 0,
                    pending: Vec::new(),
                    pending_count: 0,
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

    /// Removes the socket file of a receiver whose owner is gone.
    fn forget_stale(&self, st: &mut State, name: &OsString, why: &str) {
        let path = self.dir.join(name);
        self.counters.add_receivers_removed(1);
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

    fn flush_all(&self) -> usize {
        let mut st = self.lock();
        let mut dead = Vec::new();
        let mut pending = 0;
        for (i, peer) in st.peers.iter_mut().enumerate() {
            match peer.flush(self.id, &self.counters) {
                Delivery::Done => {}
                Delivery::Pending => pending = pending.max(peer.pending.len()),
                Delivery::Dead => dead.push(i),
            }
        }
        self.remove_dead(&mut st, &dead);
        pending
    }
}

fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Waits until receivers with pending batches can take them, then sends them.
/// Exits when nothing is pending or the publisher is gone.
fn retry_loop(weak: Weak<Inner>) {
    loop {
        let socks: Vec<Arc<UnixDatagram>> = {
            let Some(inner) = weak.upgrade() else { return };
            let mut st = inner.lock();
            let socks: Vec<_> = st.peers.iter().filter(|p| p.pending_count > 0).map(|p| p.sock.clone()).collect();
            if socks.is_empty() {
                st.retry_running = false;
                return;
            }
            socks
        };
        let mut fds: Vec<PollFd<'_>> = socks.iter().map(|s| PollFd::new(&**s, PollFlags::OUT)).collect();
        let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: RETRY_POLL.as_nanos() as i64 };
        if let Err(e) = rustix::event::poll(&mut fds, Some(&timeout)) {
            if e != Errno::INTR {
                tracing::warn!(error = %e, "bus: poll in retry thread failed");
                std::thread::sleep(RETRY_POLL);
            }
        }
        drop(fds);
        let Some(inner) = weak.upgrade() else { return };
        inner.flush_all();
    }
}

impl ChangeHook for UnixPublisher {
    fn on_change(&self, event: &MailboxEvent) -> Result<(), HookError> {
        self.publish(event);
        Ok(())
    }
}
