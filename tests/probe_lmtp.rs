//! LMTP probed through the real `serve`: the 2023 SMTP smuggling payload
//! (a bare `LF . LF` end mark followed by a forged second transaction)
//! must deliver exactly one message, and `bare_line_endings = "reject"`
//! refuses such a message with 554 5.6.0.

mod imap_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use imap_support::{Server, ServerOptions};

/// Sends `script` to the LMTP port in one write and returns every reply
/// until the server closes (the script ends with QUIT).
fn lmtp_script(server: &Server, script: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", server.lmtp)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(script).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The files of `user`'s INBOX (new/ and cur/), contents sorted.
fn inbox_files(server: &Server, user: &str) -> Vec<Vec<u8>> {
    let maildir: PathBuf = server.dir.path().join("data/home").join(user).join("Maildir");
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(maildir.join(sub)).into_iter().flatten().flatten() {
            out.push(std::fs::read(entry.path()).unwrap());
        }
    }
    out.sort();
    out
}

/// Classic smuggling: the smuggled end mark is `LF . LF`, the forged
/// transaction uses bare-LF command lines (which the command reader
/// accepts), then the real `CRLF . CRLF`.
const SMUGGLING: &[u8] = b"LHLO mx.test\r\nMAIL FROM:<good@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\n\
From: good@example.org\r\nSubject: real\r\n\r\nreal body\n.\n\
MAIL FROM:<forged@bank.example>\nRCPT TO:<bob>\nRCPT TO:<alice>\nDATA\n\
From: forged@bank.example\nSubject: smuggled\n\nsend money\n.\n\
\r\n.\r\nQUIT\r\n";

#[test]
fn smuggled_second_message_is_not_delivered() {
    let server = Server::start(ServerOptions { workers: 1, ..ServerOptions::default() });
    let out = lmtp_script(&server, SMUGGLING);
    let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
    // 220, LHLO x5, MAIL, RCPT, 354, one 250 for alice, 221.
    assert_eq!(codes, ["220", "250", "250", "250", "250", "250", "250", "250", "354", "250", "221"], "{out}");
    assert!(inbox_files(&server, "bob").is_empty(), "the smuggled RCPT TO:<bob> delivered mail");
    let alice = inbox_files(&server, "alice");
    assert_eq!(alice.len(), 1, "alice got {} messages", alice.len());
    let text = String::from_utf8_lossy(&alice[0]);
    assert!(text.starts_with("Return-Path: <good@example.org>\r\n"), "{text}");
    assert_eq!(text.matches("Return-Path:").count(), 1, "{text}");
    assert!(!text.contains("Return-Path: <forged"), "{text}");
    // The smuggled bytes stay inside the first message, bare LF stored as CRLF.
    assert!(text.contains("real body\r\n.\r\nMAIL FROM:<forged@bank.example>\r\nRCPT TO:<bob>\r\n"), "{text}");
    assert!(text.ends_with("send money\r\n.\r\n\r\n"), "{text:?}");
}

#[test]
fn reject_mode_refuses_bare_line_endings() {
    let server = Server::start(ServerOptions {
        workers: 1,
        lmtp_extra: "bare_line_endings = \"reject\"\n".into(),
        ..ServerOptions::default()
    });
    let out = lmtp_script(&server, SMUGGLING);
    assert!(out.contains("\r\n354 "), "{out}");
    assert!(out.contains("\r\n554 5.6.0 <alice> Message contains a bare CR or LF"), "{out}");
    assert!(out.contains("\r\n221 2.0.0 "), "{out}");
    assert!(inbox_files(&server, "alice").is_empty());
    assert!(inbox_files(&server, "bob").is_empty());
    // A clean message on the same settings is delivered.
    let out = lmtp_script(
        &server,
        b"LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: clean\r\n\r\nok\r\n.\r\nQUIT\r\n",
    );
    assert!(out.contains("250 2.0.0 <alice> Saved as UID 1"), "{out}");
    assert_eq!(inbox_files(&server, "alice").len(), 1);
}

fn tmp_files(server: &Server, user: &str) -> usize {
    let tmp = server.dir.path().join("data/home").join(user).join("Maildir/tmp");
    std::fs::read_dir(tmp).map_or(0, |d| d.count())
}

/// Data is spooled to disk while it arrives: each recipient gets the same
/// body behind its own trace headers, and a body that is refused or cut
/// off leaves no file behind.
#[test]
fn spooled_data_is_copied_per_recipient_and_cleaned_up() {
    let server = Server::start(ServerOptions {
        workers: 1,
        lmtp_extra: "max_message_size = 300000\n".into(),
        ..ServerOptions::default()
    });
    let body: String = (0..2000).map(|i| format!("line {i} of a message big enough for several reads\r\n")).collect();
    let mut script = b"LHLO mx\r\nMAIL FROM:<s@x>\r\nRCPT TO:<bob>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: both\r\n\r\n".to_vec();
    script.extend_from_slice(body.as_bytes());
    script.extend_from_slice(b".\r\nQUIT\r\n");
    let out = lmtp_script(&server, &script);
    assert!(out.contains("250 2.0.0 <bob> Saved as UID 1\r\n250 2.0.0 <alice> Saved as UID 1\r\n"), "{out}");
    for user in ["alice", "bob"] {
        let files = inbox_files(&server, user);
        assert_eq!(files.len(), 1);
        let text = String::from_utf8_lossy(&files[0]);
        assert!(text.contains(&format!("Delivered-To: {user}\r\n")), "{text:.300}");
        assert_eq!(text.matches("Delivered-To:").count(), 1);
        assert!(text.ends_with(&format!("Subject: both\r\n\r\n{body}")), "{user}");
        assert_eq!(tmp_files(&server, user), 0, "{user}: spool or copy left in tmp/");
    }
    // Too large: refused with 552 after the dot, the partial spool removed.
    let mut big = b"LHLO mx\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice>\r\nDATA\r\n".to_vec();
    big.extend_from_slice("x".repeat(998).as_bytes());
    for _ in 0..400 {
        big.extend_from_slice(b"\r\nyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
        big.extend_from_slice("z".repeat(800).as_bytes());
    }
    big.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    let out = lmtp_script(&server, &big);
    assert!(out.contains("552 5.3.4 <alice> Message size exceeds"), "{out}");
    assert_eq!(tmp_files(&server, "alice"), 0);
    assert_eq!(inbox_files(&server, "alice").len(), 1);
    // Cut off in the middle of DATA: nothing stored, nothing left.
    let mut stream = TcpStream::connect(("127.0.0.1", server.lmtp)).unwrap();
    stream.write_all(b"LHLO mx\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: cut\r\n\r\n").unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tmp_files(&server, "alice") == 0 {
        assert!(std::time::Instant::now() < deadline, "no spool file while DATA is open");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    while tmp_files(&server, "alice") != 0 {
        assert!(std::time::Instant::now() < deadline, "spool file left after the client went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(inbox_files(&server, "alice").len(), 1);
}
