//! `dormouse deliver`: exit codes, CRLF normalization, mailbox fallback,
//! size limit, and concurrent deliveries never sharing a UID.

mod support;

use std::collections::HashSet;

use support::TestEnv;

fn env() -> TestEnv {
    let env = TestEnv::new("", "[lmtp]\nmax_message_size = 2000\n");
    env.add_user("alice", "pw");
    env
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn delivers_and_normalizes_bare_lf_to_crlf() {
    let env = env();
    let out = env.deliver(&["--user", "alice", "-f", "sender@example.org"], b"Subject: one\n\nline 1\nline 2\r\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "quiet on success: {}", stderr(&out));
    assert_eq!(env.uids("alice", "INBOX"), vec![1]);
    let files = env.inbox_files("alice");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0], b"Return-Path: <sender@example.org>\r\nSubject: one\r\n\r\nline 1\r\nline 2\r\n");
}

#[test]
fn unknown_user_is_67() {
    let env = env();
    let out = env.deliver(&["--user", "nobody"], b"Subject: x\n\nx\n");
    assert_eq!(code(&out), 67);
    assert!(stderr(&out).contains("unknown user \"nobody\""), "{}", stderr(&out));
}

#[test]
fn empty_and_oversized_messages_are_65() {
    let env = env();
    let out = env.deliver(&["--user", "alice"], b"");
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let big = vec![b'x'; 2001];
    let out = env.deliver(&["--user", "alice"], &big);
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).contains("max_message_size (2000 bytes)"), "{}", stderr(&out));
    assert!(env.inbox_files("alice").is_empty());
    // Exactly at the limit is accepted.
    let out = env.deliver(&["--user", "alice"], &vec![b'x'; 2000]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn config_errors_are_78_and_usage_errors_64() {
    let env = env();
    std::fs::write(&env.config, "data_dir = \"x\"\n[lmtp]\nmax_message_size = \"big\"\n").unwrap();
    let out = env.deliver(&["--user", "alice"], b"Subject: x\n\nx\n");
    assert_eq!(code(&out), 78);
    assert!(stderr(&out).contains("max_message_size"), "{}", stderr(&out));

    let env2 = TestEnv::new("", "");
    // No passwd file at all.
    let out = env2.deliver(&["--user", "alice"], b"Subject: x\n\nx\n");
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("passwd"), "{}", stderr(&out));

    let out = env.deliver(&[], b"x");
    assert_eq!(code(&out), 64);
    let missing = support::run_with_stdin(
        std::process::Command::new(support::BIN).args(["--config", "/nonexistent/dormouse.toml", "deliver", "-d", "a"]),
        b"x",
    );
    assert_eq!(code(&missing), 78);
}

#[test]
fn unknown_mailbox_falls_back_to_inbox_and_existing_one_is_used() {
    let env = env();
    let out = env.deliver(&["--user", "alice", "--mailbox", "Nope"], b"Subject: a\n\na\n");
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("delivered to INBOX"), "{}", stderr(&out));
    assert_eq!(env.uids("alice", "INBOX"), vec![1]);
    env.store("alice").create_mailbox("Lists").unwrap();
    let out = env.deliver(&["--user", "alice", "-m", "Lists"], b"Subject: b\n\nb\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stderr.is_empty());
    assert_eq!(env.uids("alice", "Lists"), vec![1]);
    assert_eq!(env.uids("alice", "INBOX"), vec![1]);
}

#[test]
fn concurrent_deliveries_never_duplicate_uids() {
    const WORKERS: usize = 4;
    const EACH: usize = 50;
    let env = env();
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let env = &env;
            s.spawn(move || {
                for i in 0..EACH {
                    let msg = format!("Subject: w{w} m{i}\n\nbody {w}/{i}\n");
                    let out = env.deliver(&["--user", "alice"], msg.as_bytes());
                    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
                }
            });
        }
    });
    let uids = env.uids("alice", "INBOX");
    assert_eq!(uids.len(), WORKERS * EACH);
    let unique: HashSet<u32> = uids.iter().copied().collect();
    assert_eq!(unique.len(), WORKERS * EACH, "duplicate UIDs");
    assert_eq!(uids.iter().max(), Some(&((WORKERS * EACH) as u32)));
    // Every message is there exactly once.
    let subjects: HashSet<String> = env
        .inbox_files("alice")
        .iter()
        .map(|f| String::from_utf8_lossy(f).lines().next().unwrap().to_string())
        .collect();
    assert_eq!(subjects.len(), WORKERS * EACH);
}

#[test]
fn a_delivery_publishes_exactly_one_message_new_event_on_the_bus() {
    let env = env();
    let run_dir = env.passwd.parent().unwrap().join("run");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let events = runtime.block_on(async move {
        let mut sub = bus::UnixSubscriber::bind(&bus::UnixConfig::in_run_dir(&run_dir), 64).unwrap();
        sub.subscribe("alice");
        // `_env` keeps the temp dir until the events are in.
        let (out, _env) = tokio::task::spawn_blocking(move || {
            let out = env.deliver(&["--user", "alice"], b"From: a@b\nSubject: ping\n\nhello\n");
            (out, env)
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let mut events = Vec::new();
        // The first event may take a moment; after it, any duplicate would follow quickly.
        let mut wait = std::time::Duration::from_secs(20);
        while let Ok(Some(msg)) = tokio::time::timeout(wait, sub.recv()).await {
            events.push(msg);
            wait = std::time::Duration::from_millis(500);
        }
        events
    });
    let news: Vec<_> = events
        .iter()
        .filter_map(|m| match m {
            bus::BusMessage::Event(ev) => Some(ev),
            bus::BusMessage::Resync { .. } => None,
        })
        .collect();
    assert_eq!(news.len(), 1, "{events:?}");
    assert_eq!(news[0].kind, storage_hooks::EventKind::MessageNew);
    assert_eq!((news[0].user.as_str(), news[0].mailbox.as_str()), ("alice", "INBOX"));
    assert!(news[0].uids.contains(1));
    assert_eq!(news[0].summary.as_ref().map(|s| s.subject.as_str()), Some("ping"));
}
