//! The hibernate process: one thread, one epoll over raw descriptors.
//!
//! - Workers connect to the process's `SOCK_SEQPACKET` socket and send
//!   sessions: one message = [`crate::record::HibernationRecord`] + the
//!   client descriptor (`SCM_RIGHTS`). Hand-backs go back to the worker the
//!   session came from (another connected worker if that one is gone) the
//!   same way. Fd-less messages are typed [`control`] requests. A
//!   connection that sent [`ControlRequest::Observe`] (the IMAP master's)
//!   gets [`ControlReply::Ended`] notices for sessions that end here and is
//!   never handed a session back.
//! - Client descriptors are registered edge-triggered with the epoll; the
//!   epoll token is the session's [`crate::core::SessionKey`]. There is no
//!   per-session task, stream object or timer: a held session costs its
//!   slab entry in [`crate::core::Hibernator`] and the kernel's socket.
//! - Bus events arrive from [`bus_bridge`] (the subscriber on a small tokio
//!   thread) through an eventfd.
//! - The keepalive wheel is turned by the epoll timeout.

pub mod bus_bridge;
pub mod channel;
pub mod control;
pub mod storage_source;
mod deflate_io;
mod tls_io;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::{BusConfig, BusMessage};
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};

use crate::core::{Action, Hibernator, SessionKey, Settings, WatchChange};
use crate::record::HibernationRecord;
use deflate_io::DeflateIo;
use bus_bridge::{BridgeItem, BusBridge};
use channel::{ChannelError, MAX_MESSAGE};
use control::{ControlReply, ControlRequest, CONTROL_VERSION, MAX_WHO};
use storage_source::StorageSource;

/// Errors starting or running the process.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A system call failed.
    #[error("hibernate I/O: {0}")]
    Io(#[from] io::Error),
    /// The bus subscriber could not be opened.
    #[error("hibernate bus: {0}")]
    Bus(#[from] bus::BusError),
}

/// Configuration of one hibernate process.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Index among the hibernate processes (logs, stats).
    pub index: u32,
    /// The seqpacket socket workers connect to.
    pub socket_path: PathBuf,
    /// Where bus events come from.
    pub bus: BusConfig,
    /// Core settings (keepalive interval).
    pub settings: Settings,
    /// Most sessions to hold; 0 = as many as the descriptor limit allows.
    pub max_sessions: usize,
    /// Hooks of the stores this process reads: with outside-change reporting
    /// on, a read that is first to find another program's change publishes it.
    pub store_hooks: storage_hooks::Hooks,
}

/// The client descriptor plus the worker it came from.
#[derive(Debug)]
pub struct ClientHandle {
    fd: OwnedFd,
    worker: u32,
    /// Master session id (for the observers' [`ControlReply::Ended`]).
    session_id: u64,
    /// TLS and compression of the client's stream; `None` (no allocation)
    /// for a plain, uncompressed session.
    layers: Option<Box<Layers>>,
}

/// What sits between the socket and the IMAP bytes: TCP -> TLS -> deflate.
#[derive(Debug, Default)]
struct Layers {
    /// The TLS session's state for [`crate::record::ClientTransport::Tls`]:
    /// this process owns it while it holds the session.
    tls: Option<tls_record::TlsState>,
    /// COMPRESS=DEFLATE is active.
    deflate: Option<DeflateIo>,
}

impl ClientHandle {
    fn new(fd: OwnedFd, worker: u32, session_id: u64, tls: Option<tls_record::TlsState>, deflate: Option<DeflateIo>) -> Self {
        let layers = (tls.is_some() || deflate.is_some()).then(|| Box::new(Layers { tls, deflate }));
        ClientHandle { fd, worker, session_id, layers }
    }

    fn has_tls(&self) -> bool {
        self.layers.as_ref().is_some_and(|l| l.tls.is_some())
    }

