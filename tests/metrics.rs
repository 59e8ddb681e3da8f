//! `[metrics] listen`: a scrape during a real `serve` run reports what the
//! test did: logins, sessions by state and transport, hibernation, LMTP
//! outcomes, a hibernate process's death, and every process's memory.

mod imap_support;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{free_port, Conn, Server, ServerOptions};

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("content-type: application/openmetrics-text"), "{out}");
    out
}

/// The value of the sample `name` (with its label set, e.g.
/// `dormouse_logins_total{result="ok"}`).
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn wait_for_sample(port: u16, name: &str, want: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(port);
        if sample(&text, name) == want {
            return text;
        }
        assert!(Instant::now() < deadline, "{name} never reached {want}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn lmtp(port: u16, script: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(script).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_scrape_reports_what_the_server_did() {
    let metrics = free_port();
    let server = Server::start(ServerOptions {
        sections_extra: format!(
            "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 600\nprocesses = 1\nkeepalive_secs = 600\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
        ..ServerOptions::default()
    });
    let text = scrape(metrics);
    assert_eq!(sample(&text, "dormouse_logins_total{result=\"ok\"}"), 0);
    assert_eq!(sample(&text, "dormouse_processes{process=\"worker\"}"), 2, "{text}");
    assert_eq!(sample(&text, "dormouse_processes{process=\"master\"}"), 1);
    for role in ["master", "worker"] {
        assert!(sample(&text, &format!("dormouse_memory_pss_bytes{{process=\"{role}\"}}")) > 1_000_000, "{text}");
    }

    for i in 0..3 {
        let mut c = Conn::open(server.imap);
        let lines = c.cmd(&format!("f{i}"), "LOGIN bob wrong");
        assert!(lines.last().unwrap().contains("NO"), "{lines:?}");
    }
    // A plain session that idles (and is parked) and a TLS one that stays live.
    let mut idler = Conn::open(server.imap);
    idler.cmd("a1", "LOGIN alice secret-a");
    idler.cmd("a2", "SELECT INBOX");
    idler.send(b"a3 IDLE\r\n");
    assert!(idler.line().starts_with("+ "));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/imap_tls_hold.py");
    let mut tls = Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &server.imaps.to_string(), "bob", "secret-b"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(tls.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    server.wait_held(1);

    let out = lmtp(
        server.lmtp,
        b"LHLO t\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<nobody@x>\r\nDATA\r\nSubject: m\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(out.contains("550 5.1.1"), "{out}");
    assert_eq!(idler.line().trim_end(), "* 1 EXISTS");

    let text = wait_for_sample(metrics, "dormouse_hibernate_notifications_total", 1);
    assert_eq!(sample(&text, "dormouse_logins_total{result=\"ok\"}"), 2);
    assert_eq!(sample(&text, "dormouse_logins_total{result=\"failed\"}"), 3);
    assert_eq!(sample(&text, "dormouse_handovers_total{transport=\"plain\"}"), 1);
    assert_eq!(sample(&text, "dormouse_handovers_total{transport=\"tls\"}"), 1);
    assert_eq!(sample(&text, "dormouse_handovers_total{transport=\"tls-proxied\"}"), 0);
    assert_eq!(sample(&text, "dormouse_sessions{state=\"hibernated\"}"), 1);
    assert_eq!(sample(&text, "dormouse_sessions{state=\"in_worker\"}"), 1, "the TLS session");
    // TLS 1.3: the state moved to the worker with the socket; nothing relayed.
    assert_eq!(sample(&text, "dormouse_tls_sessions_relayed"), 0);
    assert_eq!(sample(&text, "dormouse_hibernations_total"), 1);
    assert_eq!(sample(&text, "dormouse_lmtp_recipients_total{outcome=\"stored\"}"), 1);
    assert_eq!(sample(&text, "dormouse_lmtp_recipients_total{outcome=\"unknown_user\"}"), 1);
    assert_eq!(sample(&text, "dormouse_lmtp_connections_total"), 1);
    assert_eq!(sample(&text, "dormouse_lmtp_delivery_seconds_count"), 1);
    // The delivery's event reached the bus (the hibernate process is a receiver).
    assert!(sample(&text, "dormouse_bus_events_published_total{process=\"master\",transport=\"unix\"}") >= 1, "{text}");
    assert_eq!(sample(&text, "dormouse_bus_events_dropped_total{process=\"master\",transport=\"unix\",reason=\"send\"}"), 0);
    // Delivery -> EXISTS at the parked client, measured where it is written.
    assert_eq!(sample(&text, "dormouse_hibernate_notify_latency_seconds_count"), 1);
    assert_eq!(sample(&text, "dormouse_hibernate_notify_latency_seconds_bucket{le=\"5.0\"}"), 1, "{text}");
    assert_eq!(sample(&text, "dormouse_lmtp_delivery_seconds_bucket{le=\"+Inf\"}"), 1);
    assert!(sample(&text, "dormouse_connections_total") >= 5);
    assert!(sample(&text, "dormouse_memory_pss_bytes{process=\"hibernate\"}") > 0);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // The TLS client logs out: nothing is relayed any more.
    drop(tls.stdin.take());
    assert!(tls.wait().unwrap().success());
    wait_for_sample(metrics, "dormouse_tls_sessions_relayed", 0);

    // A hibernate process dies with the parked session: counted as lost.
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0).any(|a| a == b"hibernate")
                    && String::from_utf8_lossy(&c).contains(server.dir.path().to_str().unwrap())
            })
        })
        .expect("hibernate process");
    // The supervisor learns the held count by polling every 250 ms.
    std::thread::sleep(Duration::from_millis(600));
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let text = wait_for_sample(metrics, "dormouse_process_restarts_total{process=\"hibernate\"}", 1);
    assert_eq!(sample(&text, "dormouse_sessions_lost_total{process=\"hibernate\"}"), 1);
    assert_eq!(sample(&text, "dormouse_process_restarts_total{process=\"worker\"}"), 0);
}
