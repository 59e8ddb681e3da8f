//! `dormouse push-relay run` as a process next to `dormouse serve`: an LMTP
//! delivery becomes a signed webhook (UNIX bus), and in JetStream mode a
//! relay killed with SIGKILL mid-stream and restarted delivers every event
//! (duplicates only with the same id).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use support::{free_port, TestEnv};

const SECRET: &str = "integration-test-secret-42";

/// One webhook request.
#[derive(Debug, Clone)]
struct Hook {
    event: String,
    event_id: String,
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver on its own runtime thread.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    /// Answers every POST with 200 after `delay`.
    fn start(delay: Duration) -> Receiver {
        let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let g = got.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
                    let g = g.clone();
                    async move {
                        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        g.lock().unwrap().push(Hook {
                            event: h("x-dormouse-event"),
                            event_id: h("x-dormouse-event-id"),
                            signature: h("x-dormouse-signature"),
                            body: body.to_vec(),
                        });
                        tokio::time::sleep(delay).await;
                        StatusCode::OK
                    }
                });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    /// Waits up to `secs` until `cond` holds for the requests.
    fn wait(&self, secs: u64, what: &str, cond: impl Fn(&[Hook]) -> bool) -> Vec<Hook> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let hooks = self.hooks();
            if cond(&hooks) {
                return hooks;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; got {} requests", hooks.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A child process killed on drop; its stderr goes to a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(env: &TestEnv, args: &[&str], log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = env
            .command()
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "{needle:?} never logged:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig).unwrap();
    }

    fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain LMTP client.
struct Lmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lmtp {
    fn connect(port: u16) -> Lmtp {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => {
                    assert!(Instant::now() < deadline, "LMTP port {port} never opened");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Lmtp { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        c.reply("220");
        c.command("LHLO test", "250");
        c
    }

    /// Reads one (multi-line) reply and checks its code.
    fn reply(&mut self, code: &str) {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                return;
            }
        }
    }

    fn command(&mut self, cmd: &str, code: &str) {
        self.writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        self.reply(code);
    }

