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
