//! Concurrent APPENDs and LMTP deliveries to one INBOX against a real
//! `dormouse serve` (#13): every APPEND answers OK with APPENDUID, every
//! delivery 250, all UIDs unique and the mailbox holds every message once.
//! A third program moves files from `new/` to `cur/` and changes their flags
//! meanwhile (without our lock), the way Dovecot or a second server on the
//! same Maildir does.

mod imap_support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imap_support::{tail, Conn, Server, ServerOptions};

const IMAP_CLIENTS: u32 = 8;
const LMTP_CLIENTS: u32 = 4;
const PER_CLIENT: u32 = 25;
const SEEDED: u32 = 2000;

fn message(kind: &str, client: u32, n: u32) -> String {
    format!("From: {kind}{client}@example.org\r\nMessage-ID: <{kind}{client}.{n}@example.org>\r\nSubject: {kind} {client} {n}\r\n\r\nbody {n}\r\n")
}

/// One IMAP client appending `PER_CLIENT` messages; returns the APPENDUID UIDs
/// or the first answer that was not OK [APPENDUID ...].
fn imap_client(port: u16, client: u32) -> Result<Vec<u32>, String> {
    let mut c = Conn::open(port);
    let login = c.cmd("l", "LOGIN alice secret-a");
    if !login.last().is_some_and(|l| l.starts_with("l OK")) {
        return Err(format!("login: {login:?}"));
    }
    let mut uids = Vec::new();
    for n in 0..PER_CLIENT {
        let msg = message("imap", client, n);
        c.send(format!("a{n} APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes());
        let cont = c.line();
        if !cont.starts_with('+') {
            return Err(format!("no continuation: {cont}"));
        }
        c.send(format!("{msg}\r\n").as_bytes());
        let answer = c.until_tagged(&format!("a{n}"));
        let last = answer.last().unwrap();
        let uid = last
            .strip_prefix(&format!("a{n} OK [APPENDUID "))
            .and_then(|r| r.split(' ').nth(1))
            .and_then(|u| u.trim_end_matches(|ch: char| !ch.is_ascii_digit()).parse::<u32>().ok());
        match uid {
            Some(u) => uids.push(u),
            None => return Err(format!("APPEND {n}: {answer:?}")),
        }
    }
    c.cmd("z", "LOGOUT");
    Ok(uids)
}

/// One LMTP connection delivering `PER_CLIENT` messages, one transaction each.
fn lmtp_client(port: u16, client: u32) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let reply = |reader: &mut BufReader<TcpStream>| -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    let greeting = reply(&mut reader);
    if !greeting.starts_with("220") {
        return Err(format!("greeting {greeting}"));
    }
    writer.write_all(b"LHLO test\r\n").unwrap();
    reply(&mut reader);
    for n in 0..PER_CLIENT {
        writer.write_all(b"MAIL FROM:<s@example.org>\r\n").unwrap();
        let r = reply(&mut reader);
        if !r.starts_with("250") {
            return Err(format!("MAIL {n}: {r}"));
        }
        writer.write_all(b"RCPT TO:<alice@example.org>\r\n").unwrap();
        let r = reply(&mut reader);
        if !r.starts_with("250") {
            return Err(format!("RCPT {n}: {r}"));
        }
        writer.write_all(b"DATA\r\n").unwrap();
        let r = reply(&mut reader);
        if !r.starts_with("354") {
            return Err(format!("DATA {n}: {r}"));
        }
        writer.write_all(format!("{}.\r\n", message("lmtp", client, n)).as_bytes()).unwrap();
        let r = reply(&mut reader);
        if !r.starts_with("250") {
            return Err(format!("delivery {n}: {r}"));
        }
    }
    writer.write_all(b"QUIT\r\n").unwrap();
    Ok(())
}

/// One round of another program on the Maildir without our lock, the way
/// Dovecot does: files in `new/` move to `cur/` (adding `:2,`), files in
/// `cur/` get `\Seen` toggled (renamed within `cur/`).
fn outside_round(maildir: &Path) -> u32 {
    let mut renamed = 0;
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(maildir.join(sub)) else { continue };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let new_name = match name.split_once(":2,") {
                None => format!("{name}:2,"),
                Some((base, "")) => format!("{base}:2,S"),
                Some((base, _)) => format!("{base}:2,"),
            };
            if std::fs::rename(entry.path(), maildir.join("cur").join(new_name)).is_ok() {
                renamed += 1;
            }
        }
    }
    renamed
}

