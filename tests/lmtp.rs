//! `dormouse serve` as an LMTP server: a real client (Python's
//! `smtplib.LMTP`) over TCP and a UNIX socket, raw pipelined byte scripts,
//! timeouts, first-run set-up, and clean shutdown on SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, idle_in_empty_inbox, imap_until, TestEnv};

/// A running `dormouse serve`, terminated on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(env: &TestEnv, port: u16) -> Server {
        let child = env.command().arg("serve").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let server = Server { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "LMTP port {port} never opened");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lmtp_env(port: u16, extra: &str) -> TestEnv {
    let env = TestEnv::new(
        "",
        &format!(
            "[lmtp]\nlisten = \"127.0.0.1:{port}\"\nunix_socket = \"{{dir}}/lmtp.sock\"\nmax_message_size = 100000\nhostname = \"mx.test\"\n{extra}"
        ),
    );
    env.add_user("alice", "pw");
    env.add_user("bob", "pw");
    env
}

fn unix_socket(env: &TestEnv) -> std::path::PathBuf {
    env.dir.path().join("lmtp.sock")
}

const PY_CLIENT: &str = r#"
import json, smtplib, sys
target, port, sock = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
c = smtplib.LMTP(target, port)
code, _ = c.ehlo()
out["lhlo"] = code
out["features"] = sorted(k for k in ("pipelining", "8bitmime", "enhancedstatuscodes", "size") if c.has_extn(k))
out["size"] = c.esmtp_features.get("size")
msg = "From: s@example.org\r\nSubject: py one\r\n\r\nhello\r\n.leading dot\r\n..two dots\r\n"
out["sendmail_refused"] = {k: v[0] for k, v in c.sendmail("s@example.org", ["alice@example.org", "nobody@example.org"], msg).items()}
# Two recipients: one reply each after the final dot.
c.mail("s@example.org")
out["rcpt_alice"] = c.rcpt("alice")[0]
out["rcpt_bob"] = c.rcpt("bob+tag@example.org")[0]
code1, text1 = c.data("Subject: multi\r\n\r\nto both\r\n")
code2, text2 = c.getreply()
out["data"] = [code1, text1.decode(), code2, text2.decode()]
try:
    c.sendmail("s@example.org", ["alice"], "Subject: big\r\n\r\n" + "x" * 200000)
    out["big"] = "accepted"
except smtplib.SMTPSenderRefused as e:
    out["big"] = e.smtp_code
c.rset()
c.mail("s@example.org")
c.rcpt("alice")
out["big_without_size"] = c.data("Subject: big\r\n\r\n" + ("y" * 999 + "\r\n") * 150)[0]
out["vrfy"] = c.verify("alice")[0]
out["noop"] = c.noop()[0]
out["quit"] = c.quit()[0]
u = smtplib.LMTP(sock)
u.ehlo()
out["unix_refused"] = u.sendmail("", ["bob"], "Subject: via unix\r\n\r\nu\r\n")
u.quit()
print(json.dumps(out))
"#;

#[test]
fn python_smtplib_lmtp_client_over_tcp_and_unix_socket() {
    let port = free_port();
    let env = lmtp_env(port, "");
    let mut server = Server::start(&env, port);
    let sock = unix_socket(&env);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o666, "the MTA's user can connect");
    let out = Command::new("python3")
        .args(["-c", PY_CLIENT, "127.0.0.1", &port.to_string(), sock.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python client failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["lhlo"], 250);
    assert_eq!(r["features"], serde_json::json!(["8bitmime", "enhancedstatuscodes", "pipelining", "size"]));
    assert_eq!(r["size"], "100000");
    assert_eq!(r["sendmail_refused"], serde_json::json!({"nobody@example.org": 550}));
    assert_eq!((&r["rcpt_alice"], &r["rcpt_bob"]), (&serde_json::json!(250), &serde_json::json!(250)));
    assert_eq!(r["data"][0], 250);
    assert!(r["data"][1].as_str().unwrap().starts_with("2.0.0 <alice> Saved as UID"), "{}", r["data"]);
    assert_eq!(r["data"][2], 250);
    assert!(r["data"][3].as_str().unwrap().starts_with("2.0.0 <bob+tag@example.org> Saved as UID 1"), "{}", r["data"]);
    assert_eq!(r["big"], 552);
    assert_eq!(r["big_without_size"], 552);
    assert_eq!((&r["vrfy"], &r["noop"], &r["quit"]), (&serde_json::json!(252), &serde_json::json!(250), &serde_json::json!(221)));
    assert_eq!(r["unix_refused"], serde_json::json!({}));

    assert_eq!(env.uids("alice", "INBOX"), vec![1, 2]);
    assert_eq!(env.uids("bob", "INBOX"), vec![1, 2]);
    let store = env.store("alice");
    let mbox = store.open_mailbox("INBOX").unwrap();
    let first = String::from_utf8(mbox.read_message(1).unwrap()).unwrap();
    let mut lines = first.split("\r\n");
    assert_eq!(lines.next(), Some("Return-Path: <s@example.org>"));
    assert_eq!(lines.next(), Some("Delivered-To: alice@example.org"));
    assert!(lines.next().unwrap().starts_with("Received: from "), "{first}");
    assert!(first.contains("\tby mx.test (dormouse) with LMTP id "), "{first}");
    assert!(first.contains("\tfor <alice@example.org>; "), "{first}");
    assert!(first.ends_with("\r\nFrom: s@example.org\r\nSubject: py one\r\n\r\nhello\r\n.leading dot\r\n..two dots\r\n"), "{first}");
    let bob = env.store("bob").open_mailbox("INBOX").unwrap();
    let via_unix = String::from_utf8(bob.read_message(2).unwrap()).unwrap();
    assert!(via_unix.starts_with("Return-Path: <>\r\nDelivered-To: bob\r\nReceived: from "), "{via_unix}");
    assert!(via_unix.contains("(unix)"), "{via_unix}");

    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    assert!(!sock.exists(), "UNIX socket removed on shutdown");
}

