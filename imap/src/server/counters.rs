//! Per-process activity counters (sessions, commands, bytes), logged
//! periodically, on SIGUSR1 and at shutdown.
//!
//! In a worker: its sessions, the commands they completed, client bytes.
//! In the master: pre-login connections (`sessions_open` = connections not
//! yet handed over), pre-login commands, and client bytes of pre-login plus
//! those relayed by finished TLS proxies (added when a proxy ends).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by all sessions of one process. Relaxed atomics: the
/// numbers are for operators, not for synchronization.
#[derive(Debug, Default)]
pub struct Counters {
    sessions_open: AtomicU64,
    sessions_total: AtomicU64,
    commands: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    /// Sessions open now.
    pub sessions_open: u64,
    /// Sessions started since the process started.
    pub sessions_total: u64,
    /// Commands processed.
    pub commands: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

/// Counts only the master keeps (logins, hand-overs, TLS relays, worker
/// restarts); read through `MasterMetrics` (the metrics module).
#[derive(Debug, Default)]
pub(crate) struct MasterCounts {
    pub(crate) logins_ok: AtomicU64,
    pub(crate) logins_failed: AtomicU64,
    pub(crate) handed_over_plain: AtomicU64,
    pub(crate) handed_over_tls: AtomicU64,
    pub(crate) handed_over_tls_proxied: AtomicU64,
    pub(crate) handover_failures: AtomicU64,
    pub(crate) worker_restarts: AtomicU64,
    pub(crate) worker_sessions_lost: AtomicU64,
}

impl MasterCounts {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A session started.
    pub fn session_opened(&self) {
        self.sessions_open.fetch_add(1, Ordering::Relaxed);
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended.
    pub fn session_closed(&self) {
        // Never wraps below zero even if called unbalanced.
        let _ = self.sessions_open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// `n` commands were processed.
    pub fn add_commands(&self, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes were read from a client.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes were written to a client.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            sessions_open: self.sessions_open.load(Ordering::Relaxed),
            sessions_total: self.sessions_total.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Logs the current values at INFO with `role` (e.g. `"worker 1"`) and `why`.
    pub fn log(&self, role: &str, why: &str) {
        let s = self.snapshot();
        tracing::info!(
            role,
            why,
            sessions_open = s.sessions_open,
            sessions_total = s.sessions_total,
            commands = s.commands,
            bytes_in = s.bytes_in,
            bytes_out = s.bytes_out,
            "counters"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_never_underflows() {
        let c = Counters::new();
        c.session_opened();
        c.session_opened();
        c.session_closed();
        c.add_commands(3);
        c.add_bytes_in(10);
        c.add_bytes_out(20);
        c.session_closed();
        c.session_closed();
        assert_eq!(
            c.snapshot(),
            CountersSnapshot { sessions_open: 0, sessions_total: 2, commands: 3, bytes_in: 10, bytes_out: 20 }
        );
    }
}
