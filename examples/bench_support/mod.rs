//! What the benchmarks share: the dormouse binary beside them, free ports,
//! and a blocking IMAP client that skips literals.
// Each bench uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn dormouse_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DORMOUSE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("dormouse")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A blocking IMAP client connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u64,
    /// The last line read.
    pub line: Vec<u8>,
}

impl Client {
    /// Connects with a 60 s read timeout and reads the greeting.
    pub fn connect(port: u16) -> std::io::Result<Client> {
        Self::connect_with_timeout(port, Duration::from_secs(60))
    }

    /// Connects with `read_timeout` and reads the greeting.
    pub fn connect_with_timeout(port: u16, read_timeout: Duration) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_nodelay(true)?;
        let mut c = Client { reader: BufReader::new(stream.try_clone()?), writer: stream, tag: 0, line: Vec::new() };
        c.read_line()?;
        Ok(c)
    }

    pub fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed"));
        }
        Ok(())
    }

    /// Sends a command (may contain a literal marker `{n}\r\n` handled by the
    /// caller) and reads up to its tagged answer, skipping literal data.
    pub fn cmd(&mut self, command: &str) -> std::io::Result<bool> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes())?;
        self.finish(&tag)
    }

    /// [`Client::cmd`] that must succeed.
    pub fn must(&mut self, command: &str) {
        assert!(self.cmd(command).unwrap(), "{command} failed: {}", String::from_utf8_lossy(&self.line));
    }

    pub fn finish(&mut self, tag: &str) -> std::io::Result<bool> {
        loop {
            self.read_line()?;
            if let Some(n) = literal_len(&self.line) {
                let mut skip = vec![0u8; n];
                std::io::Read::read_exact(&mut self.reader, &mut skip)?;
                continue;
            }
            if self.line.starts_with(tag.as_bytes()) && self.line.get(tag.len()) == Some(&b' ') {
                return Ok(self.line[tag.len() + 1..].starts_with(b"OK"));
            }
        }
    }

    pub fn append(&mut self, message: &[u8]) -> std::io::Result<bool> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.writer.write_all(format!("{tag} APPEND INBOX {{{}}}\r\n", message.len()).as_bytes())?;
        self.read_line()?;
        if !self.line.starts_with(b"+") {
            return Ok(false);
        }
        self.writer.write_all(message)?;
        self.writer.write_all(b"\r\n")?;
        self.finish(&tag)
    }
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let trimmed = line.strip_suffix(b"\r\n")?;
    let body = trimmed.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&body[open + 1..]).ok()?.parse().ok()
}

/// (RSS, PSS) in KiB of one process, from smaps_rollup (0 if it is gone).
pub fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// `root` and all its descendants.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 4 (ppid) comes after the parenthesized command name.
        if let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()) {
            parent.insert(pid, ppid);
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    tree
}

/// Summed (RSS, PSS) in KiB of `pids`.
pub fn sum_rss_pss(pids: &[u32]) -> (u64, u64) {
    pids.iter().map(|&p| rss_pss(p)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}
