//! NOTIFY (RFC 5465) with `dormouse serve`: a hibernated session with
//! NOTIFY in effect is told about other mailboxes (STATUS after a delivery,
//! LIST for a new mailbox) by the hibernate process itself, from the bus,
//! without being handed back to a worker.

mod imap_support;

use std::io::Write;
use std::process::{Command, Stdio};

use imap_support::{dormouse, Conn, Server, ServerOptions};

fn server() -> Server {
    Server::start(ServerOptions {
        sections_extra: "[hibernate]\ntimeout_secs = 1\nidle_after_secs = 2\nprocesses = 1\nkeepalive_secs = 600\n".into(),
        ..ServerOptions::default()
    })
}

fn line(c: &mut Conn) -> String {
    c.line().trim_end().to_string()
}

/// `dormouse deliver -d user -m mailbox`, as an MDA would.
fn deliver_to(server: &Server, user: &str, mailbox: &str, subject: &str) {
    let mut child = Command::new(dormouse())
        .args(["--config", server.config.to_str().unwrap(), "deliver", "-d", user, "-m", mailbox])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let message = format!("From: a@example.org\r\nTo: {user}@example.org\r\nSubject: {subject}\r\n\r\nhello\r\n");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "deliver: {}", String::from_utf8_lossy(&out.stderr));
}

fn hand_backs(server: &Server) -> u64 {
    hibernate::core::HandBackReason::ALL.iter().map(|r| server.stat(&format!("hand-backs {}", r.as_str()))).sum()
}

#[test]
fn hibernated_notify_session_gets_other_mailboxes_status_and_list_without_waking() {
    let server = server();
    let mut c = Conn::open(server.imap);
    c.cmd("a1", "LOGIN alice secret-a");
    c.cmd("a2", "CREATE Other");
    deliver_to(&server, "alice", "Other", "before");
    c.cmd("a3", "SELECT INBOX");
    let lines = c.cmd("a4", "NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))");
    assert_eq!(lines.last().unwrap().trim_end(), "a4 OK NOTIFY completed.", "{lines:?}");
    c.send(b"a5 IDLE\r\n");
    assert!(line(&mut c).starts_with("+ "));
    server.wait_held(1);
    assert_eq!(server.stat("hibernations"), 1);

    // A delivery to another mailbox: a STATUS from the hibernate process.
    deliver_to(&server, "alice", "Other", "during");
    assert_eq!(line(&mut c), "* STATUS \"Other\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)");
    // A mailbox created by another session: a LIST.
    let mut other = Conn::open(server.imap);
    other.cmd("b1", "LOGIN alice secret-a");
    other.cmd("b2", "CREATE Fresh");
    assert_eq!(line(&mut c), "* LIST () \"/\" \"Fresh\"");
    other.cmd("b3", "LOGOUT");
    // Still parked: never handed back, the hibernate process wrote both.
    assert_eq!(server.stat("sessions held"), 1);
    assert_eq!(hand_backs(&server), 0);
    assert!(server.stat("notifications written") >= 2, "{:?}", server.stats());

    // The NOTIFY state comes back with the session: after a hand-back
    // (FETCH), the worker reports the next delivery the same way.
    c.send(b"DONE\r\n");
    assert_eq!(line(&mut c), "a5 OK Idle completed.");
    let lines = c.cmd("a6", "UID FETCH 1:* UID");
    assert!(lines.last().unwrap().starts_with("a6 OK"), "{lines:?}");
    assert_eq!(server.stat("hand-backs command"), 1);
    deliver_to(&server, "alice", "Other", "after");
    assert_eq!(line(&mut c), "* STATUS \"Other\" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)");
}
