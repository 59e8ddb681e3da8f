//! Feeds arbitrary client bytes into an `imap::session::Session` backed by a
//! real temporary Maildir. The first input byte picks the starting state
//! (fresh connection, logged in, or INBOX selected, optionally QRESYNC) and
//! how the rest is split into reads; the session must never panic, must
//! always answer within a bounded number of steps, and every output must be
//! whole CRLF-terminated lines.
//!
//! Run (nightly toolchain, from `fuzz/`):
//! `mkdir -p corpus/imap_command && cp seeds/imap_command/* corpus/imap_command/ &&
//!  cargo +nightly fuzz run imap_command corpus/imap_command -- -max_total_time=600 -max_len=4096`
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use imap::session::{AuthFailure, AuthenticatedUser, Authenticator, Session, SessionEvent, SessionOptions};
use libfuzzer_sys::fuzz_target;
use storage_hooks::{AppendOptions, CollectingHook, Hooks, UserStore};

struct FixedAuth(std::path::PathBuf);

impl Authenticator for FixedAuth {
    fn verify(&self, user: &str, password: &str) -> Result<AuthenticatedUser, AuthFailure> {
        if user == "alice" && password == "secret" {
            Ok(AuthenticatedUser { name: "alice".into(), maildir: self.0.clone() })
        } else {
            Err(AuthFailure::InvalidCredentials)
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    runs: u64,
}

const MESSAGES: &[&[u8]] = &[
    b"From: A <a@example.org>\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner\r\n--x--\r\n",
    b"no header at all",
];

fn fresh() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = UserStore::open("alice", dir.path().join("Maildir"), Hooks::new()).expect("open store");
    for m in MESSAGES {
        store.append("INBOX", m, &AppendOptions::default()).expect("append");
    }
    store.create_mailbox("Archive").expect("create");
    Fixture { dir, runs: 0 }
}

fn fixture() -> &'static Mutex<Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(fresh()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let mut fx = fixture().lock().unwrap_or_else(|e| e.into_inner());
    fx.runs += 1;
    if fx.runs % 500 == 0 {
        // Keep the store small: fuzz inputs append and create mailboxes.
        *fx = fresh();
    }
    let maildir = fx.dir.path().join("Maildir");
    let hook = CollectingHook::new();
    let mut opts = SessionOptions { allow_plaintext_auth: true, ..SessionOptions::default() };
    opts.limits.max_line = 4096;
    opts.limits.max_other_literal = 4096;
    opts.limits.max_append_literal = 16 * 1024;
    let now = Instant::now();
    let mut s = Session::new(opts, Arc::new(FixedAuth(maildir)), Hooks::new().with(hook.clone()), now);
    let prefix: &[u8] = match mode % 4 {
        0 => b"",
        1 => b"a LOGIN alice secret\r\n",
        2 => b"a LOGIN alice secret\r\nb SELECT INBOX\r\n",
        _ => b"a LOGIN alice secret\r\nb ENABLE QRESYNC\r\nc SELECT INBOX\r\n",
    };
    let chunk = 1 + usize::from(mode >> 2) * 7;
    let mut feed: Vec<u8> = prefix.to_vec();
    feed.extend_from_slice(input);
    let mut clock = now;
    for piece in feed.chunks(chunk) {
        s.enqueue_input(piece);
        if !drive(&mut s, clock) {
            return;
        }
        for ev in hook.take() {
            s.on_mailbox_event(&ev);
        }
        clock += Duration::from_secs(1);
    }
    // Let timers fire too.
    drive(&mut s, clock + Duration::from_secs(3600));
});

/// Runs the session until it wants input; false once it closed.
fn drive(s: &mut Session, now: Instant) -> bool {
    for _ in 0..100_000 {
        match s.next(now) {
            SessionEvent::Output(b) => {
                assert!(b.ends_with(b"\r\n"), "output not line-terminated: {:?}", String::from_utf8_lossy(&b));
            }
            SessionEvent::NeedMoreInput { .. } => return true,
            SessionEvent::Close => return false,
            SessionEvent::StartTls | SessionEvent::Authenticated(_) | SessionEvent::VerifyLogin(_) => {}
        }
    }
    panic!("session did not settle");
}
