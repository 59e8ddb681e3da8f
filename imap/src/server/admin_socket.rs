//! The master's side of `dormouse who` / `dormouse kick`: the control
//! socket (see [`super::admin`] for the protocol), the table of pre-login
//! sessions, and the questions to the workers over their channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hibernate::driver::channel;
use tokio::sync::{oneshot, watch};

use crate::fd_passing::{FdChannel, MAX_MESSAGE_LEN};

use super::admin::{self, AdminReply, AdminRequest, AdminSession, SessionFilter, SessionState, MAX_ADMIN_ROWS};
use super::master::MasterShared;
use super::worker_report::{WorkerReport, WorkerRequest};

/// How long the master waits for each worker's answer.
const WORKER_ANSWER_WAIT: Duration = Duration::from_secs(3);

/// The pre-login sessions of the master.
#[derive(Debug, Default)]
pub(crate) struct PreloginTable {
    rows: Mutex<HashMap<u64, PreloginRow>>,
}

#[derive(Debug)]
struct PreloginRow {
    peer: SocketAddr,
    tls: bool,
    since_ms: u64,
    kick: watch::Sender<bool>,
}

/// A pre-login session's row; dropping it removes the row.
pub(crate) struct PreloginEntry<'a> {
    table: &'a PreloginTable,
    session_id: u64,
}

impl Drop for PreloginEntry<'_> {
    fn drop(&mut self) {
        self.table.rows().remove(&self.session_id);
    }
}

impl PreloginEntry<'_> {
    /// Notes that the connection now talks TLS (after STARTTLS).
    pub(crate) fn set_tls(&self) {
        if let Some(r) = self.table.rows().get_mut(&self.session_id) {
            r.tls = true;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl PreloginTable {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PreloginRow>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session; the receiver turns true when it is kicked.
    pub(crate) fn register(&self, session_id: u64, peer: SocketAddr, tls: bool) -> (PreloginEntry<'_>, watch::Receiver<bool>) {
        let (kick, kicked) = watch::channel(false);
        self.rows().insert(session_id, PreloginRow { peer, tls, since_ms: now_ms(), kick });
        (PreloginEntry { table: self, session_id }, kicked)
    }

    fn list(&self, filter: &SessionFilter) -> Vec<AdminSession> {
        self.rows()
            .iter()
            .filter(|(_, r)| filter.matches(None, r.peer.ip()))
            .map(|(id, r)| AdminSession {
                session_id: *id,
                user: None,
                peer: r.peer,
                tls: r.tls,
                state: SessionState::PreLogin,
                mailbox: None,
                since_ms: r.since_ms,
                pid: 0,
            })
            .collect()
    }

    fn kick(&self, filter: &SessionFilter) -> u64 {
        let rows = self.rows();
        let mut count = 0;
        for r in rows.values().filter(|r| filter.matches(None, r.peer.ip()) && !*r.kick.borrow()) {
            r.kick.send_replace(true);
            count += 1;
        }
        count
    }
}

/// Workers' answers awaited by number.
#[derive(Debug, Default)]
pub(crate) struct WorkerReplies {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<WorkerReport>>>,
}

impl WorkerReplies {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<WorkerReport>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a worker's answer to whoever waits for it (late ones are dropped).
    pub(crate) fn deliver(&self, request: u64, report: WorkerReport) {
        if let Some(tx) = self.waiting().remove(&request) {
            let _ = tx.send(report);
        }
    }
}

/// Asks every live worker; returns (worker pid, answer) and how many did
/// not answer within [`WORKER_ANSWER_WAIT`] (one wait for all of them).
async fn ask_workers(shared: &MasterShared, make: impl Fn(u64) -> WorkerRequest) -> (Vec<(u32, WorkerReport)>, u32) {
    ask_workers_within(shared, make, WORKER_ANSWER_WAIT).await
}

/// [`ask_workers`] with another wait.
pub(crate) async fn ask_workers_within(
    shared: &MasterShared,
    make: impl Fn(u64) -> WorkerRequest,
    wait: Duration,
) -> (Vec<(u32, WorkerReport)>, u32) {
    let mut asked = Vec::new();
    for link in shared.pool.links() {
        let request = shared.worker_replies.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        shared.worker_replies.waiting().insert(request, tx);
        if let Err(e) = link.channel.send(&make(request).encode(), None).await {
            tracing::warn!(worker = link.index, error = %e, "cannot ask the worker");
            shared.worker_replies.waiting().remove(&request);
            continue;
        }
        asked.push((link.pid, request, rx));
    }
    let mut answers = Vec::new();
    let mut silent = 0;
    // One deadline for all: the workers answer in parallel.
    let deadline = tokio::time::Instant::now() + wait;
    for (pid, request, rx) in asked {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(report)) => answers.push((pid, report)),
            _ => {
                shared.worker_replies.waiting().remove(&request);
                silent += 1;
            }
        }
    }
    (answers, silent)
}

