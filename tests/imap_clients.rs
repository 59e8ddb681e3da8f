//! Real IMAP clients against `dormouse serve`: Python's imaplib (plain,
//! STARTTLS, IMAPS), imaplib2, and raw protocol checks of the master/worker
//! hand-over.

mod imap_support;

use std::time::Duration;

use imap_support::{Conn, Server, ServerOptions};

#[test]
fn imaplib_full_session() {
    let server = Server::start(ServerOptions::default());
    let out = server.python("imap_full.py", &server.py_args("alice", "secret-a"));
    assert!(out.contains("imap_full: ok"), "{out}");
}

#[test]
fn imaplib_two_sessions_same_worker_see_each_other() {
    // One worker: both sessions live in one process, so the in-process
    // change hook must wake the idling one.
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    let out = server.python("imap_two_sessions.py", &server.py_args("bob", "secret-b"));
    assert!(out.contains("imap_two_sessions: ok"), "{out}");
}

#[test]
fn imaplib_two_sessions_in_different_workers_see_each_other() {
    // Two workers, round robin: the sessions land in different processes,
    // so the IDLE wake-up must travel over the event bus.
    let server = Server::start(ServerOptions::default());
    let out = server.python("imap_two_sessions.py", &server.py_args("alice", "secret-a"));
    assert!(out.contains("imap_two_sessions: ok"), "{out}");
}

#[test]
fn imaplib_idle_woken_by_lmtp_delivery() {
    let server = Server::start(ServerOptions::default());
    let mut args = server.py_args("alice", "secret-a");
    args.push(server.lmtp.to_string());
    // Generous bound for a shared 2-core machine; the script prints the real numbers.
    args.push("1000".into());
    let out = server.python("imap_idle_delivery.py", &args);
    println!("{out}");
}

#[test]
fn imaplib_idle_woken_by_dormouse_deliver() {
    let server = Server::start(ServerOptions::default());
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    let select = c.cmd("a2", "SELECT INBOX");
    assert!(select.iter().any(|l| l.starts_with("* 0 EXISTS")), "{select:?}");
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().starts_with("+ "));
    let start = std::time::Instant::now();
    server.deliver("alice", b"Subject: via deliver\r\n\r\nhello\r\n");
    let delivered = start.elapsed();
    c.set_timeout(Duration::from_secs(10));
    let line = c.line();
    assert_eq!(line, "* 1 EXISTS\r\n", "after deliver ({delivered:?}): {line:?}");
    println!("IDLE woken {:?} after `dormouse deliver` was started", start.elapsed());
    c.send(b"DONE\r\n");
    let rest = c.until_tagged("a3");
    assert!(rest.last().unwrap().starts_with("a3 OK"), "{rest:?}");
}

/// Arguments of the TLS scripts: host, STARTTLS port, IMAPS port, alice's login.
fn tls_script_args(server: &Server) -> Vec<String> {
    vec!["127.0.0.1".into(), server.imap.to_string(), server.imaps.to_string(), "alice".into(), "secret-a".into()]
}

#[test]
fn imaplib_starttls_and_imaps() {
    let server = Server::start(ServerOptions::default());
    let args = tls_script_args(&server);
    let out = server.python("imap_tls.py", &args);
    assert!(out.contains("imap_tls: ok"), "{out}");
}

#[test]
fn commands_pipelined_after_login_over_tls_reach_the_worker() {
    let server = Server::start(ServerOptions::default());
    let args = tls_script_args(&server);
    let out = server.python("imap_tls_pipelined.py", &args);
    assert!(out.contains("imap_tls_pipelined: ok"), "{out}");
}

#[test]
fn imaplib2_client_with_idle() {
    let server = Server::start(ServerOptions::default());
    let mut args = server.py_args("bob", "secret-b");
    args.push(server.lmtp.to_string());
    let out = server.python("imaplib2_client.py", &args);
    assert!(out.contains("imaplib2_client: ok"), "{out}");
}

#[test]
fn commands_pipelined_after_login_reach_the_worker() {
    let server = Server::start(ServerOptions::default());
    let mut c = Conn::open(server.imap);
    c.send(b"a1 LOGIN alice secret-a\r\na2 SELECT INBOX\r\na3 NOOP\r\na4 LOGOUT\r\n");
    let all = c.read_to_close();
    for tag in ["a1", "a2", "a3", "a4"] {
        assert!(all.contains(&format!("\r\n{tag} OK")) || all.starts_with(&format!("{tag} OK")), "{tag} missing in {all}");
    }
    assert!(all.contains("* BYE"), "{all}");
    let order: Vec<usize> = ["a1 OK", "a2 OK", "a3 OK", "a4 OK"].iter().map(|t| all.find(t).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "answers out of order: {all}");
}