#[test]
fn eight_imap_appenders_and_four_lmtp_senders_all_succeed_with_unique_uids() {
    let server = Server::start(ServerOptions::default());
    let maildir: PathBuf = server.dir.path().join("data/home/alice/Maildir");
    // First contact creates the Maildir.
    let mut probe = Conn::open(server.imap);
    probe.cmd("l", "LOGIN alice secret-a");
    probe.cmd("s", "SELECT INBOX");
    assert!(maildir.join("new").is_dir(), "Maildir at {}", maildir.display());
    // Older mail, so that reading cur/ takes several getdents calls and the
    // outside renames have a window to fall into.
    for n in 0..SEEDED {
        std::fs::write(maildir.join("cur").join(format!("1700000000.M{n}P1.seed,S=60:2,")), message("seed", 0, n)).unwrap();
    }
    probe.cmd("n", "NOOP");

    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU32::new(0));
    let mover = {
        let (maildir, stop, moved) = (maildir.clone(), stop.clone(), moved.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                moved.fetch_add(outside_round(&maildir), Ordering::Relaxed);
            }
        })
    };
    let (imap, lmtp) = (server.imap, server.lmtp);
    let imap_threads: Vec<_> = (0..IMAP_CLIENTS).map(|c| std::thread::spawn(move || imap_client(imap, c))).collect();
    let lmtp_threads: Vec<_> = (0..LMTP_CLIENTS).map(|c| std::thread::spawn(move || lmtp_client(lmtp, c))).collect();
    let mut errors = Vec::new();
    let mut uids = Vec::new();
    for t in imap_threads {
        match t.join().unwrap() {
            Ok(u) => uids.extend(u),
            Err(e) => errors.push(e),
        }
    }
    for t in lmtp_threads {
        if let Err(e) = t.join().unwrap() {
            errors.push(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
    assert!(errors.is_empty(), "failures: {errors:?}\nlog:\n{}", tail(&server.log_text(), 40));
    assert!(moved.load(Ordering::Relaxed) > 0, "the mover never raced");

    let unique: HashSet<u32> = uids.iter().copied().collect();
    assert_eq!(unique.len(), uids.len(), "APPENDUID UIDs are unique");
    let total = (IMAP_CLIENTS + LMTP_CLIENTS) * PER_CLIENT + SEEDED;
    let status = probe.cmd("t", "STATUS INBOX (MESSAGES UIDNEXT)");
    assert!(status[0].contains(&format!("MESSAGES {total}")), "{status:?}");
    let fetch = probe.cmd("f", "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let mut ids = HashSet::new();
    let mut fetched_uids = HashSet::new();
    for line in &fetch {
        if let Some(id) = line.strip_prefix("Message-ID: ") {
            assert!(ids.insert(id.trim().to_string()), "message {id} stored twice");
        }
        if let Some(rest) = line.split("UID ").nth(1) {
            fetched_uids.insert(rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse::<u32>().unwrap());
        }
    }
    assert_eq!(ids.len() as u32, total, "every message present once");
    let missing: Vec<&u32> = unique.difference(&fetched_uids).collect();
    assert!(missing.is_empty(), "APPENDUIDs without a message: {missing:?}\n{}", fetch[..fetch.len().min(12)].join(""));
    let log = server.log_text();
    assert!(!log.contains("vanished before it got a UID") && !log.contains(" ERROR "), "{}", tail(&log, 40));
}
