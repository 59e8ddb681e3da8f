//! The systemd units in `dist/systemd/` pass `systemd-analyze verify` with no
//! warning (unknown keys only warn, so stderr must be empty too), and `serve`
//! speaks the readiness protocol their `Type=notify` relies on.

mod imap_support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{dormouse, write_one_worker_config, Conn};

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["dormouse.service", "dormouse-push-relay.service"] {
        let text = std::fs::read_to_string(format!("{}/dist/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/dormouse "), "{name}: ExecStart must name the packaged binary");
        if name == "dormouse.service" {
            assert!(
                text.contains("\nExecReload=/usr/bin/dormouse --config /etc/dormouse/dormouse.toml restart\n"),
                "{name}: reload is a restart without disconnecting anyone"
            );
        }
        // verify checks that ExecStart exists: point it at the binary under test.
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/bin/dormouse", dormouse())).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze").arg("verify").arg("--man=no").args(&units).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn serve_notifies_ready_once_listening_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (config, imap) = write_one_worker_config(dir.path(), "");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut child = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("no READY=1 within 60 s");
    assert_eq!(&buf[..n], b"READY=1", "first notification");
    // A reload (SIGHUP, what ExecReload sends) at once after READY=1 is
    // handled (not SIGHUP's default action, which kills) and bracketed by
    // RELOADING=1 (with the monotonic time Type=notify-reload wants) and READY=1.
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    let n = notify.recv(&mut buf).unwrap_or_else(|e| panic!("no RELOADING=1 after SIGHUP ({e}); serve: {:?}", child.try_wait()));
    let reloading = String::from_utf8_lossy(&buf[..n]).into_owned();
    let usec = reloading.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading:?}");
    let n = notify.recv(&mut buf).expect("no READY=1 after the reload");
    assert_eq!(&buf[..n], b"READY=1", "after the reload");
    // Ready means listening: the greeting comes at once, no retry loop.
    let mut conn = Conn::connect(imap).expect("IMAP not listening when READY=1 was sent");
    assert!(conn.line().starts_with("* OK"));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let n = notify.recv(&mut buf).expect("no STOPPING=1 after SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exit {status:?} after {:?}", started.elapsed());
}

/// The configuration files shipped with the Debian package and the container
/// image load and validate with the binary they ship with.
#[test]
fn packaged_configs_pass_config_check() {
    for name in ["dist/debian/dormouse.toml", "dist/docker/dormouse.toml"] {
        let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(dormouse()).args(["--config", &path, "config", "check"]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("allow_plaintext_auth = false"), "{name}: LOGIN must need TLS on port 143");
    }
    // The image runs the binary with the config it copies in, as the
    // unprivileged user the package also uses.
    let dockerfile = std::fs::read_to_string(format!("{}/Dockerfile", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(dockerfile.contains("COPY dist/docker/dormouse.toml /etc/dormouse/dormouse.toml"));
    assert!(dockerfile.contains("\nUSER dormouse\n"));
    assert!(dockerfile.contains("\"--config\", \"/etc/dormouse/dormouse.toml\""));
}
