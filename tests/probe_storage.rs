//! Storage probed through the real `serve` (#14): `kill -9` in the middle
//! of a bulk COPY / MOVE, and a full disk.

mod imap_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imap_support::{dormouse, free_port, tail};

/// A `serve` over a data directory that outlives it (restarts, kills).
struct Probe {
    dir: tempfile::TempDir,
    config: PathBuf,
    imap: u16,
    lmtp: u16,
    child: Option<Child>,
}

impl Probe {
    /// Config with one worker and the user alice; not started yet.
    fn new(data_dir: Option<&Path>) -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let (imap, lmtp) = (free_port(), free_port());
        let data = data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let config = dir.path().join("dormouse.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[log]\nlevel = \"info\"\n[lmtp]\nlisten = \"127.0.0.1:{lmtp}\"\n\
                 [imap]\nlisten = \"127.0.0.1:{imap}\"\nlisten_tls = \"\"\nworkers = 1\n"
            ),
        )
        .unwrap();
        let out = Command::new(dormouse())
            .args(["--config", config.to_str().unwrap(), "user", "add", "alice", "--password", "secret-a", "--scheme", "PLAIN"])
            .output()
            .unwrap();
        assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
        Probe { dir, config, imap, lmtp, child: None }
    }

    fn maildir(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let data = text.lines().next().unwrap().trim_start_matches("data_dir = ").trim_matches('"').to_string();
        PathBuf::from(data).join("home/alice/Maildir")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Starts `serve` (appending to the log) and waits for the greeting.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        let child = Command::new(dormouse())
            .args(["--config", self.config.to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.imap)).is_err() {
            assert!(Instant::now() < deadline, "serve did not start:\n{}", tail(&self.log_text(), 30));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL for serve and every process below it, workers first.
    fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let mut all = vec![child.id()];
        let mut i = 0;
        while i < all.len() {
            for task in std::fs::read_dir(format!("/proc/{}/task", all[i])).into_iter().flatten().flatten() {
                let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                all.extend(kids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
            i += 1;
        }
        for pid in all.iter().rev() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = child.wait();
    }

    /// SIGTERM and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A raw IMAP client that can read literals.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tags: u32,
}

/// One response line, with the literals it carried.
#[derive(Debug)]
struct Line {
    text: String,
    literals: Vec<Vec<u8>>,
}

impl Imap {
    fn login(port: u16) -> Imap {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = Imap { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream, tags: 0 };
        let greeting = c.read_line();
        assert!(greeting.text.starts_with("* OK"), "{greeting:?}");
        c.ok("LOGIN alice secret-a");
        c
    }

    fn read_line(&mut self) -> Line {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let mut part = Vec::new();
            self.reader.read_until(b'\n', &mut part).unwrap();
            assert!(!part.is_empty(), "connection closed");
            let s = String::from_utf8_lossy(&part).into_owned();
            let trimmed = s.trim_end_matches(['\r', '\n']);
            text.push_str(trimmed);
            let n = trimmed
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            let Some(n) = n else { return Line { text, literals } };
            let mut lit = vec![0; n];
            self.reader.read_exact(&mut lit).unwrap();
            literals.push(lit);
        }
    }

    /// Sends a command and returns all lines up to its tagged answer.
    fn cmd(&mut self, command: &str) -> Vec<Line> {
        self.tags += 1;
        let tag = format!("t{}", self.tags);
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes()).unwrap();
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let done = line.text.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    fn ok(&mut self, command: &str) -> Vec<Line> {
        let lines = self.cmd(command);
        let last = &lines.last().unwrap().text;
        assert!(last.split(' ').nth(1) == Some("OK"), "{command}: {last}");
        lines
    }

    /// UID -> full message of every message in `mailbox`.
    fn contents(&mut self, mailbox: &str) -> Vec<(u32, Vec<u8>)> {
        self.ok(&format!("EXAMINE {mailbox}"));
        let lines = self.ok("UID FETCH 1:* (UID BODY.PEEK[])");
        let mut out = Vec::new();
        for l in lines.iter().filter(|l| l.text.contains(" FETCH (")) {
            let uid = l.text.split("UID ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
            out.push((uid, l.literals.first().cloned().unwrap_or_default()));
        }
        out
    }
}

fn seed_message(n: u32) -> Vec<u8> {
    let mut body = format!("From: seed@example.org\r\nMessage-ID: <seed{n}@probe>\r\nSubject: seed {n}\r\n\r\n");
    let mut x = n.wrapping_mul(2_654_435_761).wrapping_add(1);
    for line in 0..8 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body.push_str(&format!("line {line} of {n}: {x:08x}{:08x}\r\n", x.rotate_left(7)));
    }
    body.into_bytes()
}

/// Writes `count` messages straight into INBOX's `cur/` (another program's
/// mail: serve numbers them on first sight).
fn seed(maildir: &Path, count: u32) -> HashMap<String, Vec<u8>> {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mut expected = HashMap::new();
    for n in 0..count {
        let data = seed_message(n);
        let name = format!("1700000000.M{n}P1.probe,S={}:2,S", data.len());
        std::fs::write(maildir.join("cur").join(name), &data).unwrap();
        expected.insert(format!("<seed{n}@probe>"), data);
    }
    expected
}

fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap_or("(none)").trim().to_string()
}

