//! Hibernation end to end with `dormouse serve`: workers park quiet
//! sessions in hibernate processes, which answer from cached state and hand
//! sessions back on other commands; the client cannot tell.

mod imap_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use imap_support::{dormouse, tail, Conn, Server, ServerOptions};

fn server(extra_imap: &str) -> Server {
    Server::start(ServerOptions {
        imap_extra: format!("login_failure_delay_ms = 50\n{extra_imap}"),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    })
}

/// One response line without its CRLF.
fn line(c: &mut Conn) -> String {
    c.line().trim_end().to_string()
}

/// Response lines without CRLF.
fn trimmed(lines: Vec<String>) -> Vec<String> {
    lines.into_iter().map(|l| l.trim_end().to_string()).collect()
}

/// Pid of the server's (first) hibernate process.
fn hibernate_pid(server: &Server) -> u32 {
    find_hibernate_pid(server).expect("hibernate process")
}

fn find_hibernate_pid(server: &Server) -> Option<u32> {
    let dir = server.dir.path().to_str().unwrap().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0).any(|a| a == b"hibernate") && String::from_utf8_lossy(&c).contains(&dir)
            })
        })
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

#[test]
fn idle_session_hibernates_gets_updates_answers_status_and_comes_back_for_fetch() {
    let server = server("");
    server.deliver("alice", &message("one"));
    server.deliver("alice", &message("two"));
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    c.send(b"a3 IDLE\r\n");
    assert!(line(&mut c).starts_with("+ "));
    server.wait_held(1);
    assert_eq!(server.stat("hibernations"), 1);

    // A delivery reaches the hibernated client.
    server.deliver("alice", &message("three"));
    assert_eq!(line(&mut c), "* 3 EXISTS");
    // Changes from another session, with the right sequence numbers.
    let mut other = Conn::open(server.imap);
    other.cmd("b1", "LOGIN alice secret-a");
    other.cmd("b2", "SELECT INBOX");
    other.cmd("b3", "STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(line(&mut c), "* 1 FETCH (UID 1 FLAGS (\\Deleted))");
    other.cmd("b4", "EXPUNGE");
    assert_eq!(line(&mut c), "* 1 EXPUNGE");
    other.cmd("b5", "STORE 1 +FLAGS.SILENT (\\Flagged)");
    assert_eq!(line(&mut c), "* 1 FETCH (UID 2 FLAGS (\\Flagged))");
    other.cmd("b6", "LOGOUT");

    // STATUS while hibernated: no hand-back.
    c.send(b"DONE\r\na4 STATUS INBOX (MESSAGES UIDNEXT)\r\n");
    assert_eq!(line(&mut c), "a3 OK Idle completed.");
    assert_eq!(line(&mut c), "* STATUS \"INBOX\" (MESSAGES 2 UIDNEXT 4)");
    assert_eq!(line(&mut c), "a4 OK Status completed.");
    assert_eq!(server.stat("hand-backs command"), 0);

    // IDLE again, then DONE + FETCH in one packet: handed back, right data.
    c.send(b"a5 IDLE\r\n");
    assert_eq!(line(&mut c), "+ idling");
    c.send(b"DONE\r\na6 UID FETCH 1:* (FLAGS)\r\n");
    let lines = trimmed(c.until_tagged("a6"));
    assert_eq!(lines[0], "a5 OK Idle completed.");
    assert!(lines[1].starts_with("* 1 FETCH (UID 2 FLAGS (\\Flagged"), "{lines:?}");
    assert!(lines[2].starts_with("* 2 FETCH (UID 3 FLAGS ("), "{lines:?}");
    assert!(lines[3].starts_with("a6 OK"), "{lines:?}");
    assert_eq!(server.stat("hand-backs command"), 1);
    assert_eq!(server.stat("sessions held"), 0);
    // The session lives on in the worker.
    let lines = c.cmd("a7", "NOOP");
    assert!(lines.last().unwrap().starts_with("a7 OK"), "{lines:?}");
}

#[test]
fn noop_poller_hibernates_and_logout_is_answered_there() {
    let server = server("");
    server.deliver("bob", &message("one"));
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN bob secret-b");
    c.cmd("a2", "SELECT INBOX");
    server.wait_held(1);
    let out = Command::new(dormouse()).args(["--config", server.config.to_str().unwrap(), "who"]).output().unwrap();
    let who = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{who}");
    let row = who.lines().find(|l| l.starts_with("bob ")).unwrap_or_else(|| panic!("{who}"));
    assert!(row.contains("127.0.0.1:") && row.contains("INBOX") && row.contains("hib-noidle"), "{row}");
    server.deliver("bob", &message("two"));
    std::thread::sleep(Duration::from_millis(300));
    let lines = trimmed(c.cmd("a3", "NOOP"));
    assert_eq!(lines, vec!["* 2 EXISTS".to_string(), "a3 OK NOOP completed.".to_string()]);
    let lines = trimmed(c.cmd("a4", "LOGOUT"));
    assert_eq!(lines, vec!["* BYE Logging out.".to_string(), "a4 OK Logout completed.".to_string()]);
    server.wait_held(0);
    assert_eq!(server.stat("hand-backs command"), 0);
    assert!(server.stat("answered from cache") >= 2);
    // The session ended in the hibernate process: it writes the logout line.
    let log = server.wait_for_log("hibernated=true", Duration::from_secs(10));
    let line = log.lines().find(|l| l.contains(": logout ") && l.contains("hibernated=true")).unwrap_or_else(|| panic!("{log}"));
    for field in ["session=", "user=bob", "peer=127.0.0.1", "tls=false", "end=\"closed\""] {
        assert!(line.contains(field), "logout line lacks {field}: {line}");
    }
}

#[test]
fn client_split_at_every_byte_and_disconnecting_during_hand_back() {
    let server = server("");
    server.deliver("alice", &message("one"));
    let script = b"DONE\r\nx2 NOOP\r\nx3 UID FETCH 1 (FLAGS)\r\n";
    for cut in [1usize, 3, 5, 6, 9, 15, 20, script.len() - 1] {
        let mut c = Conn::open(server.imap);
        c.cmd("x0", "LOGIN alice secret-a");
        c.cmd("x0b", "SELECT INBOX");
        c.send(b"x1 IDLE\r\n");
        assert!(line(&mut c).starts_with("+ "));
        server.wait_held(1);
        c.send(&script[..cut]);
        std::thread::sleep(Duration::from_millis(20));
        c.send(&script[cut..]);
        let lines = trimmed(c.until_tagged("x3"));
        assert_eq!(lines[0], "x1 OK Idle completed.", "cut {cut}");
        assert_eq!(lines[1], "x2 OK NOOP completed.", "cut {cut}");
        assert!(lines[2].starts_with("* 1 FETCH (UID 1 FLAGS ("), "cut {cut}: {lines:?}");
        c.cmd("x4", "LOGOUT");
    }
    // A client that leaves right after sending a command that needs a worker.
    let mut c = Conn::open(server.imap);
    c.cmd("y0", "LOGIN alice secret-a");
    c.cmd("y1", "SELECT INBOX");
    c.send(b"y2 IDLE\r\n");
    assert!(line(&mut c).starts_with("+ "));
    server.wait_held(1);
    c.send(b"DONE\r\ny3 FETCH 1 BODY[]\r\n");
    drop(c);
    server.wait_held(0);
    // The server still works.
    let mut c = Conn::open(server.imap);
    let lines = c.cmd("z1", "LOGIN alice secret-a");
    assert!(lines.last().unwrap().starts_with("z1 OK"));
}

#[test]
fn two_thousand_sessions_hibernate_and_are_released() {
    let server = server("max_connections_per_ip = 3000\nmax_sessions_per_user = 3000\n");
    let n = 2000;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", server.imap)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let user = if i % 2 == 0 { "alice secret-a" } else { "bob secret-b" };
        s.write_all(format!("a1 LOGIN {user}\r\na2 SELECT INBOX\r\na3 IDLE\r\n").as_bytes()).unwrap();
        clients.push(s);
    }
    for s in &mut clients {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(8).any(|w| w == b"+ idling") {
            let k = s.read(&mut buf).unwrap();
            assert!(k > 0, "EOF: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
    }
    server.wait_held(n as u64);
    let pid = hibernate_pid(&server);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let rss_full = rss(pid);
    drop(clients);
    server.wait_held(0);
    assert_eq!(server.stat("hibernations"), n as u64);
    assert_eq!(server.stat("sessions ended here"), n as u64);
    // Memory is given back to the allocator: a second wave does not grow RSS
    // much beyond the first.
    let mut again = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", server.imap)).unwrap();
        s.write_all(b"a1 LOGIN alice secret-a\r\na2 SELECT INBOX\r\na3 IDLE\r\n").unwrap();
        again.push(s);
    }
    server.wait_held(n as u64);
    let rss_second = rss(pid);
    assert!(rss_second < rss_full + rss_full / 4, "RSS grew from {rss_full} kB to {rss_second} kB");
    drop(again);
    server.wait_held(0);
}

#[test]
fn a_dead_hibernate_process_is_restarted_and_the_loss_logged() {
    let server = server("");
    server.deliver("alice", &message("one"));
    let mut parked = Conn::open(server.imap);
    parked.cmd("a1", "LOGIN alice secret-a");
    parked.cmd("a2", "SELECT INBOX");
    parked.send(b"a3 IDLE\r\n");
    assert!(line(&mut parked).starts_with("+ "));
    let mut active = Conn::open(server.imap);
    active.cmd("b1", "LOGIN bob secret-b");
    server.wait_held(1);
    // The supervisor learns the count by polling every 250 ms.
    std::thread::sleep(Duration::from_millis(700));
    let pid = hibernate_pid(&server);
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let log = server.wait_for_log("hibernate process died", Duration::from_secs(30));
    assert!(log.contains("sessions_dropped=1"), "{log}");
    // The parked client lost its connection; the worker's sessions go on.
    assert!(parked.read_to_close().is_empty());
    let lines = trimmed(active.cmd("b2", "NOOP"));
    assert_eq!(lines.last().unwrap(), "b2 OK NOOP completed.");
    // The restarted process takes sessions again.
    server.wait_for_log("hibernate process started", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while find_hibernate_pid(&server).is_none_or(|p| p == pid) {
        assert!(Instant::now() < deadline, "not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut again = Conn::open(server.imap);
    again.cmd("c1", "LOGIN alice secret-a");
    again.cmd("c2", "SELECT INBOX");
    again.send(b"c3 IDLE\r\n");
    assert!(line(&mut again).starts_with("+ "));
    // `active` (quiet for idle_after) is parked there too.
    server.wait_held(2);
    server.deliver("alice", &message("two"));
    assert_eq!(line(&mut again), "* 2 EXISTS");
}

#[test]
fn auto_mode_starts_hibernate_processes_as_they_fill_up() {
    let server = Server::start(ServerOptions {
        imap_extra: "login_failure_delay_ms = 50\n".into(),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = \"auto\"\n\
                         max_sessions_per_process = 5\nkeepalive_secs = 600\n"
            .into(),
        ..ServerOptions::default()
    });
    let n = 12;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Conn::open(server.imap);
        let (user, pass) = if i % 2 == 0 { ("alice", "secret-a") } else { ("bob", "secret-b") };
        c.cmd("a1", &format!("LOGIN {user} {pass}"));
        c.cmd("a2", "SELECT INBOX");
        c.send(b"a3 IDLE\r\n");
        assert!(line(&mut c).starts_with("+ "));
        clients.push(c);
    }
    server.wait_held(n as u64);
    // One process at start; a second when the first held 5, a third when
    // both held 5; no fourth while the third has room.
    std::thread::sleep(Duration::from_millis(1000));
    let s = server.stats();
    let mut held: Vec<u64> = s.iter().filter(|(k, _)| k == "sessions held").map(|(_, v)| *v).collect();
    held.sort_unstable();
    assert_eq!(held, vec![2, 5, 5], "{s:?}");
    assert!(s.iter().filter(|(k, _)| k == "capacity").all(|(_, v)| *v == 5), "{s:?}");
    assert!(server.stat("refused (full)") > 0);
    let out = Command::new(dormouse()).args(["--config", server.config.to_str().unwrap(), "who"]).output().unwrap();
    let who = String::from_utf8_lossy(&out.stdout);
    assert_eq!(who.lines().filter(|l| l.contains("hibernated")).count(), n, "{who}");
    // The sessions were handed back unnoticed: every client still idles and
    // gets news.
    server.deliver("alice", &message("news"));
    assert_eq!(line(&mut clients[0]), "* 1 EXISTS");
    drop(clients);
    server.wait_held(0);
}

/// Delivers `count` messages over one LMTP connection, one transaction each,
/// checking every reply.
fn lmtp_deliver(port: u16, user: &str, tag: &str, count: usize) {
    use std::io::BufRead;
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let reply = |reader: &mut std::io::BufReader<TcpStream>| -> String {
        // Multi-line replies (LHLO) end with a line whose 4th byte is a space.
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            assert!(!l.is_empty(), "LMTP connection closed");
            if l.as_bytes().get(3) != Some(&b'-') {
                return l;
            }
        }
    };
    assert!(reply(&mut reader).starts_with("220"));
    writer.write_all(b"LHLO concurrent\r\n").unwrap();
    assert!(reply(&mut reader).starts_with("250"));
    for i in 0..count {
        let body = format!("Message-ID: <{tag}-{i}@test>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n");
        writer
            .write_all(format!("MAIL FROM:<s@x>\r\nRCPT TO:<{user}@x>\r\nDATA\r\n{body}.\r\n").as_bytes())
            .unwrap();
        for expect in ["250", "250", "354", "250"] {
            let r = reply(&mut reader);
            assert!(r.starts_with(expect), "{tag} {i}: expected {expect}, got {r:?}");
        }
    }
    writer.write_all(b"QUIT\r\n").unwrap();
}

/// The `(UID, FLAGS)` of every message, in sequence order, from a
/// `UID FETCH 1:* (FLAGS)` answer.
fn uids_and_flags(lines: &[String]) -> Vec<(u32, String)> {
    lines
        .iter()
        .filter(|l| l.starts_with("* ") && l.contains(" FETCH ("))
        .map(|l| {
            let uid = l.split("UID ").nth(1).and_then(|r| r.split([' ', ')']).next()).unwrap().parse().unwrap();
            let flags = l.split("FLAGS (").nth(1).and_then(|r| r.split(')').next()).unwrap_or("");
            let mut flags: Vec<&str> = flags.split_whitespace().filter(|f| *f != "\\Recent").collect();
            flags.sort_unstable();
            (uid, flags.join(" "))
        })
        .collect()
}

#[test]
fn parked_idlers_in_several_processes_see_every_overlapping_change() {
    // Two sessions per hibernate process: the five idlers spread over three.
    let server = Server::start(ServerOptions {
        imap_extra: "login_failure_delay_ms = 50\n".into(),
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = \"auto\"\n\
                         max_sessions_per_process = 2\nkeepalive_secs = 600\n"
            .into(),
        ..ServerOptions::default()
    });
    for i in 0..10 {
        server.deliver("alice", &message(&format!("seed {i}")));
    }
    let mut setup = Conn::open(server.imap);
    setup.cmd("s1", "LOGIN alice secret-a");
    setup.cmd("s2", "CREATE Archive");
    for i in 0..10 {
        let m = message(&format!("archived {i}"));
        setup.send(format!("s3 APPEND Archive {{{}+}}\r\n", m.len()).as_bytes());
        setup.send(&m);
        setup.send(b"\r\n");
        let lines = setup.until_tagged("s3");
        assert!(lines.last().unwrap().starts_with("s3 OK"), "{lines:?}");
    }
    setup.cmd("s4", "LOGOUT");

    let idlers = 5;
    let mut parked: Vec<(Conn, usize)> = (0..idlers)
        .map(|_| {
            let mut c = Conn::open(server.imap);
            c.cmd("a1", "LOGIN alice secret-a");
            let lines = c.cmd("a2", "SELECT INBOX");
            assert!(lines.iter().any(|l| l.starts_with("* 10 EXISTS")), "{lines:?}");
            c.send(b"a3 IDLE\r\n");
            assert!(line(&mut c).starts_with("+ "));
            (c, 10)
        })
        .collect();
    server.wait_held(idlers as u64);

    // Everything at once: four LMTP connections, two `deliver` loops, and a
    // session appending, copying, moving, flagging and expunging.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let port = server.lmtp;
            scope.spawn(move || lmtp_deliver(port, "alice", &format!("lmtp{t}"), 40));
        }
        for t in 0..2 {
            let server = &server;
            scope.spawn(move || {
                for i in 0..8 {
                    server.deliver("alice", &message(&format!("deliver{t} {i}")));
                }
            });
        }
        let server = &server;
        scope.spawn(move || {
            let mut c = Conn::open(server.imap);
            c.cmd("b1", "LOGIN alice secret-a");
            c.cmd("b2", "SELECT INBOX");
            for i in 0..15 {
                let m = message(&format!("appended {i}"));
                c.send(format!("b3 APPEND INBOX (\\Flagged) {{{}+}}\r\n", m.len()).as_bytes());
                c.send(&m);
                c.send(b"\r\n");
                let lines = c.until_tagged("b3");
                assert!(lines.last().unwrap().starts_with("b3 OK"), "{lines:?}");
                let mut ok = |tag: &str, command: &str| {
                    let lines = c.cmd(tag, command);
                    let done = lines.last().unwrap();
                    assert!(
                        done.starts_with(&format!("{tag} OK")),
                        "{command}: {lines:?}\nserver warnings:\n{}",
                        server.log_text().lines().filter(|l| l.contains("WARN")).collect::<Vec<_>>().join("\n")
                    );
                };
                match i % 5 {
                    0 => ok("b4", "STORE 1:3 +FLAGS (\\Seen)"),
                    1 => ok("b5", "MOVE 1:2 Archive"),
                    2 => {
                        ok("b6", "SELECT Archive");
                        ok("b7", "COPY 1:2 INBOX");
                        ok("b8", "SELECT INBOX");
                    }
                    3 => {
                        ok("b9", "STORE 2 +FLAGS.SILENT (\\Deleted)");
                        ok("b10", "EXPUNGE");
                    }
                    _ => ok("b11", "STORE 4 -FLAGS (\\Seen)"),
                }
            }
            c.cmd("b12", "LOGOUT");
        });
    });

    // The mailbox as a fresh session sees it.
    let mut fresh = Conn::open(server.imap);
    fresh.cmd("f1", "LOGIN alice secret-a");
    let lines = trimmed(fresh.cmd("f2", "EXAMINE INBOX"));
    let exists: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .unwrap_or_else(|| panic!("{lines:?}"));
    let truth = uids_and_flags(&trimmed(fresh.cmd("f3", "UID FETCH 1:* (FLAGS)")));
    assert_eq!(truth.len(), exists);
    // 10 seeded + 160 LMTP + 16 deliver + 15 appended + 6 copied - 6 moved - 3 expunged.
    assert_eq!(exists, 198, "{truth:?}");

    // Every idler was told of every change: its count follows the pushes
    // (EXISTS sets it, EXPUNGE lowers it) to the mailbox's count.
    for (n, (c, count)) in parked.iter_mut().enumerate() {
        c.set_timeout(Duration::from_secs(10));
        while *count != exists {
            let l = line(c);
            assert!(!l.is_empty(), "idler {n}: no more pushes at count {count}, mailbox has {exists}");
            let l = l.trim_end();
            if let Some(k) = l.strip_prefix("* ").and_then(|r| r.strip_suffix(" EXISTS")) {
                *count = k.parse().unwrap();
            } else if l.ends_with(" EXPUNGE") {
                *count -= 1;
            }
        }
    }
    // Handed back, each resumes with exactly the mailbox's messages and flags.
    for (n, (c, _)) in parked.iter_mut().enumerate() {
        c.send(b"DONE\r\n");
        let done = c.until_tagged("a3");
        assert!(done.last().unwrap().starts_with("a3 OK"), "idler {n}: {done:?}");
        let lines = trimmed(c.cmd("a4", "UID FETCH 1:* (FLAGS)"));
        assert!(lines.last().unwrap().starts_with("a4 OK"), "idler {n}: {lines:?}");
        assert_eq!(uids_and_flags(&lines), truth, "idler {n}");
    }
    let log = server.log_text();
    assert!(!log.contains("panicked") && !log.contains(" ERROR "), "{}", tail(&log, 40));
}
