//! The UNIX-datagram subscriber: one socket per process, drained in batches
//! by a tokio task into the application's queue, and the interest file next
//! to it that tells publishers which users' events to send.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ensure_bus_dir;
use super::interest::{interest_path, InterestFile};
use super::publisher::SOCKET_SUFFIX;
use crate::dispatch::{Dispatcher, UserTable};
use crate::wire::decode_frame;
use crate::{BusCounters, BusError, BusMessage, CountersSnapshot, ResyncReason, UnixConfig};

/// Largest datagram we accept; larger than any frame a publisher may send
/// (the kernel caps a datagram at the sender's buffer, about 208 KiB).
const RECV_BUF: usize = 256 * 1024;

/// Datagrams drained before handing control back to the runtime.
const MAX_BATCH: usize = 512;

/// Publishers silent for this long may be forgotten...
const PUBLISHER_IDLE: Duration = Duration::from_secs(3600);

/// ...once more than this many are remembered (each short-lived `deliver`
/// process is a new publisher). A forgotten publisher that speaks again
/// looks like a gap and causes one resync, so forgetting is kept rare.
const MAX_PUBLISHERS: usize = 4096;

/// Receives the events of the users it subscribed to over the UNIX-datagram bus.
#[derive(Debug)]
pub struct UnixSubscriber {
    users: Arc<UserTable>,
    /// Held while the user table and the interest file change together.
    interest: Mutex<InterestFile>,
    rx: mpsc::Receiver<BusMessage>,
    counters: Arc<BusCounters>,
    path: PathBuf,
    task: JoinHandle<()>,
}

impl UnixSubscriber {
    /// Writes this process's (empty) interest file, binds its socket in the
    /// bus folder and starts draining it. Must be called inside a tokio
    /// runtime. Events of users subscribed after this returns reach the
    /// socket (publishers rescan the folder on change).
    ///
    /// # Errors
    /// [`BusError`] if the folder is unusable, the interest file cannot be
    /// written or the socket cannot be bound.
    pub fn bind(config: &UnixConfig, queue_capacity: usize) -> Result<Self, BusError> {
        ensure_bus_dir(&config.dir)?;
        let name = format!("{}-{:016x}{SOCKET_SUFFIX}", std::process::id(), rand::random::<u64>());
        let path = config.dir.join(name);
        // Before the socket: a publisher that finds the socket finds the file.
        let interest = InterestFile::create(&path)
            .map_err(|source| BusError::Socket { path: interest_path(&path), source })?;
        let sock = UnixDatagram::bind(&path).map_err(|source| BusError::Socket { path: path.clone(), source })?;
        let users = Arc::new(UserTable::default());
        let counters = Arc::new(BusCounters::default());
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let dispatcher = Dispatcher::new(users.clone(), tx, counters.clone());
        let task = tokio::spawn(receive_loop(sock, dispatcher, counters.clone(), path.clone()));
        Ok(Self { users, interest: Mutex::new(interest), rx, counters, path, task })
    }

    fn interest(&self) -> MutexGuard<'_, InterestFile> {
        self.interest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session of `user`: its events are delivered from the first
    /// session until the last one is removed with [`UnixSubscriber::unsubscribe`].
    /// When this returns, the interest file asks publishers for the user's
    /// events, so every event published from now on arrives.
    pub fn subscribe(&self, user: &str) {
        let mut interest = self.interest();
        if self.users.subscribe(user) {
            interest.add(user);
        }
    }

    /// Removes a session of `user`; after the last, its events stop (and
    /// publishers stop sending them here, unless another subscribed user
    /// shares the user's bit in the interest file).
    pub fn unsubscribe(&self, user: &str) {
        let mut interest = self.interest();
        if self.users.unsubscribe(user) {
            interest.remove(user);
        }
    }

    /// Routing only: asks every publisher to send this socket every event
    /// (`true`, the interest file's wildcard) or only those of subscribed
    /// users (`false`, the default). Events of users not subscribed here
    /// are still filtered out locally; a subscriber that wants them all
    /// also needs the user table's wildcard.
    pub fn set_receive_all(&self, on: bool) {
        self.interest().set_wildcard(on);
    }

    /// Receives every user's events for good (a push relay): the user
    /// table's wildcard plus [`UnixSubscriber::set_receive_all`].
    pub fn subscribe_all(&self) {
        self.users.subscribe_all();
        self.set_receive_all(true);
    }

    /// True while publishers are asked for every event.
    pub fn receives_all(&self) -> bool {
        self.interest().wildcard()
    }

    /// Number of subscribed users.
    pub fn subscribed_count(&self) -> usize {
        self.users.len()
    }

    /// Waits for the next message; `None` once the receive task has stopped.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<BusMessage> {
        self.rx.try_recv().ok()
    }

    /// The path of this process's socket.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Current counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }
}

impl Drop for UnixSubscriber {
    fn drop(&mut self) {
        self.task.abort();
        // Publishers notice the removal at their next folder rescan; the
        // interest file goes when `interest` is dropped, after the socket.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Per-publisher sequence state.
struct PeerSeq {
    last: u64,
    seen: Instant,
}

async fn receive_loop(sock: UnixDatagram, mut dispatcher: Dispatcher, counters: Arc<BusCounters>, path: PathBuf) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut peers: HashMap<u64, PeerSeq> = HashMap::new();
    let mut last_prune = Instant::now();
    loop {
        if let Err(e) = sock.readable().await {
            tracing::error!(socket = %path.display(), error = %e, "bus: receive socket failed");
            return;
        }
        for _ in 0..MAX_BATCH {
            match sock.try_recv(&mut buf) {
                Ok(n) => handle_datagram(&buf[..n], &mut peers, &mut dispatcher, &counters),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(socket = %path.display(), error = %e, "bus: receive failed");
                    break;
                }
            }
        }
        if !dispatcher.end_batch().await {
            return;
        }
        if peers.len() > MAX_PUBLISHERS && last_prune.elapsed() > Duration::from_secs(60) {
            last_prune = Instant::now();
            peers.retain(|_, p| p.seen.elapsed() < PUBLISHER_IDLE);
        }
    }
}

fn handle_datagram(bytes: &[u8], peers: &mut HashMap<u64, PeerSeq>, d: &mut Dispatcher, counters: &BusCounters) {
    let frame = match decode_frame(bytes) {
        Ok(f) => f,
        Err(e) => {
            d.bad_input("unix", &e);
            return;
        }
    };
    let h = frame.header;
    let peer = peers.entry(h.publisher).or_insert(PeerSeq { last: 0, seen: Instant::now() });
    peer.seen = Instant::now();
    // Frames to one receiver are numbered 1, 2, 3, ...; a frame with no
    // records only says "frames up to seq were sent".
    let gap = if h.count == 0 { h.seq > peer.last } else { h.seq != peer.last + 1 };
    peer.last = peer.last.max(h.seq);
    if gap {
        counters.add_gaps(1);
        tracing::debug!(publisher = h.publisher, seq = h.seq, "bus: frame sequence gap; resyncing all users");
        d.resync_all(ResyncReason::SequenceGap);
    }
    for record in frame.records {
        d.record("unix", record);
    }
}
