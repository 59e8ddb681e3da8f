//! Started as root with `[server] user`, `serve` and every child run as
//! that user, still bind a port below 1024, and refuse a data directory
//! that belongs to someone else. Skipped (with a message) unless the tests
//! run as root on Linux.

#![cfg(target_os = "linux")]

mod imap_support;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use imap_support::{dormouse, free_port, wait_exit, Conn};

/// (uid, gid) of `nobody`, the unprivileged account every Linux has.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("nobody:")).expect("no nobody in /etc/passwd");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").unwrap().lines().any(|l| l.starts_with("Uid:\t0\t"))
}

/// A free port below 1024 on 127.0.0.1 (what only root or
/// CAP_NET_BIND_SERVICE may bind).
fn free_low_port() -> u16 {
    (700..1000).find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("no free port below 1024")
}

/// Real uid of `pid` (the "Uid:" line's first field).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    out
}

fn write_config(dir: &Path, lmtp: u16, imap: u16, user: &str) -> std::path::PathBuf {
    let config = dir.join("dormouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nuser = {user:?}\n[lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n\
             [imap]\nlisten = \"127.0.0.1:{imap}\"\nlisten_tls = \"127.0.0.1:{}\"\nworkers = 1\n",
            dir.join("data"),
            free_port()
        ),
    )
    .unwrap();
    config
}

/// A failed assertion must not leave a server running as nobody.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn root_serve_becomes_the_configured_user_and_keeps_low_ports() {
    if !is_root() {
        eprintln!("skipped: the tests do not run as root");
        return;
    }
    let (uid, gid) = nobody();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (lmtp, imap) = (free_low_port(), free_port());
    let config = write_config(dir.path(), lmtp, imap, "nobody");
    // The admin prepares the data directory as the service user
    // (`install -d -o nobody -m 0700 data`).
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let add = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "user", "add", "alice", "--password", "pw-a", "--scheme", "PLAIN"])
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(add.status.success(), "user add as nobody: {}", String::from_utf8_lossy(&add.stderr));

    let log = dir.path().join("serve.log");
    let mut serve = KillOnDrop(
        Command::new(dormouse())
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut conn = Conn::greeted(imap, &log);
    let reply = conn.cmd("a", "LOGIN alice pw-a");
    assert!(reply.last().unwrap().starts_with("a OK"), "{reply:?}");
    let reply = conn.cmd("b", "SELECT INBOX");
    assert!(reply.last().unwrap().starts_with("b OK"), "{reply:?}");

    // The port below 1024 was bound after the drop, with the one kept capability.
    let mut greeting = String::new();
    BufReader::new(TcpStream::connect(("127.0.0.1", lmtp)).unwrap()).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 "), "LMTP on port {lmtp}: {greeting}");

    // The master and every child run as nobody.
    assert_eq!(uid_of(serve.0.id()), uid, "master uid");
    let children = children_of(serve.0.id());
    assert!(children.len() >= 2, "a worker and a hibernate process: {children:?}");
    for child in &children {
        assert_eq!(uid_of(*child), uid, "child {child} uid");
    }
    // What serve creates belongs to nobody too.
    let meta = std::fs::metadata(dir.path().join("data/run")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("dropped root privileges"), "{text}");

    assert!(Command::new("kill").args(["-TERM", &serve.0.id().to_string()]).status().unwrap().success());
    let status = wait_exit(&mut serve.0, Duration::from_secs(30)).expect("serve stops on SIGTERM");
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn root_serve_refuses_a_data_directory_of_another_user() {
    if !is_root() {
        eprintln!("skipped: the tests do not run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write_config(dir.path(), free_port(), free_port(), "nobody");
    // Made by root (`user add` run as root).
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::set_permissions(dir.path().join("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new(dormouse()).args(["--config", config.to_str().unwrap(), "serve"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("belongs to uid 0") && stderr.contains("chown -R nobody:") && stderr.contains("data"),
        "{stderr}"
    );

    // An unknown user is named.
    let config = write_config(dir.path(), free_port(), free_port(), "no-such-user-here");
    let out = Command::new(dormouse()).args(["--config", config.to_str().unwrap(), "serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"no-such-user-here\" is not a user"));
}
