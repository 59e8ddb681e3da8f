//! What the master counts for the metrics endpoint: logins, hand-overs to
//! workers, TLS proxies, worker restarts. The binary turns a
//! [`MasterMetricsSnapshot`] into OpenMetrics text, next to what it asks the
//! hibernate processes and the LMTP server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::master::MasterShared;


/// A reader of the master's counts, valid while the master runs (and after:
/// it then reports the last values).
#[derive(Clone)]
pub struct MasterMetrics {
    shared: Arc<MasterShared>,
}

impl std::fmt::Debug for MasterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterMetrics").finish_non_exhaustive()
    }
}

/// The master's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MasterMetricsSnapshot {
    /// Connections not logged in yet (greeting, STARTTLS, LOGIN in progress).
    pub pre_login: u64,
    /// Sessions a worker serves now (not counting hibernated ones).
    pub in_workers: u64,
    /// TLS sessions whose records the master relays to a worker now.
    pub tls_proxies_open: u64,
    /// Connections accepted since start.
    pub connections: u64,
    /// Successful logins since start.
    pub logins_ok: u64,
    /// Failed logins (wrong user or password) since start.
    pub logins_failed: u64,
    /// Sessions handed to a worker over plain TCP.
    pub handed_over_plain: u64,
    /// TLS 1.3 sessions handed to a worker with their TLS state (the
    /// worker runs the record layer; the master keeps nothing).
    pub handed_over_tls: u64,
    /// TLS sessions (1.2) the master keeps terminating and relays to a worker.
    pub handed_over_tls_proxied: u64,
    /// Hand-overs that failed (no worker, socket error).
    pub handover_failures: u64,
    /// Workers that exited unexpectedly and were restarted.
    pub worker_restarts: u64,
    /// Sessions that ended because their worker died.
    pub worker_sessions_lost: u64,
    /// Bytes the master read from clients (pre-login and TLS relay).
    pub bytes_in: u64,
    /// Bytes the master wrote to clients (pre-login and TLS relay).
    pub bytes_out: u64,
}

impl MasterMetrics {
    pub(crate) fn new(shared: Arc<MasterShared>) -> Self {
        Self { shared }
    }

    /// The counts now.
    pub fn snapshot(&self) -> MasterMetricsSnapshot {
        let s = &self.shared;
        let c = &s.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters = s.counters.snapshot();
        MasterMetricsSnapshot {
            pre_login: counters.sessions_open,
            in_workers: s.pool.session_counts().0 as u64,
            tls_proxies_open: s.tls_proxies.get() as u64,
            connections: counters.sessions_total,
            logins_ok: load(&c.logins_ok),
            logins_failed: load(&c.logins_failed),
            handed_over_plain: load(&c.handed_over_plain),
            handed_over_tls: load(&c.handed_over_tls),
            handed_over_tls_proxied: load(&c.handed_over_tls_proxied),
            handover_failures: load(&c.handover_failures),
            worker_restarts: load(&c.worker_restarts),
            worker_sessions_lost: load(&c.worker_sessions_lost),
            bytes_in: counters.bytes_in,
            bytes_out: counters.bytes_out,
        }
    }
}
