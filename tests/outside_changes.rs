//! `dormouse serve` with `storage.change_source = "both"` (the default): an
//! IDLE client sees mail that another program (a plain `cp`, mutt, `rm`)
//! put into, changed in, or removed from the Maildir.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, idle_in_empty_inbox, imap_until, TestEnv};

/// A running `dormouse serve`, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts serve for `alice` and returns a session IDLE in INBOX.
fn idle_session(env: &TestEnv, port: u16) -> (Server, TcpStream, BufReader<TcpStream>) {
    env.add_user("alice", "a-pw");
    let server = Server(env.command().arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let (w, r) = idle_in_empty_inbox(port, "alice", "a-pw");
    (server, w, r)
}

#[test]
fn idle_client_sees_outside_delivery_flag_change_and_delete() {
    let port = free_port();
    let env = TestEnv::new("", &format!("[lmtp]\nlisten = \"\"\n[imap]\nlisten = \"127.0.0.1:{port}\"\nlisten_tls = \"\"\n"));
    let (_server, mut w, mut r) = idle_session(&env, port);
    let maildir = env.home("alice").join("Maildir");

    // A plain copy into new/ (procmail/Postfix style without tmp/).
    let t = Instant::now();
    std::fs::write(maildir.join("new/outside.1"), b"Subject: cp\r\n\r\nbody\r\n").unwrap();
    let pushed = imap_until(&mut r, "* 1 EXISTS");
    eprintln!("outside cp -> * 1 EXISTS after {:?}", t.elapsed());
    assert!(!pushed.contains("BYE"), "{pushed}");

    // mutt marks it seen (moves it to cur/ with :2,S).
    let t = Instant::now();
    // The SELECTed session may already have moved it to cur/ (\\Recent).
    let current = ["new/outside.1", "cur/outside.1:2,"].iter().map(|p| maildir.join(p)).find(|p| p.exists()).unwrap();
    std::fs::rename(current, maildir.join("cur/outside.1:2,S")).unwrap();
    let pushed = imap_until(&mut r, "* 1 FETCH");
    eprintln!("outside flag rename -> * 1 FETCH after {:?}", t.elapsed());
    assert!(pushed.contains("\\Seen"), "{pushed}");

    // And deletes it.
    let t = Instant::now();
    std::fs::remove_file(maildir.join("cur/outside.1:2,S")).unwrap();
    imap_until(&mut r, "* 1 EXPUNGE");
    eprintln!("outside rm -> * 1 EXPUNGE after {:?}", t.elapsed());

    w.write_all(b"DONE\r\n").unwrap();
    imap_until(&mut r, "c OK");
}

#[test]
fn change_source_hooks_announces_nothing_from_outside() {
    let port = free_port();
    let env = TestEnv::new(
        "",
        &format!("[lmtp]\nlisten = \"\"\n[imap]\nlisten = \"127.0.0.1:{port}\"\nlisten_tls = \"\"\n[storage]\nchange_source = \"hooks\"\n"),
    );
    let (_server, mut w, mut r) = idle_session(&env, port);
    let maildir = env.home("alice").join("Maildir");
    std::fs::write(maildir.join("new/outside.1"), b"Subject: cp\r\n\r\nbody\r\n").unwrap();
    r.get_ref().set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut line = String::new();
    let quiet = r.read_line(&mut line).is_err();
    assert!(quiet, "unexpected push without a watcher: {line}");
    r.get_ref().set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The next command still sees it.
    w.write_all(b"DONE\r\n").unwrap();
    let mut out = imap_until(&mut r, "c OK");
    w.write_all(b"d NOOP\r\n").unwrap();
    out.push_str(&imap_until(&mut r, "d OK"));
    assert!(out.contains("* 1 EXISTS"), "{out}");
}