    /// The TLS state's slot (callers check [`Self::has_tls`] first, so a
    /// plain session never allocates here).
    fn tls_slot(&mut self) -> &mut Option<tls_record::TlsState> {
        &mut self.layers.get_or_insert_with(Box::default).tls
    }

    fn deflate(&mut self) -> Option<&mut DeflateIo> {
        self.layers.as_mut().and_then(|l| l.deflate.as_mut())
    }

    /// Bytes for the socket are queued in a layer (sealed records, or
    /// compressed bytes the socket did not take).
    fn has_transmit(&self) -> bool {
        self.layers.as_ref().is_some_and(|l| {
            tls_io::has_transmit(&l.tls) || l.deflate.as_ref().is_some_and(|d| d.unsent_len() > 0)
        })
    }

    /// `plain` as it goes on the wire: compressed (stored blocks) if
    /// COMPRESS is active, then sealed over TLS.
    fn wire_bytes(&mut self, plain: &[u8]) -> Vec<u8> {
        let framed = match self.deflate() {
            Some(d) if !plain.is_empty() || d.unsent_len() > 0 => Some(d.frame(plain)),
            _ => None,
        };
        let plain = framed.as_deref().unwrap_or(plain);
        if self.has_tls() {
            tls_io::seal(self.tls_slot(), plain)
        } else {
            plain.to_vec()
        }
    }

    /// The last words: `bye` through the layers, then close_notify over TLS.
    fn farewell_bytes(&mut self, bye: &[u8]) -> Vec<u8> {
        let framed = match self.deflate() {
            Some(d) => d.frame(bye),
            None => bye.to_vec(),
        };
        if self.has_tls() {
            tls_io::farewell(self.tls_slot(), &framed)
        } else {
            framed
        }
    }

    /// Moves the layers' states into a record (the receiver owns them).
    fn layers_into(&mut self, record: &mut HibernationRecord) {
        if let Some(layers) = self.layers.take() {
            record.tls = layers.tls;
            record.deflate = layers.deflate.map(DeflateIo::into_record);
        }
    }

    /// Takes the layers' states back from a record nobody took.
    fn layers_from(&mut self, record: &mut HibernationRecord) {
        let deflate = record.deflate.take().and_then(|d| DeflateIo::from_record(d).ok());
        let tls = record.tls.take();
        self.layers = (tls.is_some() || deflate.is_some()).then(|| Box::new(Layers { tls, deflate }));
    }
}

const LISTENER: u64 = u64::MAX;
const BUS: u64 = u64::MAX - 1;
/// Worker connections use tokens `WORKER_BASE - i`; session keys never
/// reach this range (their generation would have to be ~4 billion).
const WORKER_BASE: u64 = u64::MAX - 2;
const MAX_WORKERS: u64 = 1 << 16;
const READ_CHUNK: usize = 16 * 1024;
/// Descriptors kept free for worker links, the bus, storage reads and logs.
const FD_RESERVE: u64 = 256;
/// Ended session ids kept while no observer is connected (the master
/// connects within a second of our start); older ones are dropped.
const MAX_UNREPORTED_ENDS: usize = 1 << 20;

struct Driver {
    cfg: DriverConfig,
    /// Most sessions held: the descriptor limit minus a reserve, so that a
    /// received descriptor never fails with EMFILE.
    capacity: usize,
    epoll: OwnedFd,
    listener: OwnedFd,
    workers: Vec<Option<OwnedFd>>,
    /// Per worker slot: true if that connection is an observer.
    observers: Vec<bool>,
    /// Per worker slot: true if that worker retired (gets no hand-backs).
    retired: Vec<bool>,
    /// Per worker slot: true once the connection said it is a worker
    /// ([`ControlRequest::Register`] or a session record): only those get
    /// hand-backs, never a control client such as `dormouse stats`.
    registered: Vec<bool>,
    /// Sessions ended here and not yet told to an observer.
    ended: Vec<u64>,
    bus: BusBridge,
    core: Hibernator<StorageSource, ClientHandle>,
    buf: Vec<u8>,
}

