//! The master's table of worker processes and of the sessions handed to them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::fd_passing::{FdChannel, FdPassingError};
use crate::handover::{Handover, HandoverError};

/// How long a hand-over waits for a worker while all are restarting.
pub const WORKER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A live worker as the master sees it.
#[derive(Debug)]
pub struct WorkerLink {
    /// Slot number (0-based).
    pub index: usize,
    /// Process id.
    pub pid: u32,
    /// The master's end of the worker's channel.
    pub channel: FdChannel,
}

/// Where a session handed to a worker is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Served by this worker slot.
    Worker(usize),
    /// Parked in this hibernate process.
    Hibernate(u32),
}

/// A session living in a worker or a hibernate process, as the master
/// tracks it: it counts toward the limits until it really ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// Who holds it.
    pub location: Location,
    /// Hand-backs reported before the park they follow (reports of one
    /// worker come in order, but a worker's "parked" can lag behind its
    /// own "resumed"): that many later "parked" reports are stale.
    resumes_ahead: u32,
    /// The user (counted against the per-user limit).
    pub user: String,
    /// The client's IP (counted against the per-IP limit).
    pub ip: IpAddr,
}

/// Why a hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum HandOverFailed {
    /// No worker is running right now (all restarting).
    #[error("no IMAP worker is running")]
    NoWorker,
    /// Encoding the record failed.
    #[error(transparent)]
    Record(#[from] HandoverError),
    /// Sending to the worker failed.
    #[error(transparent)]
    Send(#[from] FdPassingError),
}

/// Worker slots plus the sessions handed to each.
#[derive(Debug)]
pub struct WorkerPool {
    slots: Vec<Mutex<Option<Arc<WorkerLink>>>>,
    next: AtomicUsize,
    sessions: Mutex<HashMap<u64, SessionEntry>>,
}

impl WorkerPool {
    /// A pool with `count` empty slots.
    pub fn new(count: usize) -> Self {
        Self {
            slots: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false (a pool has at least one slot).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Marks slot `index` as served by `link` (or empty with `None`).
    pub fn set(&self, index: usize, link: Option<Arc<WorkerLink>>) {
        if let Some(slot) = self.slots.get(index) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = link;
        }
    }

    /// The next live worker, round robin.
    pub fn pick(&self) -> Option<Arc<WorkerLink>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| self.slots[(start + i) % n].lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Like [`WorkerPool::pick`], but waits up to [`WORKER_WAIT`] for a
    /// worker that is being (re)started.
    async fn pick_waiting(&self) -> Option<Arc<WorkerLink>> {
        let give_up = tokio::time::Instant::now() + WORKER_WAIT;
        loop {
            if let Some(link) = self.pick() {
                return Some(link);
            }
            if tokio::time::Instant::now() >= give_up {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `record` with the client's descriptor `fd` to a worker and
    /// records the session. Returns the worker's slot.
    ///
    /// # Errors
    /// [`HandOverFailed`]; the session is not recorded then.
    pub async fn hand_over(&self, record: &Handover, fd: BorrowedFd<'_>, ip: IpAddr) -> Result<usize, HandOverFailed> {
        let bytes = record.encode()?;
        let link = self.pick_waiting().await.ok_or(HandOverFailed::NoWorker)?;
        let entry =
            SessionEntry { location: Location::Worker(link.index), resumes_ahead: 0, user: record.session.user.clone(), ip };
        self.sessions().insert(record.session_id, entry);
        if let Err(e) = link.channel.send(&bytes, Some(fd)).await {
            self.sessions().remove(&record.session_id);
            return Err(e.into());
        }
        Ok(link.index)
    }

    /// Forgets a session the worker reported as ended.
    pub fn session_ended(&self, session_id: u64) -> Option<SessionEntry> {
        self.sessions().remove(&session_id)
    }

    /// Worker `worker` parked the session in hibernate process `process`.
    /// Ignored if the session is gone or already back in another worker.
    pub fn session_parked(&self, session_id: u64, worker: usize, process: u32) {
        let mut sessions = self.sessions();
        let Some(entry) = sessions.get_mut(&session_id) else { return };
        if entry.location != Location::Worker(worker) {
            return;
        }
        if entry.resumes_ahead > 0 {
            entry.resumes_ahead -= 1;
        } else {
            entry.location = Location::Hibernate(process);
        }
    }

    /// The session came back from hibernation to worker `worker`.
    pub fn session_resumed(&self, session_id: u64, worker: usize) {
        let mut sessions = self.sessions();
        let Some(entry) = sessions.get_mut(&session_id) else { return };
        if entry.location == Location::Worker(worker) {
            // Our "parked" is still on its way.
            entry.resumes_ahead += 1;
        } else {
            entry.location = Location::Worker(worker);
            entry.resumes_ahead = 0;
        }
    }

    /// Forgets (and returns) every session of a worker that died.
    pub fn worker_gone(&self, index: usize) -> Vec<SessionEntry> {
        self.take_where(Location::Worker(index))
    }

    /// Forgets (and returns) every session parked in a hibernate process
    /// that died.
    pub fn hibernate_gone(&self, process: u32) -> Vec<SessionEntry> {
        self.take_where(Location::Hibernate(process))
    }

    fn take_where(&self, location: Location) -> Vec<SessionEntry> {
        let mut sessions = self.sessions();
        let lost: Vec<u64> = sessions.iter().filter(|(_, e)| e.location == location).map(|(id, _)| *id).collect();
        lost.iter().filter_map(|id| sessions.remove(id)).collect()
    }

    /// Sessions counted now: (in workers, in hibernate processes).
    pub fn session_counts(&self) -> (usize, usize) {
        let sessions = self.sessions();
        let parked = sessions.values().filter(|e| matches!(e.location, Location::Hibernate(_))).count();
        (sessions.len() - parked, parked)
    }

    /// The live workers.
    pub fn links(&self) -> Vec<Arc<WorkerLink>> {
        self.slots.iter().filter_map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }

    /// Sessions currently handed to workers (also those parked since).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Process ids of the live workers.
    pub fn pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.pid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd_passing::seqpacket_pair;
    use crate::handover::Transport;
    use crate::session::{EnabledExtensions, HandOver};
    use std::os::fd::AsFd;

    fn record(id: u64) -> Handover {
        Handover {
            session_id: id,
            peer: "127.0.0.1:40000".parse().unwrap(),
            local: "127.0.0.1:1143".parse().unwrap(),
            transport: Transport::PlainTcp,
            tls: None,
            authenticated_at_ms: 0,
            session: HandOver {
                user: "alice".into(),
                maildir: "/tmp/x".into(),
                enabled: EnabledExtensions::default(),
                tls_active: false,
                pending_input: Vec::new(),
            },
        }
    }

    #[tokio::test]
    async fn hands_over_round_robin_and_forgets_dead_workers() {
        let pool = WorkerPool::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (client, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(pool.hand_over(&record(1), client.as_fd(), ip).await, Err(HandOverFailed::NoWorker)));

        let (m0, w0) = seqpacket_pair().unwrap();
        let (m1, w1) = seqpacket_pair().unwrap();
        pool.set(0, Some(Arc::new(WorkerLink { index: 0, pid: 10, channel: FdChannel::new(m0).unwrap() })));
        pool.set(1, Some(Arc::new(WorkerLink { index: 1, pid: 11, channel: FdChannel::new(m1).unwrap() })));
        let a = pool.hand_over(&record(1), client.as_fd(), ip).await.unwrap();
        let b = pool.hand_over(&record(2), client.as_fd(), ip).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.session_count(), 2);
        let mut pids = pool.pids();
        pids.sort_unstable();
        assert_eq!(pids, vec![10, 11]);

        // Each worker end got one record with a descriptor.
        for w in [&w0, &w1] {
            let mut buf = vec![0u8; 4096];
            let got = crate::fd_passing::recv_message(w.as_fd(), &mut buf).unwrap();
            assert!(got.fd.is_some());
            Handover::decode(&buf[..got.len]).unwrap();
        }

        assert_eq!(pool.session_ended(1).map(|e| e.user), Some("alice".into()));
        assert_eq!(pool.session_ended(1), None);
        pool.set(b, None);
        assert_eq!(pool.worker_gone(b).len(), 1);
        assert_eq!(pool.session_count(), 0);
        assert_eq!(pool.hand_over(&record(3), client.as_fd(), ip).await.unwrap(), a);
    }

    #[tokio::test]
    async fn parked_sessions_survive_their_worker_and_go_with_their_hibernate_process() {
        let pool = WorkerPool::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (client, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let (m0, _w0) = seqpacket_pair().unwrap();
        pool.set(0, Some(Arc::new(WorkerLink { index: 0, pid: 10, channel: FdChannel::new(m0).unwrap() })));
        for id in 1..=3 {
            assert_eq!(pool.hand_over(&record(id), client.as_fd(), ip).await.unwrap(), 0);
        }
        pool.session_parked(1, 0, 0);
        pool.session_parked(2, 0, 1);
        // 3: worker 0's "resumed" overtakes its "parked": it stays in worker 0.
        pool.session_resumed(3, 0);
        pool.session_parked(3, 0, 0);
        assert_eq!(pool.session_counts(), (1, 2));
        // A stale "parked" from a worker that no longer holds it is ignored.
        pool.session_resumed(2, 1);
        pool.session_parked(2, 0, 1);
        assert_eq!(pool.session_counts(), (2, 1));

        assert_eq!(pool.worker_gone(0).len(), 1, "only session 3 was in worker 0");
        assert_eq!(pool.hibernate_gone(1).len(), 0);
        assert_eq!(pool.hibernate_gone(0).len(), 1);
        assert_eq!(pool.worker_gone(1).len(), 1);
        assert_eq!(pool.session_count(), 0);
    }
}