/// Sends `script` in one write and reads until `replies` reply lines (final
/// lines, `NNN ` form) arrived or the peer closed.
fn exchange(port: u16, script: &[u8], replies: usize) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = String::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220 "), "{line}");
    s.write_all(script).unwrap();
    let mut finals = 0;
    while finals < replies {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.as_bytes().get(3) == Some(&b' ') {
            finals += 1;
        }
        out.push_str(&line);
    }
    out
}

#[test]
fn pipelined_script_bad_input_and_timeout() {
    let port = free_port();
    let env = lmtp_env(port, "timeout_secs = 2\nmax_recipients = 2\n");
    let _server = Server::start(&env, port);
    let script = b"LHLO client\r\nDATA\r\nMAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<ALICE@x>\r\nRCPT TO:<nobody@x>\r\n\
RCPT TO:<bob@x>\r\nRCPT TO:<alice+again@x>\r\nDATA\r\nSubject: 8bit \xc3\xa9\r\n\r\n.\r\n";
    let out = exchange(port, script, 10);
    let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
    assert_eq!(
        codes,
        ["250-", "250-", "250-", "250-", "250 ", "503 ", "250 ", "250 ", "550 ", "250 ", "452 ", "354 ", "250 ", "250 "],
        "{out}"
    );
    assert_eq!(env.uids("alice", "INBOX"), vec![1]);
    assert_eq!(env.uids("bob", "INBOX"), vec![1]);
    let stored = &env.inbox_files("bob")[0];
    assert!(stored.ends_with("Subject: 8bit \u{e9}\r\n\r\n".as_bytes()));

    // A storage failure for one recipient is a temporary 451 for that
    // recipient only (here: the Maildir path is a regular file).
    env.add_user("broken", "pw");
    std::fs::create_dir_all(env.home("broken")).unwrap();
    std::fs::write(env.home("broken").join("Maildir"), b"not a directory").unwrap();
    let out = exchange(port, b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<broken>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: t\r\n\r\nx\r\n.\r\n", 7);
    let tail: Vec<&str> = out.lines().rev().take(2).collect();
    assert!(tail[1].starts_with("451 4.3.0 <broken> Temporary failure"), "{out}");
    assert!(tail[0].starts_with("250 2.0.0 <alice> Saved as UID 2"), "{out}");

    // A silent client is dropped with 421 after timeout_secs.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.ends_with("421 4.4.2 mx.test Timeout, closing connection\r\n"), "{all}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn first_run_creates_demo_user_and_tls_pair() {
    let port = free_port();
    let env = TestEnv::new("", &format!("[lmtp]\nlisten = \"127.0.0.1:{port}\"\n[users]\ndefault_scheme = \"SHA512-CRYPT\"\n"));
    let mut server = Server::start(&env, port);
    let mut stdout = BufReader::new(server.child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let password = first.trim_end().rsplit_once("password ").expect("password printed").1.to_string();
    assert_eq!(password.len(), 16);
    assert!(server.terminate().success());

    let text = std::fs::read_to_string(&env.passwd).unwrap();
    assert!(text.starts_with("demo:{SHA512-CRYPT}$6$"), "{text}");
    assert!(!text.contains(&password), "stored hashed");
    let db = imap::auth::UserDb::open(&env.passwd, imap::auth::MailLocation::parse("%h/Maildir").unwrap()).unwrap();
    assert!(db.verify("demo", password.as_bytes()).is_ok());
    let data = env.passwd.parent().unwrap();
    assert!(std::fs::read_to_string(data.join("tls/cert.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(data.join("tls/key.pem")).unwrap().permissions().mode() & 0o777, 0o600);

    // Second start: nothing printed, the user still works, and a user added
    // while the server runs is deliverable without a restart.
    let mut server = Server::start(&env, port);
    let add = env.command().args(["user", "add", "carol", "--password", "c-pw", "--scheme", "PLAIN"]).output().unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let out = exchange(port, b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<carol@x>\r\nQUIT\r\n", 4);
    assert!(out.contains("250 2.1.5 OK"), "{out}");
    assert!(server.terminate().success());
    let mut rest = String::new();
    server.child.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("password"), "{rest}");
}

#[test]
fn lmtp_delivery_wakes_an_idle_imap_session() {
    let (lmtp_port, imap_port) = (free_port(), free_port());
    let env = TestEnv::new(
        "",
        &format!(
            "[lmtp]\nlisten = \"127.0.0.1:{lmtp_port}\"\n[imap]\nlisten = \"127.0.0.1:{imap_port}\"\nlisten_tls = \"\"\n"
        ),
    );
    env.add_user("alice", "a-pw");
    let _server = Server::start(&env, lmtp_port);
    let (mut w, mut r) = idle_in_empty_inbox(imap_port, "alice", "a-pw");

    let out = exchange(lmtp_port, b"LHLO x\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\nSubject: wake\r\n\r\nup\r\n.\r\n", 5);
    assert!(out.ends_with("Saved as UID 1\r\n"), "{out}");
    let pushed = imap_until(&mut r, "* 1 EXISTS");
    assert!(!pushed.contains("BYE"), "{pushed}");
    w.write_all(b"DONE\r\n").unwrap();
    imap_until(&mut r, "c OK");
    w.write_all(b"d UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT DELIVERED-TO)])\r\n").unwrap();
    let fetched = imap_until(&mut r, "d OK");
    assert!(fetched.contains("Delivered-To: alice@x") && fetched.contains("Subject: wake"), "{fetched}");
}
