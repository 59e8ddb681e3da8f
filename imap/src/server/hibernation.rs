//! The worker's side of hibernation: parking quiet sessions in a hibernate
//! process and taking them back.
//!
//! A worker connects lazily to each hibernate process's `SOCK_SEQPACKET`
//! socket (`hibernate-<i>.sock` in the run directory). A session is parked
//! when it has been in IDLE for [`HibernationSettings::timeout`] or has sent
//! no command for [`HibernationSettings::idle_after`] and
//! [`Session::hibernation_state`] allows it: the worker sends a
//! [`HibernationRecord`] with the client descriptor (`SCM_RIGHTS`) and
//! forgets the session. Hand-backs arrive on the same connection (record +
//! descriptor) and are resumed with [`Session::resume_hibernated`]; see
//! [`super::worker`]. Sessions that cannot be parked stay and are counted
//! by reason. A process that is full says so (`Full`) and hands the
//! session back; it is then skipped for [`FULL_BACKOFF`], and sockets of
//! processes not started yet (auto mode) are skipped at connect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hibernate::record::{ClientTransport, Extensions, HibernationRecord, SelectedView};

use crate::fd_passing::FdChannel;
use crate::handover::Transport;
use super::client_stream::ClientStream;
use super::deflate_layer::DeflateLayer;
use crate::session::{Session, EnabledExtensions, HibernatedView, HibernationState, NotHibernatable};

/// How long a worker skips a hibernate process that said it is full
/// (sessions freed there meanwhile are used again after this).
pub const FULL_BACKOFF: Duration = Duration::from_secs(30);

/// When and where to park sessions.
#[derive(Debug, Clone)]
pub struct HibernationSettings {
    /// Time in IDLE before a session is parked.
    pub timeout: Duration,
    /// Time without a command before a non-IDLE session is parked.
    pub idle_after: Duration,
    /// Sockets of the hibernate processes.
    pub sockets: Vec<PathBuf>,
}

/// Facts about the connection that the session itself does not know.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts {
    /// Master session id.
    pub session_id: u64,
    /// Client address.
    pub peer: SocketAddr,
    /// Local address.
    pub local: SocketAddr,
    /// How the descriptor carries the client's bytes.
    pub transport: Transport,
    /// Login time (ms since the UNIX epoch).
    pub authenticated_at_ms: u64,
}

/// Connections to the hibernate processes and the worker's counters.
#[derive(Debug)]
pub struct HibernateLinks {
    settings: HibernationSettings,
    links: Mutex<Vec<Option<Arc<FdChannel>>>>,
    /// Per process: skip it until then (it said it is full).
    full_until: Mutex<Vec<Option<Instant>>>,
    hibernated: AtomicU64,
    refused: Mutex<HashMap<&'static str, u64>>,
}

/// Builds the record for `state` on the connection `facts`.
pub fn record_from_state(state: HibernationState, facts: &ConnectionFacts) -> HibernationRecord {
    HibernationRecord {
        session_id: facts.session_id,
        user: state.user,
        maildir: state.maildir,
        peer: facts.peer,
        local: facts.local,
        transport: match facts.transport {
            Transport::PlainTcp => ClientTransport::PlainTcp,
            Transport::Tls { implicit } => ClientTransport::Tls { implicit },
            Transport::TlsProxied { implicit } => ClientTransport::TlsProxied { implicit },
        },
        authenticated_at_ms: facts.authenticated_at_ms,
        enabled: Extensions { condstore: state.enabled.condstore, qresync: state.enabled.qresync },
        idle_tag: state.idle_tag,
        selected: state.selected.map(|v| SelectedView {
            mailbox: v.mailbox,
            read_only: v.read_only,
            uidvalidity: v.uidvalidity,
            uids: v.uids,
            highest_modseq_seen: v.highest_modseq_seen,
        }),
        pending_input: state.pending_input,
        // Set by the parker, which owns the streams.
        tls: None,
        notify: state.notify,
        deflate: None,
    }
}

/// What a handed-back record holds for the connection's layers.
#[derive(Debug)]
pub struct Layers {
    /// The TLS state (for [`Transport::Tls`]).
    pub tls: Option<tls_record::TlsState>,
    /// The compressed streams' state, if COMPRESS is active.
    pub deflate: Option<hibernate::record::DeflateState>,
}

/// Splits a handed-back record into the session state, the connection
/// facts and the layers' states.
pub fn state_from_record(mut record: HibernationRecord) -> (HibernationState, ConnectionFacts, Layers) {
    let layers = Layers { tls: record.tls.take(), deflate: record.deflate.take() };
    let transport = match record.transport {
        ClientTransport::PlainTcp => Transport::PlainTcp,
        ClientTransport::Tls { implicit } => Transport::Tls { implicit },
        ClientTransport::TlsProxied { implicit } => Transport::TlsProxied { implicit },
    };
    let facts = ConnectionFacts {
        session_id: record.session_id,
        peer: record.peer,
        local: record.local,
        transport,
        authenticated_at_ms: record.authenticated_at_ms,
    };
    let state = HibernationState {
        user: record.user,
        maildir: record.maildir,
        enabled: EnabledExtensions { condstore: record.enabled.condstore, qresync: record.enabled.qresync },
        tls_active: transport.is_tls(),
        idle_tag: record.idle_tag,
        selected: record.selected.map(|v| HibernatedView {
            mailbox: v.mailbox,
            read_only: v.read_only,
            uidvalidity: v.uidvalidity,
            uids: v.uids,
            highest_modseq_seen: v.highest_modseq_seen,
        }),
        pending_input: record.pending_input,
        notify: record.notify,
        compressed: layers.deflate.is_some(),
    };
    (state, facts, layers)
}