/// Pseudo-random delay from the clock (no RNG crate in the root package).
fn random_below(limit_ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) % limit_ms.max(1)
}

const SEEDED: u32 = 1000;

/// One trial: bulk `UID MOVE|COPY 1:* Dest`, `kill -9` of serve's whole
/// process tree after `delay`, restart, then the invariants.
fn kill_during_bulk(is_move: bool, delay: Duration) -> (usize, usize, bool) {
    let mut probe = Probe::new(None);
    let expected = seed(&probe.maildir(), SEEDED);
    probe.start();
    let mut c = Imap::login(probe.imap);
    c.ok("CREATE Dest");
    c.ok("SELECT INBOX");
    let command = if is_move { "UID MOVE 1:* Dest" } else { "UID COPY 1:* Dest" };
    c.writer.write_all(format!("bulk {command}\r\n").as_bytes()).unwrap();
    std::thread::sleep(delay);
    probe.kill9();
    drop(c);
    // The kill itself is logged as an error; after the restart nothing may be.
    let before_restart = probe.log_text().len();
    probe.start();
    let mut c = Imap::login(probe.imap);
    let inbox = c.contents("INBOX");
    let dest = c.contents("Dest");
    for (name, msgs) in [("INBOX", &inbox), ("Dest", &dest)] {
        let mut uids: Vec<u32> = msgs.iter().map(|(u, _)| *u).collect();
        uids.sort_unstable();
        uids.dedup();
        assert_eq!(uids.len(), msgs.len(), "{command}: duplicate UIDs in {name}");
        for (uid, raw) in msgs.iter() {
            let id = message_id(raw);
            assert_eq!(expected.get(&id), Some(raw), "{command}: {name} UID {uid} ({id}) damaged");
        }
    }
    let count = |msgs: &[(u32, Vec<u8>)], id: &str| msgs.iter().filter(|(_, r)| message_id(r) == id).count();
    if is_move {
        let files: Vec<String> = std::fs::read_dir(probe.maildir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(
            inbox.len() + dest.len(),
            SEEDED as usize,
            "{command} after kill -9 at {delay:?}: INBOX {} + Dest {}; Maildir {files:?}; log after restart:\n{}",
            inbox.len(),
            dest.len(),
            tail(&probe.log_text()[before_restart..], 20)
        );
        for id in expected.keys() {
            assert_eq!(count(&inbox, id) + count(&dest, id), 1, "{command}: {id} not exactly once");
        }
    } else {
        assert_eq!(inbox.len(), SEEDED as usize, "COPY leaves the source alone");
        assert!(dest.is_empty() || dest.len() == SEEDED as usize, "COPY after kill -9 at {delay:?}: all or nothing, got {}", dest.len());
        for id in expected.keys() {
            assert_eq!(count(&inbox, id), 1);
            assert!(count(&dest, id) == usize::from(!dest.is_empty()), "{id} in Dest");
        }
    }
    let log = probe.log_text().split_off(before_restart);
    assert!(!log.contains(" ERROR "), "{}", tail(&log, 30));
    probe.stop();
    (inbox.len(), dest.len(), log.contains("interrupted"))
}

#[test]
fn kill_9_during_bulk_move_and_copy_loses_and_duplicates_nothing() {
    let start = Instant::now();
    // Spread over the command's run time (~100 ms here): staging, commit,
    // UIDs, the source expunge.
    let mut results = Vec::new();
    for trial in 0..8u64 {
        let is_move = trial % 2 == 0;
        let delay = Duration::from_millis(15 + (trial / 2) * 35 + random_below(30));
        let (inbox, dest, recovered) = kill_during_bulk(is_move, delay);
        let what = if is_move { "MOVE" } else { "COPY" };
        println!("{what} killed after {delay:?}: INBOX {inbox}, Dest {dest}{}", if recovered { " (finished by recovery)" } else { "" });
        results.push((is_move, inbox, dest));
    }
    println!("8 trials in {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(90), "probe took {:?}", start.elapsed());
}

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().to_path_buf();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("skipping the full-disk probe: mounting a tmpfs is not allowed here");
            return None;
        }
        Some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem at `dir` with `filler` files until `ENOSPC`
/// (several files: tmpfs also runs out of inodes).
fn fill(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let chunk = vec![b'x'; 4096];
    'outer: for n in 0.. {
        let path = dir.join(format!("filler{n}"));
        let Ok(mut f) = std::fs::File::create(&path) else { break };
        files.push(path);
        for _ in 0..256 {
            if f.write_all(&chunk).is_err() {
                break 'outer;
            }
        }
    }
    // The last bytes: small writes until even those fail.
    if let Some(last) = files.last() {
        let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
        while f.write_all(b"x").and_then(|()| f.flush()).is_ok() {}
    }
    files
}

