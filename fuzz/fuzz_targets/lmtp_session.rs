//! Feeds arbitrary client bytes into an `imap::lmtp::LmtpSession`, once
//! whole and once split into reads at arbitrary points (chosen by the first
//! input bytes). The session must never panic, both runs must give the
//! same replies and message data, replies must be whole CRLF lines, every
//! body must be empty or end in CRLF, and re-sending a body dot-stuffed
//! must give back exactly that body (no smuggling through the end mark).
//!
//! Run (nightly toolchain, from `fuzz/`):
//! `mkdir -p corpus/lmtp_session && cp seeds/lmtp_session/* corpus/lmtp_session/ &&
//!  cargo +nightly fuzz run lmtp_session corpus/lmtp_session -- -max_total_time=600 -max_len=4096`
#![no_main]

use imap::lmtp::{
    BareLineEndings, DataSink, DeliveryStatus, LmtpLimits, LmtpSession, RcptVerdict, RecipientResolver, Transaction,
};
use libfuzzer_sys::fuzz_target;

struct Users;

impl RecipientResolver for Users {
    type Target = u8;
    fn resolve(&self, address: &str) -> RcptVerdict<u8> {
        match address.bytes().next() {
            Some(b'a') => RcptVerdict::Accept(0),
            Some(b'b') => RcptVerdict::Accept(1),
            Some(b't') => RcptVerdict::TempFail,
            _ => RcptVerdict::Unknown,
        }
    }
}

#[derive(Default)]
struct Body {
    data: Vec<u8>,
    open: bool,
    aborted: bool,
}

impl DataSink<u8> for Body {
    fn begin(&mut self, tx: &Transaction<u8>) {
        assert!(!tx.recipients.is_empty() && tx.size == 0);
        *self = Body { open: true, ..Body::default() };
    }
    fn write(&mut self, bytes: &[u8]) {
        assert!(self.open && !self.aborted, "write outside a body");
        assert!(!bytes.is_empty());
        self.data.extend_from_slice(bytes);
    }
    fn abort(&mut self) {
        assert!(self.open && !self.aborted, "abort twice");
        self.aborted = true;
        self.data.clear();
    }
}

/// Replies and delivered bodies of one run over `chunks`.
fn run(limits: LmtpLimits, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut s = LmtpSession::new("mx", "f", limits);
    let mut body = Body::default();
    let mut out = s.take_output();
    let mut bodies = Vec::new();
    for chunk in chunks {
        s.receive(chunk, &Users, &mut body);
        out.extend(s.take_output());
        while let Some(tx) = s.take_transaction() {
            assert!(!body.aborted);
            assert_eq!(tx.size, body.data.len() as u64);
            assert!(tx.size <= limits.max_message_size);
            let statuses = tx.recipients.iter().map(|r| DeliveryStatus::Stored { uid: u32::from(r.target) }).collect();
            bodies.push(std::mem::take(&mut body.data));
            body.open = false;
            s.delivery_done(statuses, &Users, &mut body);
            out.extend(s.take_output());
        }
        if s.is_closed() {
            break;
        }
    }
    (out, bodies)
}

/// `body` as an SMTP client sends it: a dot before every line that starts
/// (after CRLF) with a dot, then the end mark.
fn stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    out.extend_from_slice(b".\r\n");
    out
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (mode, seed, script) = (input[0], input[1], &input[2..]);
    let limits = LmtpLimits {
        max_message_size: if mode & 1 == 0 { 1 << 20 } else { 40 },
        max_recipients: 3,
        max_command_line: if mode & 2 == 0 { 4096 } else { 32 },
        max_errors: 20,
        bare_line_endings: if mode & 4 == 0 { BareLineEndings::Store } else { BareLineEndings::Reject },
    };
    let whole = run(limits, &[script]);
    // Split points from a small generator seeded by the second byte.
    let mut chunks = Vec::new();
    let (mut rest, mut x) = (script, u32::from(seed) | 1);
    while !rest.is_empty() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((x >> 16) as usize % 17).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    let split = run(limits, &chunks);
    assert!(whole == split, "splitting the input changed the result");
    assert!(whole.0.ends_with(b"\r\n"), "replies end in CRLF");
    for (i, &b) in whole.0.iter().enumerate() {
        assert!(b != b'\n' || (i > 0 && whole.0[i - 1] == b'\r'), "bare LF in replies");
    }
    for body in &whole.1 {
        assert!(body.is_empty() || body.ends_with(b"\r\n"), "a body ends in CRLF");
        let mut resend = b"LHLO x\r\nMAIL FROM:<s>\r\nRCPT TO:<a>\r\nDATA\r\n".to_vec();
        resend.extend_from_slice(&stuffed(body));
        let again = run(LmtpLimits { max_message_size: 1 << 20, ..limits }, &[&resend]);
        assert_eq!(again.1, vec![body.clone()], "a dot-stuffed body comes back unchanged");
    }
});