/// What a held session is told when the process stops (the same words as
/// the IMAP workers' `imap::server::shutdown::SHUTDOWN_BYE`).
pub const SHUTDOWN_BYE: &[u8] = b"* BYE [UNAVAILABLE] Server shutting down\r\n";

/// Writes [`SHUTDOWN_BYE`] (best effort: the socket is non-blocking and its
/// buffer nearly always has room for one line), sends FIN, and reads what
/// the client had sent: closing a TCP socket with unread input makes the
/// kernel send RST, which can destroy the BYE before the client reads it.
fn say_bye_and_close(handle: ClientHandle) {
    say_and_close(handle, SHUTDOWN_BYE);
}

/// Writes `bye` (sealed, then close_notify, for a TLS session) and closes,
/// as [`say_bye_and_close`] does.
fn say_and_close(mut handle: ClientHandle, bye: &[u8]) {
    let bytes = handle.farewell_bytes(bye);
    let fd = handle.fd;
    let _ = rustix::io::write(&fd, &bytes);
    let _ = rustix::net::shutdown(&fd, rustix::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match rustix::io::read(&fd, &mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs a hibernate process until `stop` is set (checked at least every
/// tick). On return every held client connection is closed.
///
/// # Errors
/// [`DriverError`] if the socket, epoll or bus cannot be set up.
pub fn run(cfg: DriverConfig, stop: Arc<AtomicBool>) -> Result<(), DriverError> {
    run_with_hook(cfg, stop, None)
}

/// Like [`run`], telling `hook` (on the bus thread) of every user
/// subscribed and unsubscribed: the process's Maildir watcher follows the
/// users with hibernated sessions this way.
///
/// # Errors
/// [`DriverError`] if the socket, epoll or bus cannot be set up.
pub fn run_with_hook(
    cfg: DriverConfig,
    stop: Arc<AtomicBool>,
    hook: Option<Arc<dyn bus_bridge::SubscriptionHook>>,
) -> Result<(), DriverError> {
    let bus = BusBridge::start_with_hook(cfg.bus.clone(), hook)?;
    let listener = channel::listen(&cfg.socket_path)?;
    let epoll = epoll::create(CreateFlags::CLOEXEC).map_err(io::Error::from)?;
    epoll::add(&epoll, &listener, EventData::new_u64(LISTENER), EventFlags::IN).map_err(io::Error::from)?;
    epoll::add(&epoll, bus.wake_fd(), EventData::new_u64(BUS), EventFlags::IN).map_err(io::Error::from)?;
    let core = Hibernator::new(cfg.settings, StorageSource::new(cfg.store_hooks.clone()), Instant::now());
    let fd_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    let mut capacity = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    if cfg.max_sessions > 0 {
        capacity = capacity.min(cfg.max_sessions);
    }
    let mut d = Driver { cfg, capacity, epoll, listener, workers: Vec::new(), observers: Vec::new(), retired: Vec::new(), registered: Vec::new(), ended: Vec::new(), bus, core, buf: vec![0u8; MAX_MESSAGE] };
    tracing::info!(index = d.cfg.index, pid = std::process::id(), socket = %d.cfg.socket_path.display(), "hibernate process ready");
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        let wait = d.core.next_tick().saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
        let timeout = rustix::event::Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
        events.clear();
        match epoll::wait(&d.epoll, rustix::buffer::spare_capacity(&mut events), Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(DriverError::Io(e.into())),
        }
        d.core.set_now(Instant::now());
        for ev in &events {
            d.dispatch(ev.data.u64(), ev.flags);
            d.flush();
        }
        d.core.on_tick(Instant::now());
        d.flush();
    }
    let held = d.core.len();
    for h in d.core.drain_all() {
        let _ = epoll::delete(&d.epoll, &h.fd);
        say_bye_and_close(h);
    }
    tracing::info!(index = d.cfg.index, held, "hibernate process stopping; sessions closed with BYE");
    let _ = std::fs::remove_file(&d.cfg.socket_path);
    Ok(())
}

impl Driver {
    fn dispatch(&mut self, token: u64, flags: EventFlags) {
        match token {
            LISTENER => self.accept_workers(),
            BUS => self.bus_messages(),
            t if t <= WORKER_BASE && t > WORKER_BASE - MAX_WORKERS => self.worker_messages((WORKER_BASE - t) as u32),
            t => self.client_ready(SessionKey::from_u64(t), flags),
        }
    }

    fn accept_workers(&mut self) {
        loop {
            match channel::accept(self.listener.as_fd()) {
                Ok(fd) => {
                    let i = self.workers.iter().position(Option::is_none).unwrap_or(self.workers.len());
                    if i as u64 >= MAX_WORKERS {
                        tracing::warn!("too many worker connections; refusing one");
                        continue;
                    }
                    if epoll::add(&self.epoll, &fd, EventData::new_u64(WORKER_BASE - i as u64), EventFlags::IN).is_err() {
                        continue;
                    }
                    if i == self.workers.len() {
                        self.workers.push(Some(fd));
                        self.observers.push(false);
                        self.retired.push(false);
                        self.registered.push(false);
                    } else {
                        self.workers[i] = Some(fd);
                        self.observers[i] = false;
                        self.retired[i] = false;
                        self.registered[i] = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::warn!(error = %e, "refused a connection to the hibernate socket");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept on hibernate socket failed");
                    return;
                }
            }
        }
    }

    fn worker_messages(&mut self, w: u32) {
        loop {
            let Some(Some(fd)) = self.workers.get(w as usize) else { return };
            let received = channel::recv(fd.as_fd(), &mut self.buf);
            match received {
                Ok(m) => self.worker_message(w, m.len, m.fd),
                Err(ChannelError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(ChannelError::Malformed) => {
                    // A truncated message (e.g. the descriptor could not be
                    // installed): that session is lost, the link is fine.
                    tracing::error!(worker = w, "truncated message from a worker; a session was lost");
                }
                Err(e) => {
                    if !matches!(e, ChannelError::Closed) {
                        tracing::warn!(worker = w, error = %e, "worker channel failed");
                    }
                    if let Some(fd) = self.workers[w as usize].take() {
                        let _ = epoll::delete(&self.epoll, &fd);
                    }
                    return;
                }
            }
        }
    }

    fn worker_message(&mut self, w: u32, len: usize, fd: Option<OwnedFd>) {
        let bytes = &self.buf[..len];
        if bytes.first() == Some(&CONTROL_VERSION) {
            let reply = match control::decode::<ControlRequest>(bytes) {
                Ok(ControlRequest::Stats) => ControlReply::Stats {
                    pid: std::process::id(),
                    index: self.cfg.index,
                    workers: self.worker_slots().count() as u32,
                    counters: self.core.counters().clone(),
                    capacity: self.capacity as u64,
                },
                Ok(request @ (ControlRequest::Who | ControlRequest::WhoMatching { .. })) => {
                    let (user, peer) = match request {
                        ControlRequest::WhoMatching { user, peer } => (user, peer),
                        _ => (None, None),
                    };
                    let mut sessions = self.core.session_infos();
                    sessions.retain(|s| user.as_deref().is_none_or(|u| s.user == u) && peer.is_none_or(|p| s.peer.ip() == p));
                    let total = sessions.len() as u64;
                    sessions.truncate(MAX_WHO);
                    ControlReply::Who { sessions, total }
                }
                Ok(ControlRequest::Kick { user, peer }) => ControlReply::Kicked { count: self.kick(user.as_deref(), peer) },
                Ok(ControlRequest::Observe) => {
                    if let Some(o) = self.observers.get_mut(w as usize) {
                        *o = true;
                    }
                    tracing::debug!(connection = w, "observer connected");
                    self.notify_observers();
                    return;
                }
                Ok(ControlRequest::Register) => {
                    if let Some(r) = self.registered.get_mut(w as usize) {
                        *r = true;
                    }
                    return;
                }
                Ok(ControlRequest::Retire) => {
                    if let Some(r) = self.retired.get_mut(w as usize) {
                        *r = true;
                    }
                    tracing::debug!(connection = w, "worker retired; no more hand-backs to it");
                    ControlReply::Retired { index: self.cfg.index }
                }
                Err(_) => return,
            };
            if let Some(Some(ch)) = self.workers.get(w as usize) {
                let _ = channel::send(ch.as_fd(), &control::encode(&reply), None);
            }
            return;
        }
        let Some(fd) = fd else {
            tracing::warn!(worker = w, "session record without a descriptor");
            return;
        };
        // Whoever parks sessions is a worker (also one of a build that
        // does not send Register).
        if let Some(r) = self.registered.get_mut(w as usize) {
            *r = true;
        }
        if self.core.len() >= self.capacity {
            // Full: the session goes straight back, unchanged; the worker
            // keeps serving it.
            self.core.count_refused_full();
            let payload = bytes.to_vec();
            if let Some(Some(ch)) = self.workers.get(w as usize) {
                let full = control::encode(&ControlReply::Full { index: self.cfg.index });
                let _ = channel::send(ch.as_fd(), &full, None);
                if send_blocking(ch.as_fd(), &payload, fd.as_fd()).is_err() {
                    // Not sent back: the state in the record is ours to
                    // seal the BYE with (a TLS client reads only records).
                    let mut handle = ClientHandle::new(fd, w, 0, None, None);
                    if let Ok(mut record) = HibernationRecord::decode(&payload) {
                        handle.layers_from(&mut record);
                    }
                    say_and_close(handle, b"* BYE Server is busy, please reconnect.\r\n");
                }
            }
            return;
        }
        let mut record = match HibernationRecord::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                // Without a valid record the session cannot continue anywhere.
                tracing::error!(worker = w, error = %e, "undecodable hibernation record; closing the client");
                let _ = rustix::io::write(&fd, b"* BYE Internal server error.\r\n");
                return;
            }
        };
        if channel::set_nonblocking(&fd, true).is_err() {
            return;
        }
        let session_id = record.session_id;
        let tls = record.tls.take();
        let deflate = match record.deflate.take().map(DeflateIo::from_record).transpose() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(worker = w, session = session_id, error = %e, "unusable compression state; closing the client");
                return;
            }
        };
        let key = self.core.admit(record, ClientHandle::new(fd, w, session_id, tls, deflate), now_ms());
        if let Some(h) = self.core.handle(key) {
            let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
            if let Err(e) = epoll::add(&self.epoll, &h.fd, EventData::new_u64(key.to_u64()), flags) {
                tracing::error!(session = session_id, error = %e, "cannot register client socket");
                let _ = self.core.client_gone(key);
                self.ended.push(session_id);
            }
        }
    }

    fn bus_messages(&mut self) {
        for item in self.bus.drain() {
            match item {
                BridgeItem::Bus(msg) => match *msg {
                    BusMessage::Event(ev) => {
                        let before = self.core.counters().notifications;
                        self.core.on_event(&ev);
                        if self.core.counters().notifications > before {
                            // Written now (flush below, same tick): change -> client.
                            self.flush();
                            self.core.record_notify_latency(now_ms().saturating_sub(ev.timestamp_ms));
                        }
                    }
                    BusMessage::Resync { user, mailbox, reason } => {
                        tracing::debug!(reason = reason.as_str(), ?user, ?mailbox, "bus resync");
                        self.core.on_resync(user.as_deref(), mailbox.as_deref());
                    }
                },
                BridgeItem::Subscribed(user) => self.core.on_subscribed(&user),
                BridgeItem::Stopped => tracing::error!("bus subscriber stopped; hibernated sessions get no more updates"),
            }
            self.flush();
        }
    }

    fn client_ready(&mut self, key: SessionKey, flags: EventFlags) {
        if flags.intersects(EventFlags::OUT)
            && (self.core.has_output(key) || self.core.handle(key).is_some_and(ClientHandle::has_transmit))
        {
            self.write_out(key);
        }
        if !flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR) {
            return;
        }
        let mut chunk = [0u8; READ_CHUNK];
        while self.core.wants_input(key) {
            let Some(h) = self.core.handle(key) else { return };
            match rustix::io::read(&h.fd, &mut chunk) {
                Ok(0) => {
                    self.drop_client(key);
                    return;
                }
                Ok(n) if h.has_tls() => {
                    if !self.tls_input(key, &chunk[..n]) {
                        return;
                    }
                }
                Ok(n) => {
                    if !self.plain_input(key, &chunk[..n]) {
                        return;
                    }
                    self.flush();
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    self.drop_client(key);
                    return;
                }
            }
        }
    }

    /// Decrypts a TLS session's input and feeds the plaintext to the core;
    /// false if the session ended (close_notify or a record error, answered
    /// with our close_notify or the alert).
    fn tls_input(&mut self, key: SessionKey, raw: &[u8]) -> bool {
        let Some(h) = self.core.handle_mut(key) else { return false };
        let Some(opened) = tls_io::open(h.tls_slot(), raw) else {
            self.drop_client(key);
            return false;
        };
        if !opened.plain.is_empty() && !self.plain_input(key, &opened.plain) {
            return false;
        }
        if opened.peer_closed || opened.failed.is_some() {
            if let Some(e) = &opened.failed {
                tracing::info!(error = %e, "TLS record error from a hibernated client; closing");
            }
            if let Some(h) = self.core.handle_mut(key) {
                // The alert is queued already; after close_notify, ours.
                let bytes = if opened.peer_closed { tls_io::farewell(h.tls_slot(), b"") } else { tls_io::seal(h.tls_slot(), b"") };
                let _ = rustix::io::write(&h.fd, &bytes);
            }
            self.drop_client(key);
            self.flush();
            return false;
        }
        if self.core.handle(key).is_some_and(ClientHandle::has_transmit) {
            // A KeyUpdate answer: out now, not with the next update.
            self.write_out(key);
        }
        self.flush();
        true
    }

    /// Feeds the client's IMAP bytes (decrypted if TLS) to the core,
    /// inflating them first if COMPRESS is active. False if the session
    /// ended: invalid compressed data gets a BYE and a close.
    fn plain_input(&mut self, key: SessionKey, bytes: &[u8]) -> bool {
        let Some(h) = self.core.handle_mut(key) else { return false };
        let Some(d) = h.deflate() else {
            self.core.on_input(key, bytes);
            return true;
        };
        let mut plain = Vec::new();
        match d.inflate(bytes, &mut plain) {
            Ok(()) => {
                if !plain.is_empty() {
                    self.core.on_input(key, &plain);
                }
                true
            }
            Err(e) => {
                let session = h.session_id;
                tracing::info!(session, error = %e, "bad compressed data from a hibernated client; closing");
                if let Some(mut handle) = self.core.client_gone(key) {
                    let _ = epoll::delete(&self.epoll, &handle.fd);
                    self.ended.push(handle.session_id);
                    // The layers stay usable for our side of the stream.
                    let bye = handle.farewell_bytes(b"* BYE Invalid compressed data.\r\n");
                    let _ = rustix::io::write(&handle.fd, &bye);
                    let _ = rustix::net::shutdown(&handle.fd, rustix::net::Shutdown::Write);
                }
                self.flush();
                false
            }
        }
    }

    fn drop_client(&mut self, key: SessionKey) {
        if let Some(h) = self.core.client_gone(key) {
            let _ = epoll::delete(&self.epoll, &h.fd);
            self.ended.push(h.session_id);
        }
    }

    /// Worker connections (not observers).
    fn worker_slots(&self) -> impl Iterator<Item = (usize, &OwnedFd)> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.observers.get(*i).copied().unwrap_or(false))
            .filter_map(|(i, fd)| fd.as_ref().map(|fd| (i, fd)))
    }

    /// Disconnects the held sessions matching both filters with
    /// [`control::KICK_BYE`]; returns how many.
    fn kick(&mut self, user: Option<&str>, peer: Option<std::net::IpAddr>) -> u64 {
        let handles = self.core.take_matching(|s| {
            user.is_none_or(|u| s.user == u) && peer.is_none_or(|p| s.peer.ip() == p)
        });
        let count = handles.len() as u64;
        for h in handles {
            let _ = epoll::delete(&self.epoll, &h.fd);
            self.ended.push(h.session_id);
            say_and_close(h, control::KICK_BYE);
        }
        tracing::info!(index = self.cfg.index, ?user, ?peer, count, "kicked hibernated sessions");
        self.flush();
        count
    }

    /// Tells the observers which sessions ended; keeps the ids while none
    /// is connected or its buffer is full.
    fn notify_observers(&mut self) {
        if self.ended.is_empty() {
            return;
        }
        let observers: Vec<usize> = (0..self.workers.len()).filter(|&i| self.observers[i] && self.workers[i].is_some()).collect();
        if observers.is_empty() {
            if self.ended.len() > MAX_UNREPORTED_ENDS {
                let extra = self.ended.len() - MAX_UNREPORTED_ENDS;
                self.ended.drain(..extra);
            }
            return;
        }
        let mut sent_all = true;
        for chunk in self.ended.chunks(control::MAX_ENDED) {
            let notice = control::encode(&ControlReply::Ended { session_ids: chunk.to_vec() });
            for &i in &observers {
                if let Some(Some(ch)) = self.workers.get(i) {
                    sent_all &= channel::send(ch.as_fd(), &notice, None).is_ok();
                }
            }
        }
        if sent_all {
            self.ended.clear();
        }
    }

    /// Writes what the session has; keeps the rest for EPOLLOUT.
    fn write_out(&mut self, key: SessionKey) {
        if self.core.handle(key).is_some_and(|h| h.layers.is_some()) {
            self.write_out_layered(key);
            return;
        }
        let out = self.core.take_output(key);
        if out.is_empty() {
            self.core.output_flushed(key);
            return;
        }
        let Some(h) = self.core.handle(key) else { return };
        let Ok(written) = write_what_fits(&h.fd, &out) else {
            self.drop_client(key);
            return;
        };
        if written == out.len() {
            self.core.output_flushed(key);
        } else if !self.core.output_blocked(key, &out[written..]) {
            tracing::info!("client does not read its updates; disconnecting");
            self.drop_client(key);
        }
    }

    /// [`Self::write_out`] for a TLS or compressed session: the core's
    /// plaintext is compressed and sealed at once; bytes the socket does not
    /// take wait in the outermost layer's queue (TLS transmit, or the
    /// compressed bytes) and travel with it on a hand-back.
    fn write_out_layered(&mut self, key: SessionKey) {
        let plain = self.core.take_output(key);
        let Some(h) = self.core.handle_mut(key) else { return };
        let out = h.wire_bytes(&plain);
        let Ok(written) = write_what_fits(&h.fd, &out) else {
            self.drop_client(key);
            return;
        };
        if written == out.len() {
            self.core.output_flushed(key);
            return;
        }
        let unsent = if h.has_tls() {
            tls_io::keep_unsent(h.tls_slot(), &out[written..]);
            h.tls_slot().as_ref().map_or(0, |s| s.transmit.len())
        } else {
            let Some(d) = h.deflate() else { return };
            d.keep_unsent(&out[written..]);
            d.unsent_len()
        };
        if unsent > self.cfg.settings.max_output {
            tracing::info!("client does not read its updates; disconnecting");
            self.drop_client(key);
        }
    }

    /// Writes dirty sessions' output and carries out the core's actions.
    fn flush(&mut self) {
        loop {
            let dirty = self.core.take_dirty();
            let actions = self.core.take_actions();
            self.forward_watch_changes(&actions);
            if dirty.is_empty() && actions.is_empty() {
                self.notify_observers();
                return;
            }
            for key in dirty {
                if self.core.has_output(key) || self.core.handle(key).is_some() {
                    self.write_out(key);
                }
            }
            for action in actions {
                match action {
                    Action::Subscribe(user) => self.bus.subscribe(user),
                    Action::Unsubscribe(user) => self.bus.unsubscribe(user),
                    Action::Close { mut handle } => {
                        let _ = epoll::delete(&self.epoll, &handle.fd);
                        if handle.layers.is_some() {
                            let bytes = handle.farewell_bytes(b"");
                            let _ = rustix::io::write(&handle.fd, &bytes);
                        }
                        self.ended.push(handle.session_id);
                    }
                    Action::HandBack { handle, record, reason } => {
                        let _ = epoll::delete(&self.epoll, &handle.fd);
                        self.hand_back(handle, record, reason.as_str());
                    }
                }
            }
        }
    }

    /// Passes the mailboxes that gained or lost their sessions to the bus
    /// thread's hook (the Maildir watcher), before this batch's
    /// subscriptions: a new user's watch is in place when its subscription
    /// takes effect and the core rechecks its state; an already subscribed
    /// user gets a recheck of its own after the watch is added.
    fn forward_watch_changes(&mut self, actions: &[Action<ClientHandle>]) {
        for change in self.core.take_watch_changes() {
            match change {
                WatchChange::Selected { user, mailbox } => {
                    let new_user = actions.iter().any(|a| matches!(a, Action::Subscribe(u) if *u == user));
                    self.bus.mailbox_selected(user, mailbox, !new_user);
                }
                WatchChange::Released { user, mailbox } => self.bus.mailbox_released(user, mailbox),
            }
        }
    }

    /// Sends the session to its worker, or any other connected worker.
    /// The TLS state goes into the record: the receiver owns it from then
    /// on, and this process never seals with it again.
    fn hand_back(&mut self, mut handle: ClientHandle, mut record: Box<HibernationRecord>, reason: &str) {
        handle.layers_into(&mut record);
        let payload = match record.encode() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(session = record.session_id, error = %e, "cannot encode hand-back");
                handle.layers_from(&mut record);
                say_and_close(handle, b"* BYE Internal server error.\r\n");
                return;
            }
        };
        let preferred = handle.worker as usize;
        let order = std::iter::once(preferred).chain((0..self.workers.len()).filter(move |&i| i != preferred));
        for i in order {
            if self.observers.get(i).copied().unwrap_or(false)
                || self.retired.get(i).copied().unwrap_or(false)
                || !self.registered.get(i).copied().unwrap_or(false)
            {
                continue;
            }
            let Some(Some(ch)) = self.workers.get(i) else { continue };
            if send_blocking(ch.as_fd(), &payload, handle.fd.as_fd()).is_ok() {
                tracing::debug!(session = record.session_id, worker = i, reason, "handed back");
                return;
            }
        }
        tracing::error!(session = record.session_id, "no worker to hand the session back to; closing it");
        // Nobody took the state: it is still ours to seal the BYE with.
        handle.layers_from(&mut record);
        self.ended.push(handle.session_id);
        say_and_close(handle, b"* BYE Server is restarting, please reconnect.\r\n");
    }
}

/// Sends on a non-blocking channel, waiting briefly if its buffer is full.
fn send_blocking(ch: BorrowedFd<'_>, payload: &[u8], fd: BorrowedFd<'_>) -> Result<(), ChannelError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match channel::send(ch, payload, Some(fd)) {
            Err(ChannelError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            other => return other,
        }
    }
}

/// Writes as much of `out` as the non-blocking socket takes now; the count
/// written, or `Err` when the socket failed (the client is to be dropped).
fn write_what_fits(fd: &OwnedFd, out: &[u8]) -> Result<usize, rustix::io::Errno> {
    let mut written = 0;
    while written < out.len() {
        match rustix::io::write(fd, &out[written..]) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
