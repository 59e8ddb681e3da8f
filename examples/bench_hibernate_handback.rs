//! Benchmark: a FETCH sent right after DONE to a hibernated session, served
//! through the hand-back to a worker (issue #6 target: p99 at most 1 ms).
//!
//! `cargo build --release && cargo run --release --example bench_hibernate_handback -- [SESSIONS]`
//!
//! Starts `dormouse serve` (the binary next to this example's directory)
//! with `hibernate.timeout_secs = 1`, opens SESSIONS IDLE sessions, waits
//! until all are hibernated, then for each session sends
//! `DONE\r\nF UID FETCH 1:* (FLAGS)\r\n` in one packet and times the reply
//! up to the FETCH's tagged OK. Prints a table (what, N, median, p99, unit).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn read_until(s: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn held(dormouse: &Path, config: &Path) -> u64 {
    let out = Command::new(dormouse).args(["--config", config.to_str().unwrap(), "stats"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("sessions held"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

fn main() {
    let sessions: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let exe = std::env::current_exe().unwrap();
    let dormouse = exe.parent().and_then(|p| p.parent()).unwrap().join("dormouse");
    assert!(dormouse.exists(), "build the dormouse binary first ({})", dormouse.display());
    let dir = tempfile::tempdir().unwrap();
    let (imap, lmtp) = (free_port(), free_port());
    let config = dir.path().join("dormouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[log]\nlevel = \"warn\"\n[lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n\
             listen_tls = \"\"\nworkers = 2\nmax_connections_per_ip = {n}\nmax_sessions_per_user = {n}\n\
             [hibernate]\ntimeout_secs = 1\nidle_after_secs = 600\nprocesses = 1\n",
            dir.path().join("data"),
            n = sessions + 10
        ),
    )
    .unwrap();
    let run = |args: &[&str], input: &[u8]| {
        let mut c = Command::new(&dormouse)
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        assert!(c.wait().unwrap().success());
    };
    run(&["user", "add", "alice", "--password", "pw", "--scheme", "PLAIN"], b"");
    for i in 0..20 {
        run(&["deliver", "-d", "alice"], format!("Subject: m{i}\r\n\r\nbody\r\n").as_bytes());
    }
    let mut server = Command::new(&dormouse)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", imap)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut clients: Vec<TcpStream> = (0..sessions)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", imap)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(b"a1 LOGIN alice pw\r\na2 SELECT INBOX\r\na3 IDLE\r\n").unwrap();
            read_until(&mut s, b"+ idling\r\n");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while held(&dormouse, &config) < sessions as u64 {
        assert!(Instant::now() < deadline, "sessions did not hibernate");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut lat = Vec::with_capacity(sessions);
    for s in &mut clients {
        let t = Instant::now();
        s.write_all(b"DONE\r\nF UID FETCH 1:* (FLAGS)\r\n").unwrap();
        read_until(s, b"F OK");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!("| {:<50} | {:>6} | {:>9} | {:>9} | {:<4} |", "what", "N", "median", "p99", "unit");
    println!("| {:<50} | {:>6} | {:>9.3} | {:>9.3} | {:<4} |", "DONE + UID FETCH 1:* (FLAGS) via hand-back", lat.len(), p(0.5), p(0.99), "ms");
    drop(clients);
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
}
