//! `dormouse restart`: restarts the running `serve` (onto the binary now on
//! disk) without closing a client connection. Finds the server by the pid
//! in `<data_dir>/serve.lock`, sends it SIGUSR2 (what `systemctl kill -s
//! USR2 --kill-whom=main dormouse` does too), and waits for the outcome it
//! writes to `<run_dir>/restart.status` (see [`super::serve_restart`]).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use imap::server::generation::RestartOutcome;

use super::serve_lock::{DataDirLock, LOCK_FILE};
use super::serve_restart::STATUS_FILE;
use crate::config::Config;

/// Arguments of `dormouse restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for the outcome (the server itself gives the new
    /// generation `DORMOUSE_RESTART_TIMEOUT_SECS`, default 60, to be ready).
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
}

/// Signals the server and prints how many sessions moved.
///
/// # Errors
/// No server runs on this data directory, the signal cannot be sent, the
/// restart failed (the old generation serves on) or took too long.
pub fn run(config: &Config, args: &RestartArgs) -> anyhow::Result<()> {
    let lock = config.data_dir.join(LOCK_FILE);
    anyhow::ensure!(
        lock_is_held(&lock),
        "no `dormouse serve` is running on {} ({} is not locked)",
        config.data_dir.display(),
        lock.display()
    );
    let pid = DataDirLock::owner(&config.data_dir).with_context(|| format!("no pid in {}", lock.display()))?;
    let status = config.run_dir().join(STATUS_FILE);
    let asked_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let target = rustix::process::Pid::from_raw(pid as i32).context("bad pid in the lock file")?;
    rustix::process::kill_process(target, rustix::process::Signal::USR2)
        .with_context(|| format!("cannot signal serve (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    loop {
        let outcome = std::fs::read(&status).ok().and_then(|b| RestartOutcome::decode(&b).ok());
        if let Some(o) = outcome.filter(|o| o.old_pid == pid && o.started_ms >= asked_ms) {
            return match (o.error, o.new_pid) {
                (None, Some(new_pid)) => {
                    println!(
                        "restart: {} sessions moved, {} could not ({} ms); serving as pid {new_pid}",
                        o.moved, o.lost, o.duration_ms
                    );
                    Ok(())
                }
                (error, _) => anyhow::bail!(
                    "restart failed: {}; pid {pid} keeps serving",
                    error.unwrap_or_else(|| "unknown error".into())
                ),
            };
        }
        anyhow::ensure!(Instant::now() < deadline, "no outcome from serve (pid {pid}) within {} s", args.wait_secs);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True if a process holds the flock on `path`.
fn lock_is_held(path: &std::path::Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else { return false };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(_) => true,
    }
}