async fn answer(shared: &MasterShared, request: AdminRequest) -> AdminReply {
    match request {
        AdminRequest::Who(filter) => {
            let mut sessions = shared.prelogin_table.list(&filter);
            let mut more = 0;
            let SessionFilter { user, peer } = filter.clone();
            let (answers, silent_workers) =
                ask_workers(shared, |request| WorkerRequest::List { request, user: user.clone(), peer }).await;
            for (pid, report) in answers {
                let WorkerReport::Sessions { sessions: live, total, .. } = report else { continue };
                more += total.saturating_sub(live.len() as u64);
                sessions.extend(live.into_iter().filter(|s| filter.matches(Some(&s.user), s.peer.ip())).map(|s| AdminSession {
                    session_id: s.session_id,
                    user: Some(s.user),
                    peer: s.peer,
                    tls: s.tls,
                    state: if s.idle { SessionState::Idle } else { SessionState::Live },
                    mailbox: s.mailbox,
                    since_ms: s.since_ms,
                    pid,
                }));
            }
            if sessions.len() > MAX_ADMIN_ROWS {
                more += (sessions.len() - MAX_ADMIN_ROWS) as u64;
                sessions.truncate(MAX_ADMIN_ROWS);
            }
            AdminReply::Sessions { sessions, more, silent_workers }
        }
        AdminRequest::Kick(filter) => {
            let mut count = shared.prelogin_table.kick(&filter);
            let SessionFilter { user, peer } = filter.clone();
            let (answers, silent_workers) =
                ask_workers(shared, |request| WorkerRequest::Kick { request, user: user.clone(), peer }).await;
            count += answers.iter().map(|(_, r)| if let WorkerReport::Kicked { count, .. } = r { *count } else { 0 }).sum::<u64>();
            tracing::info!(user = ?filter.user, peer = ?filter.peer, count, "kick (pre-login and workers)");
            AdminReply::Kicked { count, silent_workers }
        }
    }
}

/// Serves the control socket at `path` until the task is dropped.
pub(crate) async fn serve(shared: Arc<MasterShared>, path: PathBuf) {
    // tokio's UNIX listener accepts on a seqpacket socket as well (accept(2)
    // does not care about the type); each connection becomes an FdChannel.
    let listener = match channel::listen(&path)
        .and_then(|fd| tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd)))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the master control socket; `dormouse who` and `kick` will not work");
            return;
        }
    };
    tracing::debug!(path = %path.display(), "master control socket ready");
    let _remove = RemoveOnDrop::new(path);
    loop {
        let accepted = listener.accept().await.and_then(|(stream, _)| stream.into_std()).map(OwnedFd::from);
        match accepted.and_then(own_user) {
            Ok(fd) => {
                tokio::spawn(serve_connection(shared.clone(), fd));
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a connection to the master control socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Keeps `fd` only if its peer runs as our user (the socket is 0600 too).
fn own_user(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let peer = rustix::net::sockopt::socket_peercred(&fd)?;
    if peer.uid != rustix::process::getuid() {
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "peer of another user"));
    }
    Ok(fd)
}

/// Removes the socket file when dropped, unless it is no longer ours (the
/// next generation of a restart has bound its own at the same path).
struct RemoveOnDrop(PathBuf, Option<(u64, u64)>);

impl RemoveOnDrop {
    fn new(path: PathBuf) -> Self {
        let id = file_id(&path);
        Self(path, id)
    }
}

fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.1.is_some() && file_id(&self.0) == self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn serve_connection(shared: Arc<MasterShared>, fd: OwnedFd) {
    let Ok(link) = FdChannel::new(fd) else { return };
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    while let Ok(received) = link.recv(&mut buf).await {
        let request = match admin::decode::<AdminRequest>(&buf[..received.len]) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "bad request on the master control socket");
                return;
            }
        };
        let reply = answer(&shared, request).await;
        if link.send(&admin::encode(&reply), None).await.is_err() {
            return;
        }
    }
}
