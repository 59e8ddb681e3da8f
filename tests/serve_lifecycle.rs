//! `dormouse serve` as a whole process: one server per data directory, and
//! an orderly stop on SIGTERM.

mod imap_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{dormouse, free_port, Conn, Server, ServerOptions};

/// Waits up to `limit` for `child` to exit.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_second_serve_on_the_same_data_dir_refuses_and_names_the_owner() {
    let server = Server::start(ServerOptions::default());
    // Same data_dir, every port different.
    let mut text = std::fs::read_to_string(&server.config).unwrap();
    for port in [server.imap, server.imaps, server.lmtp] {
        text = text.replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{}\"", free_port()));
    }
    let second_config = server.dir.path().join("second.toml");
    std::fs::write(&second_config, text).unwrap();
    let mut second = Command::new(dormouse())
        .args(["--config", second_config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut second, Duration::from_secs(20));
    if status.is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.unwrap_or_else(|| panic!("second serve kept running; stderr:\n{stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "{stderr}");
    assert!(stderr.contains(server.dir.path().join("data").to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The first server still owns its sockets: a login parks normally.
    let mut c = Conn::open(server.imap);
    assert!(c.cmd("a", "LOGIN alice secret-a").last().unwrap().starts_with("a OK"));
    let lock = std::fs::read_to_string(server.dir.path().join("data/serve.lock")).unwrap();
    assert_eq!(lock.trim(), server.pid().to_string());
}

#[test]
fn a_lock_file_left_by_a_dead_server_does_not_block_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (config, imap) = imap_support::write_one_worker_config(dir.path(), "");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::set_permissions(dir.path().join("data"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // Written by a server that died (nobody holds the flock).
    std::fs::write(dir.path().join("data/serve.lock"), "4000000\n").unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Conn::connect(imap).is_err() {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(child.try_wait().unwrap().is_none(), "serve exited:\n{text}");
        assert!(Instant::now() < deadline, "serve did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lock = std::fs::read_to_string(dir.path().join("data/serve.lock")).unwrap();
    assert_eq!(lock.trim(), child.id().to_string());
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(wait_exit(&mut child, Duration::from_secs(20)).is_some());
}