/// Why parking failed.
#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    /// No hibernate process accepted the session.
    #[error("no hibernate process reachable")]
    Unreachable,
    /// The record is too large (huge view or input).
    #[error("hibernation record: {0}")]
    Record(#[from] hibernate::record::RecordError),
}

impl HibernateLinks {
    /// Links for `settings` (nothing is connected yet).
    pub fn new(settings: HibernationSettings) -> Arc<Self> {
        let n = settings.sockets.len();
        Arc::new(HibernateLinks {
            settings,
            links: Mutex::new(vec![None; n]),
            full_until: Mutex::new(vec![None; n]),
            hibernated: AtomicU64::new(0),
            refused: Mutex::new(HashMap::new()),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &HibernationSettings {
        &self.settings
    }

    /// Counts a session that could not be parked.
    pub fn count_refusal(&self, reason: NotHibernatable) {
        let name = match reason {
            NotHibernatable::NotAuthenticated => "not-authenticated",
            NotHibernatable::PendingOutput => "pending-output",
            NotHibernatable::PendingExpunges => "pending-expunges",
            NotHibernatable::LiteralInProgress => "literal-in-progress",
            NotHibernatable::ChangesPending => "changes-pending",
            NotHibernatable::SavedSearch => "saved-search",
            NotHibernatable::Closed => "closed",
            NotHibernatable::NotifyFetch => "notify-fetch",
        };
        self.count_refusal_named(name);
    }

    /// Counts a session that could not be parked for a reason of the
    /// connection's layers (not the session's).
    pub fn count_refusal_named(&self, name: &'static str) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(name).or_default() += 1;
        }
    }

    /// Sessions parked so far, and refusals by reason.
    pub fn counts(&self) -> (u64, Vec<(&'static str, u64)>) {
        let refused = self.refused.lock().map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default();
        (self.hibernated.load(Ordering::Relaxed), refused)
    }

    /// Connects to process `i` if not connected; `on_new` is called with a
    /// new link (the worker starts its hand-back receiver there).
    fn link(&self, i: usize, on_new: &OnNewLink) -> Option<Arc<FdChannel>> {
        let mut links = self.links.lock().ok()?;
        if let Some(l) = links.get(i)?.clone() {
            return Some(l);
        }
        let path = self.settings.sockets.get(i)?;
        let fd = hibernate::driver::channel::connect(path).ok()?;
        // First: hand-backs come only to connections that say they are a worker.
        let register = hibernate::driver::control::encode(&hibernate::driver::control::ControlRequest::Register);
        hibernate::driver::channel::send(fd.as_fd(), &register, None).ok()?;
        let channel = Arc::new(FdChannel::new(fd).ok()?);
        links[i] = Some(channel.clone());
        on_new(channel.clone());
        Some(channel)
    }

    /// Connects to every hibernate process whose socket exists now, so that
    /// sessions parked by another worker (one that stopped, or the previous
    /// generation's in a restart) can be handed back here. Returns how many
    /// links are up.
    pub fn connect_existing(&self, on_new: &OnNewLink) -> usize {
        (0..self.settings.sockets.len())
            .filter(|&i| self.settings.sockets[i].exists() && self.link(i, on_new).is_some())
            .count()
    }

    /// The links connected now.
    pub fn connected(&self) -> Vec<Arc<FdChannel>> {
        self.links.lock().map(|l| l.iter().flatten().cloned().collect()).unwrap_or_default()
    }

    /// Forgets a broken link (its hibernate process died).
    pub fn drop_link(&self, channel: &Arc<FdChannel>) {
        if let Ok(mut links) = self.links.lock() {
            for l in links.iter_mut() {
                if l.as_ref().is_some_and(|c| Arc::ptr_eq(c, channel)) {
                    *l = None;
                }
            }
        }
    }

    /// Notes that the process behind `channel` refused a session because it
    /// is full: [`Self::park`] skips it for [`FULL_BACKOFF`] (or twice the
    /// hibernation timeout if longer), so retries go to processes with room
    /// (in `processes = "auto"` the master starts one when all are full).
    pub fn mark_full(&self, channel: &Arc<FdChannel>) {
        let Some(i) = self.index_of(channel) else { return };
        let backoff = (self.settings.timeout * 2).max(FULL_BACKOFF);
        if let Ok(mut full) = self.full_until.lock() {
            if let Some(slot) = full.get_mut(i) {
                *slot = Some(Instant::now() + backoff);
            }
        }
    }

    fn index_of(&self, channel: &Arc<FdChannel>) -> Option<usize> {
        let links = self.links.lock().ok()?;
        links.iter().position(|l| l.as_ref().is_some_and(|c| Arc::ptr_eq(c, channel)))
    }

    fn is_full(&self, i: usize) -> bool {
        self.full_until
            .lock()
            .ok()
            .and_then(|full| full.get(i).copied().flatten())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Sends the session to a hibernate process (preferring the user's
    /// process, [`preferred_process`], then the next ones, skipping missing
    /// sockets and processes that recently said they are full). On success (the index of the process
    /// that took it) the caller drops its copy of the descriptor and forgets
    /// the session.
    ///
    /// # Errors
    /// [`ParkError`]; the session then stays in the worker.
    pub async fn park(
        &self,
        record: &HibernationRecord,
        client: BorrowedFd<'_>,
        on_new: &OnNewLink,
    ) -> Result<u32, ParkError> {
        let payload = record.encode()?;
        let n = self.settings.sockets.len();
        if n == 0 {
            return Err(ParkError::Unreachable);
        }
        let first = preferred_process(&record.user, n);
        for k in 0..n {
            let i = (first + k) % n;
            if self.is_full(i) {
                continue;
            }
            let Some(link) = self.link(i, on_new) else { continue };
            match link.send(&payload, Some(client)).await {
                Ok(()) => {
                    self.hibernated.fetch_add(1, Ordering::Relaxed);
                    return Ok(i as u32);
                }
                Err(e) => {
                    tracing::warn!(process = i, error = %e, "cannot send a session to the hibernate process");
                    self.drop_link(&link);
                }
            }
        }
        Err(ParkError::Unreachable)
    }
}

/// The hibernate process (of `n`) a user's sessions go to first. All
/// sessions of a user in one process share its per-user state there: one
/// bus subscription, one cached view per mailbox, and one set of Maildir
/// watches (each pins an inode and dentry in the kernel); spread over the
/// processes by session, a user with two sessions cost all of it twice.
/// FNV-1a: stable across processes and restarts (std's hasher is not
/// promised to be), and the spread of user names needs nothing stronger.
pub fn preferred_process(user: &str, n: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % n.max(1) as u64) as usize
}

/// A received hand-back: the record and the client descriptor.
pub type HandBack = (HibernationRecord, OwnedFd);

/// Called with every newly connected link (starts its hand-back receiver).
pub type OnNewLink = dyn Fn(Arc<FdChannel>) + Send + Sync;

/// What [`super::session_driver::drive`] needs to park a session.
pub struct Parking<'a> {
    /// The links to the hibernate processes.
    pub links: &'a HibernateLinks,
    /// The connection's facts for the record.
    pub facts: ConnectionFacts,
    /// Hook for new links.
    pub on_new: &'a OnNewLink,
}

impl std::fmt::Debug for Parking<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking").field("facts", &self.facts).finish_non_exhaustive()
    }
}

impl Parking<'_> {
    /// Parks the session if it is quiescent; the index of the hibernate
    /// process that took it (the caller then drops the session and its
    /// stream), or `None`.
    pub async fn try_park(&self, session: &Session, stream: &ClientStream, deflate: Option<&DeflateLayer>) -> Option<u32> {
        let state = match session.hibernation_state() {
            Ok(s) => s,
            Err(reason) => {
                self.links.count_refusal(reason);
                return None;
            }
        };
        let mut record = record_from_state(state, &self.facts);
        if let Some(d) = deflate {
            match d.park_state() {
                Some(state) => record.deflate = Some(state),
                None => {
                    // The client's stream is between two block boundaries:
                    // only the whole inflater could continue it.
                    self.links.count_refusal_named("compression-mid-block");
                    return None;
                }
            }
        }
        let fd = match stream {
            ClientStream::Tcp(s) => s.as_fd(),
            ClientStream::Unix(s) => s.as_fd(),
            ClientStream::Tls(t) => {
                // A copy: if no process takes it, this worker goes on with
                // the state it still owns; if one does, the caller drops
                // the stream unused. Decrypted input not read yet: not
                // quiescent; the next loop turn reads it.
                record.tls = Some(t.state_for_handover()?);
                t.tcp().as_fd()
            }
        };
        match self.links.park(&record, fd, self.on_new).await {
            Ok(process) => Some(process),
            Err(e) => {
                tracing::debug!(session = self.facts.session_id, error = %e, "session not parked");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preferred_process;

    #[test]
    fn a_users_sessions_go_to_one_process_and_users_spread_evenly() {
        assert_eq!(preferred_process("u17", 4), preferred_process("u17", 4));
        let mut counts = [0usize; 4];
        for u in 1..=10_000 {
            counts[preferred_process(&format!("u{u}"), 4)] += 1;
        }
        for c in counts {
            assert!((2_000..=3_000).contains(&c), "{counts:?}");
        }
        assert_eq!(preferred_process("anyone", 1), 0);
    }
}
