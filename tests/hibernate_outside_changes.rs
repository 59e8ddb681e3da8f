//! `dormouse serve` with `storage.change_source = "both"` (the default): a
//! HIBERNATED IDLE client sees mail that another program put into, changed
//! in, or removed from the Maildir. The hibernate process watches the users
//! of its sessions and publishes on the bus; the session stays hibernated.

mod imap_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use imap_support::{dormouse, Conn, Server, ServerOptions};

/// Longest accepted delay from the file operation to the client's line.
/// The watcher answers in tens of milliseconds; the bound is generous
/// because the test machine is shared.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Every hand-back, whatever the reason.
fn hand_backs(server: &Server) -> u64 {
    server.stats().iter().filter(|(n, _)| n.starts_with("hand-backs")).map(|(_, v)| v).sum()
}

/// The next response line without CRLF, and how long it took to come.
fn timed_line(c: &mut Conn, since: Instant) -> (String, Duration) {
    let line = c.line().trim_end().to_string();
    (line, since.elapsed())
}

fn maildir(server: &Server, user: &str) -> PathBuf {
    server.dir.path().join("data/home").join(user).join("Maildir")
}

#[test]
fn hibernated_idle_client_sees_outside_cp_flag_rename_and_rm() {
    let server = Server::start(ServerOptions {
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    });
    server.deliver("alice", b"From: a@example.org\r\nSubject: one\r\n\r\nhello\r\n");
    let maildir = maildir(&server, "alice");
    assert!(maildir.join("new").is_dir() || maildir.join("cur").is_dir(), "no Maildir at {}", maildir.display());

    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    let selected = c.cmd("a2", "SELECT INBOX");
    assert!(selected.iter().any(|l| l.trim_end() == "* 1 EXISTS"), "{selected:?}");
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    server.wait_held(1);
    let who = Command::new(dormouse()).args(["--config", server.config.to_str().unwrap(), "who"]).output().unwrap();
    let who = String::from_utf8_lossy(&who.stdout);
    assert!(who.lines().any(|l| l.starts_with("alice ") && l.contains("hibernated")), "{who}");

    // A plain copy into new/ (procmail/Postfix style, without tmp/).
    let t = Instant::now();
    std::fs::write(maildir.join("new/outside.1"), b"Subject: cp\r\n\r\nbody\r\n").unwrap();
    let (line, cp_delay) = timed_line(&mut c, t);
    assert_eq!(line, "* 2 EXISTS");

    // mutt marks it seen: moved to cur/ with `:2,S`.
    let t = Instant::now();
    std::fs::rename(maildir.join("new/outside.1"), maildir.join("cur/outside.1:2,S")).unwrap();
    let (line, flag_delay) = timed_line(&mut c, t);
    assert!(line.starts_with("* 2 FETCH (") && line.contains("FLAGS (\\Seen)"), "{line}");

    // And deletes it.
    let t = Instant::now();
    std::fs::remove_file(maildir.join("cur/outside.1:2,S")).unwrap();
    let (line, rm_delay) = timed_line(&mut c, t);
    assert_eq!(line, "* 2 EXPUNGE");

    eprintln!("hibernated: outside cp -> EXISTS {cp_delay:?}, flag rename -> FETCH {flag_delay:?}, rm -> EXPUNGE {rm_delay:?}");
    for (what, delay) in [("cp", cp_delay), ("flag rename", flag_delay), ("rm", rm_delay)] {
        assert!(delay < MAX_DELAY, "{what} took {delay:?}\nlog:\n{}", server.log_text());
    }

    // All of it was written by the hibernate process.
    assert_eq!(server.stat("sessions held"), 1);
    assert_eq!(hand_backs(&server), 0, "{:?}", server.stats());
    assert!(server.stat("notifications written") >= 3, "{:?}", server.stats());

    // Nothing announced twice: the next line is the answer to DONE.
    c.send(b"DONE\r\n");
    let lines: Vec<String> = c.until_tagged("a3").into_iter().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(lines, vec!["a3 OK Idle completed.".to_string()]);
    // The worker's view agrees after the hand-back.
    let lines = c.cmd("a4", "UID FETCH 1:* (FLAGS)");
    assert_eq!(lines.iter().filter(|l| l.starts_with("* ") && l.contains("FETCH")).count(), 1, "{lines:?}");
}

/// Keeps a worker session busy (a NOOP every 200 ms, so it never
/// hibernates) for `time`; returns the untagged lines it got.
fn keep_busy(o: &mut Conn, n: &mut u32, time: Duration) -> Vec<String> {
    let end = Instant::now() + time;
    let mut untagged = Vec::new();
    while Instant::now() < end {
        *n += 1;
        let tag = format!("n{n}");
        let lines = o.cmd(&tag, "NOOP");
        assert!(lines.last().unwrap().starts_with(&format!("{tag} OK")), "{lines:?}");
        untagged.extend(lines.into_iter().filter(|l| l.starts_with("* ")).map(|l| l.trim_end().to_string()));
        std::thread::sleep(Duration::from_millis(200));
    }
    untagged
}

#[test]
fn a_worker_and_the_hibernate_process_watching_one_user_announce_each_change_once() {
    let server = Server::start(ServerOptions {
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    });
    server.deliver("alice", b"From: a@example.org\r\nSubject: one\r\n\r\nhello\r\n");
    let maildir = maildir(&server, "alice");
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "SELECT INBOX");
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    server.wait_held(1);
    // A second session of the same user stays busy in a worker, so that
    // worker watches the Maildir too.
    let mut o = Conn::open(server.imap);
    o.cmd("b1", "LOGIN alice secret-a");
    o.cmd("b2", "EXAMINE INBOX");
    let mut n = 0;
    keep_busy(&mut o, &mut n, Duration::from_millis(600));

    // The busy session's NOOPs run right after each change, usually before
    // the watchers' reconcile: whichever locked load commits the change
    // first publishes it, the others find nothing.
    std::fs::write(maildir.join("new/outside.1"), b"Subject: cp\r\n\r\nbody\r\n").unwrap();
    let mut seen = keep_busy(&mut o, &mut n, Duration::from_millis(300));
    std::fs::rename(maildir.join("new/outside.1"), maildir.join("cur/outside.1:2,F")).unwrap();
    seen.extend(keep_busy(&mut o, &mut n, Duration::from_millis(300)));
    assert_eq!(server.stat("sessions held"), 1, "the busy session hibernated: {:?}", server.stats());

    // Each change was published once (two watchers would make 4 events)
    // and the hibernated client got each change once.
    c.send(b"DONE\r\n");
    let lines: Vec<String> = c.until_tagged("a3").into_iter().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "* 2 EXISTS");
    assert!(lines[1].starts_with("* 2 FETCH (") && lines[1].contains("\\Flagged"), "{lines:?}");
    assert_eq!(lines[2], "a3 OK Idle completed.");
    // And so did the worker's session.
    assert_eq!(seen.iter().filter(|l| l.ends_with("EXISTS")).count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|l| l.contains("FETCH")).count(), 1, "{seen:?}");
    assert_eq!(server.stat("events in"), 2, "{:?}", server.stats());
    assert_eq!(hand_backs(&server), 0, "{:?}", server.stats());
}
