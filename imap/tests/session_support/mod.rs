//! Byte-script harness for `imap::session::Session` tests: a temp Maildir
//! per user, a fixed-password authenticator, a deterministic clock, and a
//! matcher where `{}` in an expected line matches any run of characters.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imap::session::{AuthFailure, AuthenticatedUser, Authenticator, Session, SessionEvent, SessionOptions};
use storage_hooks::{CollectingHook, Hooks};

/// Users `alice`/`bob` with password `secret`, each with a Maildir in the temp dir.
pub struct TestAuth {
    users: HashMap<String, PathBuf>,
}

impl Authenticator for TestAuth {
    fn verify(&self, user: &str, password: &str) -> Result<AuthenticatedUser, AuthFailure> {
        if user == "busy" {
            return Err(AuthFailure::Limit("Too many sessions of this user (limit 2).".into()));
        }
        match self.users.get(user) {
            Some(dir) if password == "secret" => Ok(AuthenticatedUser { name: user.to_string(), maildir: dir.clone() }),
            _ => Err(AuthFailure::InvalidCredentials),
        }
    }
}

/// Shared state of one test: temp dir, authenticator, event collector.
pub struct World {
    pub dir: tempfile::TempDir,
    pub auth: Arc<TestAuth>,
    pub hook: Arc<CollectingHook>,
    pub start: Instant,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut users = HashMap::new();
        for u in ["alice", "bob"] {
            users.insert(u.to_string(), dir.path().join(u).join("Maildir"));
        }
        World { dir, auth: Arc::new(TestAuth { users }), hook: CollectingHook::new(), start: Instant::now() }
    }

    pub fn hooks(&self) -> Hooks {
        Hooks::new().with(self.hook.clone())
    }

    /// Options allowing plaintext login (tests run without TLS).
    pub fn options() -> SessionOptions {
        SessionOptions { allow_plaintext_auth: true, ..SessionOptions::default() }
    }

    /// A fresh connection (greeting consumed).
    pub fn client(&self) -> Client {
        self.client_with(World::options())
    }

    pub fn client_with(&self, opts: SessionOptions) -> Client {
        let s = Session::new(opts, self.auth.clone(), self.hooks(), self.start);
        let greeting = String::from_utf8(s.greeting()).unwrap();
        Client { s, now: self.start, greeting, closed: false, events: Vec::new() }
    }

    /// A client logged in as `alice`.
    pub fn alice(&self) -> Client {
        let mut c = self.client();
        c.expect("l LOGIN alice secret", &["l OK [CAPABILITY {}] Logged in"]);
        c
    }

    /// Feeds all events collected so far into the given clients.
    pub fn deliver_events(&self, clients: &mut [&mut Client]) {
        for ev in self.hook.take() {
            for c in clients.iter_mut() {
                c.s.on_mailbox_event(&ev);
            }
        }
    }

    /// Appends a message directly through storage (like a delivery).
    pub fn deliver(&self, user: &str, mailbox: &str, raw: &[u8]) -> u32 {
        let store = storage_hooks::UserStore::open(user, self.dir.path().join(user).join("Maildir"), self.hooks()).unwrap();
        store.append(mailbox, raw, &storage_hooks::AppendOptions::default()).unwrap().uid
    }
}

/// One connection.
pub struct Client {
    pub s: Session,
    pub now: Instant,
    pub greeting: String,
    pub closed: bool,
    /// Non-output events seen (StartTls, Authenticated, ...).
    pub events: Vec<SessionEvent>,
}

impl Client {
    /// Runs the session until it needs input; returns all output.
    pub fn run(&mut self) -> String {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.s.next(self.now) {
                SessionEvent::Output(b) => out.extend_from_slice(&b),
                SessionEvent::NeedMoreInput { .. } => break,
                SessionEvent::Close => {
                    self.closed = true;
                    break;
                }
                other => self.events.push(other),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends raw bytes; returns the output.
    pub fn raw(&mut self, bytes: &[u8]) -> String {
        self.s.enqueue_input(bytes);
        self.run()
    }

    /// Sends one line (CRLF added); returns the output.
    pub fn send(&mut self, line: &str) -> String {
        self.raw(format!("{line}\r\n").as_bytes())
    }

    /// Sends `line` and checks the output lines against `expected`.
    pub fn expect(&mut self, line: &str, expected: &[&str]) -> String {
        let out = self.send(line);
        check(&out, expected);
        out
    }

    /// Advances the clock.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }
}

/// `{}` matches any (possibly empty) run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("{}").collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            let Some(pos) = rest.find(p) else { return false };
            rest = &rest[pos + p.len()..];
        }
    }
    true
}

/// Checks that `out` consists of exactly the `expected` lines (CRLF-separated).
pub fn check(out: &str, expected: &[&str]) {
    let lines: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty()).collect();
    let ok = lines.len() == expected.len() && lines.iter().zip(expected).all(|(l, e)| glob(e, l));
    assert!(ok, "output mismatch\n--- expected:\n{}\n--- got:\n{}", expected.join("\n"), lines.join("\n"));
}

/// A small plain-text message.
pub fn simple_message(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice Example <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.org>\r\n\r\nHello {subject}.\r\n"
    )
    .into_bytes()
}
