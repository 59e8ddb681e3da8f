//! Orderly stop of the IMAP processes: the `* BYE` every session gets, and
//! counts of the tasks a stopping process waits for.
//!
//! The order (see [`super::master::Master::run`]): stop accepting; let
//! every pre-login session and every worker session finish the command in
//! progress and send [`SHUTDOWN_BYE`] (hibernate processes send it to the
//! sessions they hold); keep the master's TLS proxies running until the
//! worker or hibernate side has closed, so that BYE reaches TLS clients
//! too; all bounded by the configured grace.

use std::time::Duration;

use tokio::sync::watch;

/// What every session is told when the server stops (hibernate processes
/// use the same constant).
pub const SHUTDOWN_BYE: &[u8] = hibernate::driver::SHUTDOWN_BYE;

/// A session still in a command when the server stops gets its BYE this
/// long before the grace ends (its process exits then).
pub const BYE_MARGIN: Duration = Duration::from_millis(250);

/// When a session in a command gets its BYE at the latest: `grace` (less
/// [`BYE_MARGIN`]) after the stop was first seen, which `bye_at` remembers.
pub fn bye_deadline(bye_at: &mut Option<std::time::Instant>, grace: Duration) -> std::time::Instant {
    *bye_at.get_or_insert_with(|| std::time::Instant::now() + grace.saturating_sub(BYE_MARGIN))
}

/// A count of live tasks (sessions, proxies) that can be awaited to zero.
#[derive(Debug)]
pub struct ActiveCount(watch::Sender<usize>);

impl Default for ActiveCount {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

/// One counted task; uncounts itself when dropped.
#[derive(Debug)]
pub struct ActiveGuard(watch::Sender<usize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl ActiveCount {
    /// Counts one more task until the guard is dropped.
    pub fn enter(&self) -> ActiveGuard {
        self.0.send_modify(|n| *n += 1);
        ActiveGuard(self.0.clone())
    }

    /// Tasks counted now.
    pub fn get(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until no task is counted or `limit` has passed; returns how
    /// many were still counted.
    pub async fn wait_zero(&self, limit: Duration) -> usize {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        self.get()
    }
}

/// Completes when `stopping` turns true (or its sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_guards_and_gives_up_at_the_limit() {
        let count = ActiveCount::default();
        let a = count.enter();
        let b = count.enter();
        assert_eq!(count.get(), 2);
        drop(a);
        assert_eq!(count.wait_zero(Duration::from_millis(20)).await, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(b);
        });
        assert_eq!(count.wait_zero(Duration::from_secs(10)).await, 0);
    }
}