    fn deliver(&mut self, to: &str, subject: &str) {
        self.command("MAIL FROM:<sender@example.org>", "250");
        self.command(&format!("RCPT TO:<{to}>"), "250");
        self.command("DATA", "354");
        let msg = format!("From: Sender <sender@example.org>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n");
        self.writer.write_all(msg.as_bytes()).unwrap();
        self.reply("250");
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn add_webhook(env: &TestEnv, user: &str, url: &str, events: &str) -> String {
    let out = env
        .command()
        .args(["push-relay", "add-webhook", "--user", user, "--url", url, "--secret", SECRET, "--events", events])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().find(|w| w.starts_with("r-")).unwrap().to_owned()
}

#[test]
fn lmtp_delivery_becomes_a_signed_webhook_over_the_unix_bus() {
    let lmtp_port = free_port();
    let env = TestEnv::new("", &format!("[lmtp]\nlisten = \"127.0.0.1:{lmtp_port}\"\n"));
    env.add_user("alice", "pw");
    env.add_user("bob", "pw");
    let rx = Receiver::start(Duration::ZERO);
    // Bad input at registration: clear errors, non-zero exit.
    for (args, needle) in [
        (vec!["--user", "nobody", "--url", "http://127.0.0.1:1/x"], "unknown user"),
        (vec!["--user", "alice", "--url", "gopher://h/"], "invalid URL"),
        (vec!["--user", "alice", "--url", "http://h/", "--events", "Bogus"], "unknown event type"),
        (vec!["--user", "alice", "--url", "http://h/", "--secret", "short"], "invalid secret"),
    ] {
        let out = env.command().args(["push-relay", "add-webhook"]).args(&args).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let alice_reg = add_webhook(&env, "alice", &format!("{}?u=alice", rx.url()), "MessageNew");
    let bob_reg = add_webhook(&env, "bob", &format!("{}?u=bob", rx.url()), "MessageNew");
    let list = env.command().args(["push-relay", "list", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!String::from_utf8_lossy(&list.stdout).contains(SECRET), "list never shows secrets");

    let _serve = Proc::start(&env, &["serve"], env.dir.path().join("serve.log"));
    let mut relay = Proc::start(&env, &["push-relay", "run"], env.dir.path().join("relay.log"));
    relay.wait_log("receiving every user's events");
    let mut lmtp = Lmtp::connect(lmtp_port);
    lmtp.deliver("alice", "for alice");
    let hooks = rx.wait(30, "alice's webhook", |h| !h.is_empty());
    let hook = &hooks[0];
    assert_eq!(hook.event, "MessageNew");
    push::relay::verify_signature(&hook.signature, SECRET.as_bytes(), &hook.body, now_secs(), 300).unwrap();
    let ev = push::ExternalEvent::from_json(&hook.body).unwrap();
    assert_eq!((ev.user.as_str(), ev.mailbox.as_str(), ev.uids.as_str()), ("alice", "INBOX", "1"));
    assert_eq!(ev.subject.as_deref(), Some("for alice"));
    assert_eq!(ev.id, hook.event_id);

    // Removing alice's registration while the relay runs: bob's mail still
    // reaches bob's hook, alice's no longer goes anywhere.
    let out = env.command().args(["push-relay", "remove", &alice_reg]).output().unwrap();
    assert!(out.status.success());
    relay.wait_log("registration removed");
    lmtp.deliver("alice", "alice again");
    lmtp.deliver("bob", "for bob");
    let hooks = rx.wait(30, "bob's webhook", |h| h.len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let hooks_now = rx.hooks();
    assert_eq!(hooks_now.len(), 2, "{hooks:#?}");
    let bob_ev = push::ExternalEvent::from_json(&hooks_now[1].body).unwrap();
    assert_eq!((bob_ev.user.as_str(), bob_ev.subject.as_deref()), ("bob", Some("for bob")));
    let _ = bob_reg;

    relay.signal(rustix::process::Signal::TERM);
    assert!(relay.wait_exit(30).success());
    assert!(relay.log_text().contains("push-relay counters"), "counters at shutdown:\n{}", relay.log_text());
}

#[test]
fn jetstream_relay_killed_mid_stream_delivers_everything_after_restart() {
    const N: usize = 300;
    let lmtp_port = free_port();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = bus::LocalNatsServer::start(nats_dir.path()).unwrap();
    let env = TestEnv::new(
        "",
        &format!(
            "[lmtp]\nlisten = \"127.0.0.1:{lmtp_port}\"\n\
             [bus]\ntransport = \"nats\"\n[bus.nats]\nurl = \"nats://127.0.0.1:{}\"\n\
             [push.nats]\nenabled = true\n\
             [push.relay]\nack_wait_secs = 3\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n",
            nats.port()
        ),
    );
    env.add_user("alice", "pw");
    // Slow enough that the kill lands with deliveries in flight.
    let rx = Receiver::start(Duration::from_millis(10));
    add_webhook(&env, "alice", &rx.url(), "MessageNew");
    let _serve = Proc::start(&env, &["serve"], env.dir.path().join("serve.log"));
    let mut relay = Proc::start(&env, &["push-relay", "run"], env.dir.path().join("relay1.log"));
    relay.wait_log("consuming the JetStream stream");

    let mut lmtp = Lmtp::connect(lmtp_port);
    let mut killed = false;
    for i in 1..=N {
        lmtp.deliver("alice", &format!("msg {i}"));
        if !killed && rx.hooks().len() >= N / 4 {
            relay.signal(rustix::process::Signal::KILL);
            relay.wait_exit(10);
            killed = true;
        }
    }
    if !killed {
        // Deliveries outran the relay: kill it now, mid-stream.
        rx.wait(60, "a quarter of the webhooks", |h| h.len() >= N / 4);
        relay.signal(rustix::process::Signal::KILL);
        relay.wait_exit(10);
    }
    let before_restart = rx.hooks().len();
    assert!(before_restart < N, "the kill came too late to test anything");
    let relay2 = Proc::start(&env, &["push-relay", "run"], env.dir.path().join("relay2.log"));
    let subject_of = |h: &Hook| push::ExternalEvent::from_json(&h.body).unwrap().subject.unwrap_or_default();
    let hooks = rx.wait(120, "every message", |hs| {
        let subjects: std::collections::HashSet<String> = hs.iter().map(subject_of).collect();
        subjects.len() >= N
    });
    // Give redeliveries a moment to show up as duplicates.
    std::thread::sleep(Duration::from_secs(4));
    let hooks = if rx.hooks().len() > hooks.len() { rx.hooks() } else { hooks };
    let mut by_id: HashMap<String, (usize, String)> = HashMap::new();
    for h in &hooks {
        assert_eq!(h.event, "MessageNew");
        push::relay::verify_signature(&h.signature, SECRET.as_bytes(), &h.body, now_secs(), 300).unwrap();
        let subject = subject_of(h);
        let entry = by_id.entry(h.event_id.clone()).or_insert((0, subject.clone()));
        entry.0 += 1;
        // A duplicate carries the same id and the same event.
        assert_eq!(entry.1, subject);
    }
    let subjects: std::collections::HashSet<&str> = by_id.values().map(|(_, s)| s.as_str()).collect();
    for i in 1..=N {
        assert!(subjects.contains(format!("msg {i}").as_str()), "msg {i} never arrived");
    }
    assert_eq!(by_id.len(), N, "one id per message");
    let duplicates = hooks.len() - by_id.len();
    eprintln!(
        "push-relay JetStream kill test: {N} events, {} webhooks before SIGKILL, {} in total, {duplicates} duplicates (same id)",
        before_restart,
        hooks.len()
    );
    assert!(relay2.log_text().contains("consuming the JetStream stream"));
    drop(relay2);
    drop(nats);
}
