//! The master's watch of the hibernate processes: a parked session keeps
//! counting toward the per-user and per-IP limits until the process that
//! holds it reports its end, or the process dies.
//!
//! The master connects to each hibernate socket like a worker, but says
//! [`ControlRequest::Observe`] first: the process then sends it
//! [`ControlReply::Ended`] notices and never hands it a session. One
//! connection per process and a notice per ended session; nothing per
//! held session while it idles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hibernate::driver::control::{self, ControlReply, ControlRequest};

use crate::fd_passing::{FdChannel, FdPassingError, MAX_MESSAGE_LEN};

use super::master::{release, MasterShared};

/// How often the master retries a hibernate socket it is not connected to
/// (a process not started yet, or being restarted).
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Watches hibernate process `index` (socket `path`) until the task is dropped.
pub(crate) async fn watch(shared: Arc<MasterShared>, index: u32, path: PathBuf) {
    loop {
        if let Some(link) = connect(&path).await {
            tracing::debug!(process = index, "watching hibernate process");
            follow(&shared, index, &link).await;
            // The process is gone (or its socket failed): what it held is lost.
            let lost = shared.pool.hibernate_gone(index);
            for entry in &lost {
                shared.limits.close_session(&entry.user);
                shared.limits.close_connection(entry.ip);
            }
            if !lost.is_empty() {
                tracing::warn!(process = index, sessions = lost.len(), "hibernate process gone; its sessions no longer count");
            }
        }
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

async fn connect(path: &std::path::Path) -> Option<FdChannel> {
    let fd = hibernate::driver::channel::connect(path).ok()?;
    let link = FdChannel::new(fd).ok()?;
    link.send(&control::encode(&ControlRequest::Observe), None).await.ok()?;
    Some(link)
}

async fn follow(shared: &MasterShared, index: u32, link: &FdChannel) {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        match link.recv(&mut buf).await {
            Ok(received) => {
                if received.fd.is_some() {
                    // Only in the instant before our Observe was read.
                    tracing::error!(process = index, "hibernate process handed a session to the master; it is lost");
                    continue;
                }
                match control::decode::<ControlReply>(&buf[..received.len]) {
                    Ok(ControlReply::Ended { session_ids }) => {
                        for id in session_ids {
                            release(shared, id);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(process = index, error = %e, "bad notice from a hibernate process"),
                }
            }
            Err(FdPassingError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
