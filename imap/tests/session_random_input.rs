//! Stable-toolchain fuzz loop: token soup and random bytes into a session
//! with a real Maildir. Deterministic (fixed seeds) so failures reproduce;
//! the cargo-fuzz target `fuzz/fuzz_targets/imap_command.rs` explores further.
mod session_support;

use std::time::Duration;

use imap::session::SessionEvent;
use session_support::*;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "a", "b1", "UID", "FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SELECT", "EXAMINE", "APPEND", "IDLE", "DONE",
    "NOOP", "CHECK", "CLOSE", "UNSELECT", "LIST", "LSUB", "STATUS", "CREATE", "DELETE", "RENAME", "ENABLE", "QRESYNC",
    "CONDSTORE", "INBOX", "Archive", "1", "2", "*", "1:*", "3:1", "4294967295", "0", "(", ")", "[", "]", "<0.10>", "BODY[",
    "BODY.PEEK[", "HEADER", "TEXT", "MIME", "1.2", "HEADER.FIELDS", "(FROM)", "BODYSTRUCTURE", "ENVELOPE", "FLAGS", "+FLAGS",
    "-FLAGS.SILENT", "\\Seen", "\\Deleted", "\\Recent", "$kw", "MODSEQ", "CHANGEDSINCE", "UNCHANGEDSINCE", "VANISHED", "OR",
    "NOT", "ALL", "SUBJECT", "\"x y\"", "\"", "\\", "{3}\r\n", "{4+}\r\n", "{0}\r\n", "~{2}\r\n", "\r\n", "\n", " ", " ",
    " ", "LOGIN", "alice", "secret", "AUTHENTICATE", "PLAIN", "AGFsaWNlAHNlY3JldA==", "LOGOUT", "\u{0}", "ü", "&AOQ-",
    "%", "RFC822", "INTERNALDATE", "\"25-Nov-2026 10:00:00 +0000\"", "(QRESYNC (1 1 1:5))", "HIGHESTMODSEQ", "MESSAGES",
];

fn soup(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(80) + 1 {
        match rng.below(10) {
            0 => out.push(rng.next() as u8),
            _ => out.extend_from_slice(TOKENS[rng.below(TOKENS.len())].as_bytes()),
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn random_token_soup_never_breaks_the_session() {
    let w = World::new();
    for s in ["one", "two"] {
        w.deliver("alice", "INBOX", &simple_message(s));
    }
    w.deliver("alice", "INBOX", include_bytes!("session_support/multipart.eml"));
    // DORMOUSE_FUZZ_ROUNDS / DORMOUSE_FUZZ_SEED allow longer local runs.
    let rounds: usize = std::env::var("DORMOUSE_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let seed: u64 = std::env::var("DORMOUSE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed | 1);
    for round in 0..rounds {
        let mut c = if round % 3 == 0 { w.client() } else { w.alice() };
        if round % 3 == 2 {
            c.send("s SELECT INBOX");
        }
        for _ in 0..8 {
            let input = soup(&mut rng);
            // Random split points exercise the framer.
            let cut = rng.below(input.len() + 1);
            for part in [&input[..cut], &input[cut..]] {
                c.s.enqueue_input(part);
                let mut steps = 0;
                loop {
                    steps += 1;
                    assert!(steps < 100_000, "session does not settle on {:?}", String::from_utf8_lossy(&input));
                    match c.s.next(c.now) {
                        SessionEvent::Output(b) => assert!(b.ends_with(b"\r\n"), "partial line for {:?}", String::from_utf8_lossy(&input)),
                        SessionEvent::NeedMoreInput { .. } | SessionEvent::Close => break,
                        _ => {}
                    }
                }
            }
            for ev in w.hook.take() {
                c.s.on_mailbox_event(&ev);
            }
            c.advance(Duration::from_secs(1));
        }
    }
}

#[test]
fn random_bytes_never_break_the_session() {
    let w = World::new();
    w.deliver("alice", "INBOX", &simple_message("one"));
    let mut rng = Rng(42);
    for _ in 0..200 {
        let mut c = w.alice();
        c.send("s SELECT INBOX");
        let len = rng.below(2000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let out = c.raw(&bytes);
        assert!(out.is_empty() || out.ends_with("\r\n"));
        if !c.closed {
            // The session still answers a well-formed command afterwards
            // (after a line break ends whatever the noise started).
            let out = c.raw(b"\r\nzz9 NOOP\r\n");
            assert!(out.contains("zz9 OK") || c.closed || out.is_empty(), "{out}");
        }
    }
}
