//! Shared set-up for the binary's integration tests: a throwaway data
//! directory with a config file and a passwd file.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use storage_hooks::{Hooks, UserStore};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dormouse");

/// A temp dir with `dormouse.toml` and `passwd`.
pub struct TestEnv {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The passwd file.
    pub passwd: PathBuf,
}

impl TestEnv {
    /// A new environment: `top_level` keys and `sections` go into the
    /// config file, with `{dir}` replaced by the temp dir's path.
    pub fn new(top_level: &str, sections: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let config = dir.path().join("dormouse.toml");
        let passwd = data.join("passwd");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n{top_level}\n{}{sections}\n",
                data.to_str().unwrap(),
                // No IMAP listeners unless the test configures [imap] itself.
                if sections.contains("[imap]") { "" } else { "[imap]\nlisten = \"\"\nlisten_tls = \"\"\n" }
            )
            .replace("{dir}", dir.path().to_str().unwrap()),
        )
        .unwrap();
        TestEnv { dir, config, passwd }
    }

    /// Home directory of `user`.
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user)
    }

    /// Adds `user` with a PLAIN password to the passwd file.
    pub fn add_user(&self, user: &str, password: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.passwd).unwrap();
        writeln!(f, "{user}:{{PLAIN}}{password}::::{}::", self.home(user).display()).unwrap();
    }

    /// A `dormouse --config <config>` command.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).env_remove("DORMOUSE_CONFIG").env_remove("RUST_LOG");
        c
    }

    /// Runs `dormouse deliver` with `args`, feeding `message` on stdin.
    pub fn deliver(&self, args: &[&str], message: &[u8]) -> Output {
        run_with_stdin(self.command().arg("deliver").args(args), message)
    }

    /// The user's store.
    pub fn store(&self, user: &str) -> UserStore {
        UserStore::open(user, self.home(user).join("Maildir"), Hooks::new()).unwrap()
    }

    /// UIDs in `mailbox` of `user`.
    pub fn uids(&self, user: &str, mailbox: &str) -> Vec<u32> {
        self.store(user).open_mailbox(mailbox).unwrap().messages().iter().map(|m| m.uid).collect()
    }

    /// The raw bytes of every message file of `user`'s INBOX, as on disk.
    pub fn inbox_files(&self, user: &str) -> Vec<Vec<u8>> {
        files_in(&self.home(user).join("Maildir"))
    }
}

/// Raw contents of the files in `maildir/new` and `maildir/cur`.
pub fn files_in(maildir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(maildir.join(sub)) {
            for e in entries {
                out.push(std::fs::read(e.unwrap().path()).unwrap());
            }
        }
    }
    out
}

/// Runs `cmd` with `input` on stdin and collects its output.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The child may stop reading early (oversized input): ignore EPIPE.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads IMAP lines until one starts with `prefix` (panics when the
/// connection closes or the read timeout passes) and returns all lines read.
pub fn imap_until(reader: &mut std::io::BufReader<std::net::TcpStream>, prefix: &str) -> String {
    use std::io::BufRead;
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "IMAP connection closed; saw: {seen}");
        seen.push_str(&line);
        if line.starts_with(prefix) {
            return seen;
        }
    }
}

/// Connects to the IMAP port (waiting up to 60 s for it to open), logs in,
/// selects an empty INBOX and enters IDLE; returns the writer and reader.
pub fn idle_in_empty_inbox(
    port: u16,
    user: &str,
    password: &str,
) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    let imap = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "IMAP port never opened: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    imap.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = imap.try_clone().unwrap();
    let mut r = std::io::BufReader::new(imap);
    imap_until(&mut r, "* OK");
    w.write_all(format!("a LOGIN {user} {password}\r\n").as_bytes()).unwrap();
    imap_until(&mut r, "a OK");
    w.write_all(b"b SELECT INBOX\r\n").unwrap();
    let selected = imap_until(&mut r, "b OK");
    assert!(selected.contains("* 0 EXISTS"), "{selected}");
    w.write_all(b"c IDLE\r\n").unwrap();
    imap_until(&mut r, "+ ");
    (w, r)
}
