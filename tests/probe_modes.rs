//! Issue #14: `serve` creates every directory 0700 and every file 0600
//! whatever the umask (the worker config holds bus and webhook secrets),
//! and refuses a data or run directory that group or others can write.

mod imap_support;

use std::io::BufRead;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{dormouse, wait_exit, Conn};

/// Runs `dormouse ARGS` under umask 000.
fn under_umask_000(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg("umask 000; exec \"$0\" \"$@\"").arg(dormouse()).args(args);
    c
}

/// Every directory and file below `dir` whose mode is not 0700 / 0600.
fn wrong_modes(dir: &Path, out: &mut Vec<(PathBuf, u32)>) -> usize {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        seen += 1;
        if meta.is_dir() {
            if mode != 0o700 {
                out.push((entry.path(), mode));
            }
            seen += wrong_modes(&entry.path(), out);
        } else if meta.file_type().is_socket() {
            // Sockets live in the private run directory.
        } else if mode != 0o600 {
            out.push((entry.path(), mode));
        }
    }
    seen
}

#[test]
fn serve_under_umask_000_creates_only_private_directories_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let (config, imap) = imap_support::write_one_worker_config(
        dir.path(),
        "[hibernate]\nprocesses = 1\ntimeout_secs = 1\n[bus.nats]\npassword = \"secret-nats-password\"\n",
    );
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let mut serve = under_umask_000(&["--config", config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // First run: the demo user's password is printed once.
    let mut stdout = std::io::BufReader::new(serve.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let password = first.trim().rsplit_once("password ").map(|(_, p)| p.to_string());
    let password = password.unwrap_or_else(|| panic!("{first:?}; log:\n{}", std::fs::read_to_string(&log).unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Conn::connect(imap).is_err() {
        assert!(Instant::now() < deadline, "serve did not start:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Mail arrives (another process, same umask) and is read over IMAP.
    let mut deliver = under_umask_000(&["--config", config.to_str().unwrap(), "deliver", "-d", "demo"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut deliver.stdin.take().unwrap(), b"Subject: modes\r\n\r\nhello\r\n").unwrap();
    assert!(deliver.wait().unwrap().success());
    let mut c = Conn::open(imap);
    assert!(c.cmd("a1", &format!("LOGIN demo {password}")).last().unwrap().starts_with("a1 OK"));
    assert!(c.cmd("a2", "SELECT INBOX").last().unwrap().starts_with("a2 OK"));
    c.cmd("a3", "FETCH 1 (FLAGS BODY[])");
    c.cmd("a4", "STORE 1 +FLAGS (\\Seen)");
    c.cmd("a5", "CREATE Archive");
    c.send(b"a6 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    std::thread::sleep(Duration::from_millis(1500));

    assert!(data.join("run/imap-worker.toml").exists());
    assert!(data.join("tls").exists() && data.join("passwd").exists());
    let mut wrong = Vec::new();
    let seen = wrong_modes(&data, &mut wrong);
    let data_mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
    if data_mode != 0o700 {
        wrong.push((data.clone(), data_mode));
    }
    let _ = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    assert!(wait_exit(&mut serve, Duration::from_secs(20)).is_some());
    assert!(seen > 15, "only {seen} entries under {}", data.display());
    let listed: Vec<String> = wrong.iter().map(|(p, m)| format!("{:04o} {}", m, p.display())).collect();
    assert!(wrong.is_empty(), "not 0700/0600:\n{}", listed.join("\n"));
}

/// `serve` with `prepare` applied to the fresh data directory: exits non-zero
/// within 20 s; returns its stderr.
fn refused(prepare: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = imap_support::write_one_worker_config(dir.path(), "");
    prepare(&dir.path().join("data"));
    let mut serve = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut serve, Duration::from_secs(20));
    if status.is_none() {
        let _ = serve.kill();
    }
    let out = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let status = status.unwrap_or_else(|| panic!("serve started; stderr:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    (dir, stderr)
}

fn make_dir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_world_writable_data_or_run_directory_is_refused_by_name() {
    let (dir, stderr) = refused(|data| make_dir(data, 0o777));
    let data = dir.path().join("data");
    assert!(stderr.contains(&format!("data directory {} is writable by group or others", data.display())), "{stderr}");
    assert!(!data.join("passwd").exists() && !data.join("serve.lock").exists(), "it touched the directory");

    let (dir, stderr) = refused(|data| {
        make_dir(data, 0o700);
        make_dir(&data.join("run"), 0o775);
    });
    let run = dir.path().join("data/run");
    assert!(stderr.contains(&format!("run directory {} is writable by group or others", run.display())), "{stderr}");
}

#[test]
fn user_add_under_umask_000_creates_a_private_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = imap_support::write_one_worker_config(dir.path(), "");
    let out = under_umask_000(&["--config", config.to_str().unwrap(), "user", "add", "carol", "--password", "pw-c", "--scheme", "PLAIN"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let data = dir.path().join("data");
    assert_eq!(format!("{:04o} {:04o}", mode(&data), mode(&data.join("passwd"))), "0700 0600");
}
