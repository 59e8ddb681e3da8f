//! The systemd readiness protocol (`sd_notify(3)`): when systemd started us
//! with `Type=notify` it names a datagram socket in `NOTIFY_SOCKET`, and
//! `READY=1` sent there tells it the listeners are bound. Hand-written
//! because it is one datagram (the `sd-notify` crate does the same thing).

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to the notify socket, if there is one.
/// A failure is logged, never fatal: a server without systemd keeps running.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&target, state) {
        tracing::warn!(socket = %target.to_string_lossy(), error = %e, "cannot notify systemd");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target);
    match bytes.strip_prefix(b"@") {
        // '@' names a socket in the abstract namespace (Linux only).
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        _ => {
            socket.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

/// Tells systemd a reload started: `RELOADING=1` with the `CLOCK_MONOTONIC`
/// time in microseconds (what `Type=notify-reload` requires). Send
/// `READY=1` when it is done.
pub fn notify_reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}
