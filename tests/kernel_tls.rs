//! `[tls] kernel_tls` with a real `serve`: "auto" probes the kernel, logs
//! what it found once and (on a kernel without the `tls` ULP, like the test
//! machine's) keeps TLS sessions working on the user-space record layer;
//! "on" without kernel TLS stops `config check` and `serve` with a clear error.

mod imap_support;

use std::process::Command;
use std::time::Duration;

use imap_support::{dormouse, Server, ServerOptions};

/// True if this kernel lists the `tls` ULP (the "on" test cannot fail there).
fn kernel_lists_tls() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|s| s.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false)
}

#[test]
fn auto_logs_the_probe_once_and_tls_sessions_work() {
    let mut server = Server::start(ServerOptions {
        sections_extra: "[tls]\nkernel_tls = \"auto\"\n".into(),
        ..ServerOptions::default()
    });
    let line = server.wait_for_log("kernel TLS", Duration::from_secs(10));
    if !kernel_lists_tls() {
        let ulps = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
        let want = format!(
            "kernel TLS not available: tcp_available_ulp lists {}; TLS records are processed in user space",
            if ulps.trim().is_empty() { "nothing" } else { ulps.trim() }
        );
        assert!(line.contains(&want), "want {want:?} in the log:\n{line}");
        assert!(line.contains("INFO"), "logged at INFO:\n{line}");
    }
    // STARTTLS and port 993, login, APPEND + FETCH of 20 KB, LOGOUT.
    let mut args = server.py_args("alice", "secret-a");
    args.insert(2, server.imaps.to_string());
    server.python("imap_tls.py", &args);
    let log = server.stop();
    assert_eq!(log.matches("kernel TLS not available").count() + log.matches("kernel TLS available").count(), 1, "logged once:\n{log}");
}

#[test]
fn on_without_kernel_tls_fails_config_check_and_serve() {
    if kernel_lists_tls() {
        eprintln!("skipped: this kernel offers kernel TLS");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dormouse.toml");
    let port = imap_support::free_port();
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[imap]\nlisten = \"127.0.0.1:{port}\"\nlisten_tls = \"\"\n[lmtp]\nlisten = \"\"\n[tls]\nkernel_tls = \"on\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let want = "tls.kernel_tls = \"on\" but kernel TLS not available: tcp_available_ulp lists";
    let check = Command::new(dormouse()).args(["--config", config.to_str().unwrap(), "config", "check"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "config check exits 78: {stderr}");
    assert!(stderr.contains(want), "config check says why: {stderr}");
    let serve = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success(), "serve refuses to start: {stderr}");
    assert!(stderr.contains(want), "serve says why: {stderr}");
}