/// Sends one message over LMTP to alice; returns the final reply line.
fn lmtp_deliver(port: u16, message: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return last + &line;
            }
            last = line;
        }
    };
    assert!(reply().starts_with("220"));
    for (send, want) in [
        ("LHLO probe\r\n", "250"),
        ("MAIL FROM:<s@example.org>\r\n", "250"),
        ("RCPT TO:<alice@example.org>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        writer.write_all(send.as_bytes()).unwrap();
        let r = reply();
        assert!(r.contains(want), "{send}: {r}");
    }
    writer.write_all(format!("{message}.\r\n").as_bytes()).unwrap();
    let r = reply();
    let _ = writer.write_all(b"QUIT\r\n");
    r.lines().last().unwrap_or("").to_string()
}

fn count_id(c: &mut Imap, mailbox: &str, id: &str) -> usize {
    c.contents(mailbox).iter().filter(|(_, raw)| message_id(raw) == id).count()
}

fn append_raw(c: &mut Imap, mailbox: &str, message: &str) -> String {
    c.tags += 1;
    let tag = format!("t{}", c.tags);
    c.writer.write_all(format!("{tag} APPEND {mailbox} {{{}}}\r\n", message.len()).as_bytes()).unwrap();
    let cont = c.read_line();
    if !cont.text.starts_with('+') {
        return cont.text;
    }
    c.writer.write_all(format!("{message}\r\n").as_bytes()).unwrap();
    loop {
        let line = c.read_line();
        if line.text.starts_with(&format!("{tag} ")) {
            return line.text[tag.len() + 1..].to_string();
        }
    }
}

/// #14: serve's data directory on a full filesystem. Reads (SELECT, STATUS,
/// EXAMINE) keep working, APPEND gets `NO [OVERQUOTA]`, LMTP `452`; once
/// space is freed the sender's retry leaves exactly one copy.
#[test]
fn full_disk_under_serve_refuses_writes_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount("16m") else { return };
    let mut probe = Probe::new(Some(&fs.path.join("data")));
    probe.start();
    let mut c = Imap::login(probe.imap);
    c.ok("CREATE Other");
    for n in 0..5 {
        let msg = format!("Message-ID: <before{n}@probe>\r\nSubject: before {n}\r\n\r\nbody\r\n");
        assert!(append_raw(&mut c, "INBOX", &msg).starts_with("OK"));
        assert!(append_raw(&mut c, "Other", &msg).starts_with("OK"));
    }
    c.ok("SELECT INBOX");
    let fillers = fill(&fs.path);
    assert!(!fillers.is_empty());

    // Reads, in the session that was open and in a new one.
    let mut d = Imap::login(probe.imap);
    for conn in [&mut c, &mut d] {
        for command in ["SELECT INBOX", "STATUS Other (MESSAGES UIDNEXT)", "EXAMINE Other", "FETCH 1:* (FLAGS)", "SELECT INBOX", "NOOP"] {
            let lines = conn.cmd(command);
            let last = &lines.last().unwrap().text;
            assert!(last.split(' ').nth(1) == Some("OK"), "{command} on a full disk: {last}");
        }
    }
    let status = d.cmd("STATUS INBOX (MESSAGES)");
    assert!(status[0].text.contains("MESSAGES 5"), "{:?}", status[0]);

    // Writes are refused with the right codes and leave nothing behind.
    let appended = "Message-ID: <appended@probe>\r\nSubject: appended on a full disk\r\n\r\nbody\r\n";
    let answer = append_raw(&mut d, "INBOX", appended);
    println!("full disk: APPEND -> {answer}");
    assert!(answer.starts_with("NO [OVERQUOTA]"), "APPEND on a full disk: {answer}");
    let delivered = "Message-ID: <delivered@probe>\r\nSubject: delivered on a full disk\r\n\r\nbody\r\n";
    let answer = lmtp_deliver(probe.lmtp, delivered);
    println!("full disk: LMTP -> {answer}");
    assert!(answer.starts_with("452"), "LMTP on a full disk: {answer}");

    // Space comes back; the client and the sender retry.
    for f in fillers {
        std::fs::remove_file(f).unwrap();
    }
    let answer = append_raw(&mut d, "INBOX", appended);
    assert!(answer.starts_with("OK [APPENDUID"), "APPEND after freeing space: {answer}");
    let answer = lmtp_deliver(probe.lmtp, delivered);
    assert!(answer.starts_with("250"), "LMTP after freeing space: {answer}");
    assert_eq!(count_id(&mut d, "INBOX", "<appended@probe>"), 1, "exactly one copy of the retried APPEND");
    assert_eq!(count_id(&mut d, "INBOX", "<delivered@probe>"), 1, "exactly one copy of the retried delivery");
    assert_eq!(d.contents("INBOX").len(), 7);
    assert_eq!(d.contents("Other").len(), 5);
    let log = probe.log_text();
    assert!(!log.contains("SERVERBUG"), "{}", tail(&log, 30));
    probe.stop();
    drop(probe);
}
