//! A throwaway Dovecot 2.3 (apt `dovecot-imapd`) for the tests that compare
//! dormouse with it: its own config, passwd-file users and IMAP port.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The Dovecot master binary.
pub const DOVECOT: &str = "/usr/sbin/dovecot";

/// True when the tests run as root (Dovecot then refuses root mail access,
/// so the mail user is `nobody`).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// uid/gid the mail user gets in the shared passwd file.
pub fn mail_ids() -> (u32, u32) {
    if is_root() {
        (65534, 65534)
    } else {
        (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw())
    }
}

/// A throwaway Dovecot instance; stopped on drop.
pub struct Dovecot {
    /// Its config, run and state folder.
    pub dir: PathBuf,
    /// Its IMAP port on 127.0.0.1.
    pub port: u16,
}

impl Dovecot {
    /// Starts Dovecot in `dir` with the users of `passwd` (PLAIN passwords).
    pub fn start(dir: &Path, passwd: &Path) -> Dovecot {
        Dovecot::start_with(dir, passwd, "", "")
    }

    /// Starts Dovecot with the listescape plugin and `/` as the namespace
    /// separator, so `.` may appear in folder names (escaped on disk).
    pub fn start_listescape(dir: &Path, passwd: &Path) -> Dovecot {
        Dovecot::start_with(dir, passwd, "mail_plugins = $mail_plugins listescape\n", "  separator = /\n")
    }

    /// Starts Dovecot with `global` added to the top-level settings and
    /// `namespace` inside the inbox namespace.
    pub fn start_with(dir: &Path, passwd: &Path, global: &str, namespace: &str) -> Dovecot {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        for sub in ["run", "state"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let users = if is_root() {
            String::new()
        } else {
            // Not root: every Dovecot service runs as the current user.
            let id = |flag: &str| String::from_utf8(Command::new("id").arg(flag).output().unwrap().stdout).unwrap();
            format!(
                "default_internal_user = {0}\ndefault_login_user = {0}\ndefault_internal_group = {1}\n\
                 service anvil {{\n  chroot =\n}}\nservice imap-login {{\n  chroot =\n}}\n",
                id("-un").trim(),
                id("-gn").trim()
            )
        };
        let conf = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
{global}{users}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
namespace inbox {{
  inbox = yes
{namespace}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
            d = dir.display(),
            passwd = passwd.display(),
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        // The master daemonizes: give it a file, not a pipe, for its stderr.
        let stderr_path = dir.join("dovecot.stderr");
        let status = Command::new(DOVECOT)
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "dovecot did not start: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
        let dovecot = Dovecot { dir: dir.to_path_buf(), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot never listened: {}", dovecot.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        dovecot
    }

    /// Its config file.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("dovecot.conf")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("run/master.pid")) {
            if let Some(pid) = pid.trim().parse().ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}