#[test]
fn pre_login_commands_in_the_master() {
    let server = Server::start(ServerOptions::default());
    let mut c = Conn::open(server.imap);
    let caps = c.cmd("c1", "CAPABILITY");
    assert!(caps[0].contains("STARTTLS") && caps[0].contains("SASL-IR") && caps[0].contains("AUTH=PLAIN"), "{caps:?}");
    let id = c.cmd("c2", "ID (\"name\" \"raw-test\")");
    assert!(id.last().unwrap().starts_with("c2 OK"), "{id:?}");
    assert!(c.cmd("c3", "NOOP").last().unwrap().starts_with("c3 OK"));
    // AUTHENTICATE PLAIN with SASL-IR: "\0bob\0secret-b".
    let auth = c.cmd("c4", "AUTHENTICATE PLAIN AGJvYgBzZWNyZXQtYg==");
    assert!(auth.last().unwrap().starts_with("c4 OK"), "{auth:?}");
    let sel = c.cmd("c5", "SELECT INBOX");
    assert!(sel.last().unwrap().starts_with("c5 OK"), "{sel:?}");
    let bye = c.cmd("c6", "LOGOUT");
    assert!(bye[0].starts_with("* BYE"), "{bye:?}");
}

#[test]
fn worker_crash_is_logged_and_the_worker_restarted() {
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    let mut victim = Conn::open(server.imap);
    assert!(victim.cmd("v1", "LOGIN alice secret-a").last().unwrap().starts_with("v1 OK"));
    assert!(victim.cmd("v2", "SELECT INBOX").last().unwrap().starts_with("v2 OK"));
    let pids = server.worker_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let status = std::process::Command::new("kill").args(["-KILL", &pids[0].to_string()]).status().unwrap();
    assert!(status.success());
    // The client of the dead worker sees its connection end.
    victim.set_timeout(Duration::from_secs(10));
    assert_eq!(victim.line(), "");
    let log = server.wait_for_log("lost_sessions=1", Duration::from_secs(30));
    assert!(log.contains("IMAP worker exited; restarting it"), "{log}");
    // A new login is served by the restarted worker.
    let mut c = Conn::open(server.imap);
    assert!(c.cmd("n1", "LOGIN alice secret-a").last().unwrap().starts_with("n1 OK"));
    assert!(c.cmd("n2", "SELECT INBOX").last().unwrap().starts_with("n2 OK"));
    let new_pids = server.worker_pids();
    assert_eq!(new_pids.len(), 1);
    assert_ne!(new_pids, pids);
}

#[test]
fn shutdown_stops_workers_gracefully() {
    let mut server = Server::start(ServerOptions::default());
    let mut c = Conn::open(server.imap);
    assert!(c.cmd("a1", "LOGIN alice secret-a").last().unwrap().starts_with("a1 OK"));
    assert!(c.cmd("a2", "NOOP").last().unwrap().starts_with("a2 OK"));
    let log = server.stop();
    for role in ["role=\"master\"", "role=\"worker 0\"", "role=\"worker 1\""] {
        assert!(
            log.lines().any(|l| l.contains("counters") && l.contains(role) && l.contains("why=\"shutdown\"")),
            "no shutdown counters for {role}:\n{log}"
        );
    }
    assert_eq!(log.matches("IMAP worker stopped").count(), 2, "{log}");
    assert!(!log.contains("restarting it"), "{log}");
    // The session's client is told, then sees the end of the connection.
    c.set_timeout(Duration::from_secs(10));
    assert_eq!(c.read_to_close(), "* BYE [UNAVAILABLE] Server shutting down\r\n");
}

/// A new user finds Drafts, Sent, Trash and Junk with their SPECIAL-USE
/// attributes, subscribed, at first login; a client can save to Sent at once.
#[test]
fn first_login_creates_the_special_use_mailboxes() {
    let server = imap_support::Server::start(imap_support::ServerOptions::default());
    let mut c = imap_support::Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    let list: Vec<String> = c.cmd("a2", "LIST \"\" \"*\"").into_iter().map(|l| l.trim_end().to_string()).collect();
    for (name, attr) in [("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Trash", "\\Trash"), ("Junk", "\\Junk")] {
        assert!(list.iter().any(|l| l.contains(attr) && l.ends_with(&format!(" \"{name}\""))), "{name}: {list:?}");
    }
    let lsub = c.cmd("a3", "LSUB \"\" \"*\"");
    assert_eq!(lsub.iter().filter(|l| l.starts_with("* LSUB")).count(), 4, "{lsub:?}");
    let m = b"Subject: sent\r\n\r\nhi\r\n";
    c.send(format!("a4 APPEND Sent (\\Seen) {{{}+}}\r\n", m.len()).as_bytes());
    c.send(m);
    c.send(b"\r\n");
    assert!(c.until_tagged("a4").last().unwrap().starts_with("a4 OK"));
    // Deleted by the user, Trash comes back at the next login (Dovecot's
    // `auto = subscribe` does the same); nothing is created twice.
    assert!(c.cmd("a5", "DELETE Trash").last().unwrap().starts_with("a5 OK"));
    c.cmd("a6", "LOGOUT");
    let mut again = imap_support::Conn::open(server.imap);
    again.cmd("b1", "LOGIN alice secret-a");
    let list = again.cmd("b2", "LIST \"\" \"*\"");
    assert_eq!(list.iter().filter(|l| l.trim_end().ends_with(" \"Trash\"")).count(), 1, "{list:?}");
    let status = again.cmd("b3", "STATUS Sent (MESSAGES)");
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
}
