//! Byte-script tests of the sans-I/O LMTP session.

use super::*;

struct Users;

impl RecipientResolver for Users {
    type Target = &'static str;
    fn resolve(&self, address: &str) -> RcptVerdict<&'static str> {
        match address.split('@').next().unwrap_or("").split('+').next().unwrap_or("") {
            "alice" => RcptVerdict::Accept("alice"),
            "bob" => RcptVerdict::Accept("bob"),
            "slow" => RcptVerdict::TempFail,
            _ => RcptVerdict::Unknown,
        }
    }
}

/// Collects the message data a session hands out.
#[derive(Debug, Default)]
struct Body {
    data: Vec<u8>,
    begun: u32,
    aborted: bool,
}

impl DataSink<&'static str> for Body {
    fn begin(&mut self, tx: &Transaction<&'static str>) {
        assert_eq!(tx.size, 0);
        assert!(!tx.recipients.is_empty());
        self.data.clear();
        self.begun += 1;
        self.aborted = false;
    }
    fn write(&mut self, bytes: &[u8]) {
        assert!(!self.aborted, "no writes after abort");
        assert!(self.begun > 0, "no writes before begin");
        self.data.extend_from_slice(bytes);
    }
    fn abort(&mut self) {
        self.aborted = true;
        self.data.clear();
    }
}

/// A transaction handed out for delivery and the data written for it.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    tx: Transaction<&'static str>,
    data: Vec<u8>,
}

/// Drives a session with `chunks` of input; every transaction is recorded
/// and answered by `outcome(recipient target)`. Returns all output and the
/// transactions.
fn run(limits: LmtpLimits, chunks: &[&[u8]], outcome: impl Fn(&str) -> DeliveryStatus) -> (String, Vec<Got>, bool) {
    let mut s = LmtpSession::new("mx.test", "s1", limits);
    let mut body = Body::default();
    let mut out = s.take_output();
    let mut txs = Vec::new();
    for chunk in chunks {
        s.receive(chunk, &Users, &mut body);
        out.extend(s.take_output());
        while let Some(tx) = s.take_transaction() {
            let statuses = tx.recipients.iter().map(|r| outcome(r.target)).collect();
            assert!(!body.aborted);
            assert_eq!(tx.size, body.data.len() as u64);
            txs.push(Got { tx, data: std::mem::take(&mut body.data) });
            s.delivery_done(statuses, &Users, &mut body);
            out.extend(s.take_output());
        }
    }
    (String::from_utf8(out).unwrap(), txs, s.is_closed())
}

fn stored(_: &str) -> DeliveryStatus {
    DeliveryStatus::Stored { uid: 7 }
}

fn codes(out: &str) -> Vec<&str> {
    out.split("\r\n").filter(|l| !l.is_empty()).map(|l| &l[..3]).collect()
}

#[test]
fn full_pipelined_transaction_in_one_chunk() {
    let script = b"LHLO mx\r\nMAIL FROM:<s@x> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<alice@d>\r\nRCPT TO:<nobody@d>\r\n\
RCPT TO:<bob+tag@d>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    let (out, txs, closed) = run(LmtpLimits::default(), &[script], stored);
    assert!(out.starts_with("220 mx.test dormouse LMTP ready\r\n250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 52428800\r\n"), "{out}");
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "250", "250", "250", "550", "250", "354", "250", "250", "221"]);
    assert!(out.contains("550 5.1.1 <nobody@d> User doesn't exist\r\n"));
    assert!(out.contains("250 2.0.0 <alice@d> Saved as UID 7\r\n250 2.0.0 <bob+tag@d> Saved as UID 7\r\n"));
    assert!(closed);
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].data, b"Subject: x\r\n\r\n.dot\r\n");
    assert_eq!(txs[0].tx.sender, "s@x");
    assert_eq!(txs[0].tx.helo, "mx");
    assert_eq!(txs[0].tx.id, "s1.1");
    let targets: Vec<_> = txs[0].tx.recipients.iter().map(|r| (r.address.as_str(), r.target)).collect();
    assert_eq!(targets, [("alice@d", "alice"), ("bob+tag@d", "bob")]);
}

#[test]
fn byte_by_byte_input_gives_the_same_result() {
    let script: &[u8] = b"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\nA\r\n.\r\n..\r\n.x\r\n\r\n.\r\n";
    let whole = run(LmtpLimits::default(), &[script], stored);
    let bytes: Vec<&[u8]> = script.chunks(1).collect();
    let split = run(LmtpLimits::default(), &bytes, stored);
    assert_eq!(whole.0, split.0);
    assert_eq!(whole.1, split.1);
    assert_eq!(whole.1[0].data, b"A\r\n");
    assert_eq!(whole.1[0].tx.sender, "");
}

#[test]
fn dot_unstuffing_only_after_crlf_and_bare_lf_is_data() {
    // Command lines may end in a bare LF; in the data only CRLF starts a line.
    let script = b"LHLO mx\nMAIL FROM:<a>\nRCPT TO:<alice>\nDATA\n..a\r\n...\n.\nb.\r\n.\r\n";
    let (out, txs, _) = run(LmtpLimits::default(), &[script], stored);
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "250", "250", "250", "354", "250"]);
    assert_eq!(txs[0].data, b".a\r\n..\n.\nb.\r\n");
}

/// The 2023 SMTP smuggling payloads: an end mark made of bare LF / CR
/// followed by a second, forged transaction, then the real end.
const SMUGGLING_ENDS: [&[u8]; 6] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r"];

fn smuggling_script(fake_end: &[u8]) -> Vec<u8> {
    let mut s = b"LHLO mx\r\nMAIL FROM:<good@x>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: one\r\n\r\nbody".to_vec();
    s.extend_from_slice(fake_end);
    s.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<bob>\r\nDATA\r\nReturn-Path: <evil@x>\r\nSubject: forged\r\n\r\nx\r\n.\r\nQUIT\r\n");
    s
}

#[test]
fn smuggled_transaction_stays_inside_the_first_message() {
    for fake_end in SMUGGLING_ENDS {
        let script = smuggling_script(fake_end);
        let (out, txs, closed) = run(LmtpLimits::default(), &[&script], stored);
        let shown = String::from_utf8_lossy(fake_end).escape_debug().to_string();
        assert_eq!(txs.len(), 1, "{shown}: {out}");
        assert_eq!(txs[0].tx.sender, "good@x", "{shown}");
        let targets: Vec<_> = txs[0].tx.recipients.iter().map(|r| r.target).collect();
        assert_eq!(targets, ["alice"], "{shown}");
        let data = String::from_utf8(txs[0].data.clone()).unwrap();
        assert!(data.starts_with("Subject: one\r\n\r\nbody"), "{shown}: {data:?}");
        assert!(data.contains("MAIL FROM:<evil@x>\r\nRCPT TO:<bob>\r\nDATA\r\nReturn-Path: <evil@x>\r\n"), "{shown}: {data:?}");
        assert!(data.ends_with("\r\nx\r\n"), "{shown}: {data:?}");
        // 220, LHLO (5 lines), MAIL, RCPT, 354, one 250 for alice, 221.
        assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "250", "250", "250", "354", "250", "221"], "{shown}");
        assert!(closed);
    }
}

#[test]
fn bare_cr_and_dot_cr_are_data() {
    let script = b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\na\r.\rb\r\n.\rX\r\n\r\r\n.\r\n";
    let (_, txs, _) = run(LmtpLimits::default(), &[script], stored);
    assert_eq!(txs[0].data, b"a\r.\rb\r\n\rX\r\n\r\r\n");
}

#[test]
fn every_split_of_the_input_gives_the_same_result() {
    let mut scripts: Vec<Vec<u8>> = SMUGGLING_ENDS.iter().map(|e| smuggling_script(e)).collect();
    scripts.push(b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\n.\r\n..\r\n.\r.\r\n\r\n.\r\nNOOP\r\n".to_vec());
    for limits in [LmtpLimits::default(), LmtpLimits { bare_line_endings: BareLineEndings::Reject, ..LmtpLimits::default() }] {
        for script in &scripts {
            let whole = run(limits, &[script], stored);
            for k in 0..=script.len() {
                let split = run(limits, &[&script[..k], &script[k..]], stored);
                assert_eq!(whole, split, "split at {k} of {:?}", String::from_utf8_lossy(script));
            }
            let bytes: Vec<&[u8]> = script.chunks(1).collect();
            assert_eq!(whole, run(limits, &bytes, stored));
        }
    }
}

#[test]
fn reject_mode_refuses_bare_line_endings_with_554() {
    let limits = LmtpLimits { bare_line_endings: BareLineEndings::Reject, ..LmtpLimits::default() };
    for fake_end in SMUGGLING_ENDS {
        let (out, txs, _) = run(limits, &[&smuggling_script(fake_end)], stored);
        assert!(txs.is_empty(), "{out}");
        assert!(out.contains("354 Start mail input; end with <CRLF>.<CRLF>\r\n554 5.6.0 <alice> Message contains a bare CR or LF"), "{out}");
        assert_eq!(codes(&out).iter().filter(|c| **c == "554").count(), 1, "{out}");
        assert!(out.ends_with("221 2.0.0 mx.test Bye\r\n"), "{out}");
    }
    // Two recipients get one 554 each; the next clean message is delivered.
    let script = b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\nlone\rcr\r\n.\r\n\
MAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\nclean\r\n.\r\n";
    let (out, txs, _) = run(limits, &[script], stored);
    assert!(out.contains("554 5.6.0 <alice> Message contains a bare CR or LF (only CRLF ends a line)\r\n554 5.6.0 <bob> "), "{out}");
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].data, b"clean\r\n");
    // Store mode keeps the same bytes.
    let (_, txs, _) = run(LmtpLimits::default(), &[script], stored);
    assert_eq!(txs[0].data, b"lone\rcr\r\n");
}

#[test]
fn per_recipient_results_after_the_dot() {
    let script = b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nRCPT TO:<slow>\r\nDATA\r\nx\r\n.\r\n";
    let (out, _, _) = run(LmtpLimits::default(), &[script], |t| {
        if t == "bob" {
            DeliveryStatus::TempFail("disk\r\nfull".into())
        } else {
            DeliveryStatus::Rejected("empty".into())
        }
    });
    assert!(out.contains("451 4.3.0 <slow> Temporary user lookup failure\r\n"), "{out}");
    assert!(out.ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n554 5.6.0 <alice> empty\r\n451 4.3.0 <bob> Temporary failure, try again later (disk??full)\r\n"), "{out}");
}

#[test]
fn size_limits() {
    let limits = LmtpLimits { max_message_size: 10, ..LmtpLimits::default() };
    let script = b"LHLO mx\r\nMAIL FROM:<a> SIZE=11\r\nMAIL FROM:<a> SIZE=10\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nDATA\r\n0123456789\r\nmore\r\n.\r\nRSET\r\n";
    let (out, txs, closed) = run(limits, &[script], stored);
    assert!(out.contains("552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.1.0 OK\r\n"), "{out}");
    assert!(out.contains("552 5.3.4 <alice> Message size exceeds fixed maximum message size\r\n552 5.3.4 <bob> Message size"), "{out}");
    assert!(out.ends_with("250 2.0.0 OK\r\n"));
    assert!(txs.is_empty(), "an oversized message is never handed out for delivery");
    assert!(!closed);
    // Exactly at the limit is fine ("0123456\r\n" is 9 bytes, plus "x" = 10).
    let ok = b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\n0123456\r\nx\r\n.\r\n";
    let limits = LmtpLimits { max_message_size: 12, ..LmtpLimits::default() };
    let (_, txs, _) = run(limits, &[ok], stored);
    assert_eq!(txs[0].data.len(), 12);
}

#[test]
fn bad_sequences_and_syntax() {
    let script = b"MAIL FROM:<a>\r\nHELO x\r\nLHLO mx\r\nRCPT TO:<alice>\r\nDATA\r\nMAIL FROM:<a>\r\nMAIL FROM:<b>\r\nDATA\r\n\
MAIL FROM:a\r\nRCPT TO:<nobody>\r\nDATA\r\nFROB\r\nBDAT 1\r\nVRFY alice\r\nNOOP\r\nHELP\r\nMAIL FROM:<a> RET=HDRS\r\nQUIT now\r\n";
    let (out, txs, closed) = run(LmtpLimits::default(), &[script], stored);
    assert_eq!(
        codes(&out),
        ["220", "503", "500", "250", "250", "250", "250", "250", "503", "503", "250", "503", "503", "501", "550", "503", "500", "502", "252", "250", "214", "555", "501"]
    );
    assert!(txs.is_empty());
    assert!(!closed);
}

#[test]
fn too_many_recipients() {
    let limits = LmtpLimits { max_recipients: 2, ..LmtpLimits::default() };
    let script = b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nRCPT TO:<bob>\r\nRCPT TO:<alice+2>\r\nDATA\r\nx\r\n.\r\n";
    let (out, txs, _) = run(limits, &[script], stored);
    assert!(out.contains("452 4.5.3 Too many recipients\r\n"));
    assert_eq!(txs[0].tx.recipients.len(), 2);
}

#[test]
fn long_command_lines_are_refused_and_skipped() {
    let limits = LmtpLimits { max_command_line: 64, ..LmtpLimits::default() };
    let long = vec![b'A'; 200];
    let (out, _, _) = run(limits, &[b"LHLO mx\r\nNOOP ", &long, &long, b"\r\nNOOP\r\n"], stored);
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "250", "500", "250"]);
    let (out, _, _) = run(limits, &[b"NOOP ", &long[..70], b"\r\nNOOP\r\n"], stored);
    assert_eq!(codes(&out), ["220", "500", "250"]);
}

#[test]
fn too_many_errors_close_the_session() {
    let limits = LmtpLimits { max_errors: 3, ..LmtpLimits::default() };
    let (out, _, closed) = run(limits, &[b"X\r\nY\r\nZ\r\nNOOP\r\n"], stored);
    assert_eq!(codes(&out), ["220", "500", "500", "500", "421"]);
    assert!(closed);
}

#[test]
fn non_utf8_and_binary_garbage_never_panic() {
    let (out, _, _) = run(LmtpLimits::default(), &[b"\xff\xfe\r\n\0\0\0\r\nLHLO \xc3\r\n"], stored);
    assert_eq!(codes(&out), ["220", "500", "500", "500"]);
    // 8-bit data is stored as is.
    let (_, txs, _) = run(
        LmtpLimits::default(),
        &[b"LHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\n\xff\x00\xc3\xa9\r\n.\r\n"],
        stored,
    );
    assert_eq!(txs[0].data, b"\xff\x00\xc3\xa9\r\n");
}

#[test]
fn timeout_and_shutdown_say_421() {
    let mut s: LmtpSession<&str> = LmtpSession::new("h", "s", LmtpLimits::default());
    s.take_output();
    s.timed_out();
    assert_eq!(s.take_output(), b"421 4.4.2 h Timeout, closing connection\r\n");
    assert!(s.is_closed());
    s.receive(b"NOOP\r\n", &Users, &mut Body::default());
    assert!(s.take_output().is_empty());
    let mut s: LmtpSession<&str> = LmtpSession::new("h", "s", LmtpLimits::default());
    s.take_output();
    s.shutting_down();
    assert!(s.take_output().starts_with(b"421 4.3.2"));
}

#[test]
fn input_after_data_waits_for_the_delivery() {
    let mut s = LmtpSession::new("h", "s", LmtpLimits::default());
    let mut body = Body::default();
    s.receive(b"LHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n", &Users, &mut body);
    let before = String::from_utf8(s.take_output()).unwrap();
    assert!(before.ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n"), "{before}");
    assert!(s.is_delivering());
    assert_eq!(s.buffered_input(), 6);
    let tx = s.take_transaction().unwrap();
    assert_eq!((tx.size, body.data.as_slice()), (3, &b"x\r\n"[..]));
    s.delivery_done(vec![DeliveryStatus::Stored { uid: 1 }], &Users, &mut body);
    assert_eq!(s.take_output(), b"250 2.0.0 <alice> Saved as UID 1\r\n250 2.0.0 OK\r\n");
    // A second transaction on the same connection works and gets a new id.
    s.receive(b"MAIL FROM:<a>\r\nRCPT TO:<bob>\r\nDATA\r\ny\r\n.\r\n", &Users, &mut body);
    assert_eq!(s.take_transaction().unwrap().id, "s.2");
}

#[test]
fn too_large_and_bare_line_ending_give_the_same_answer_however_split() {
    // Found by fuzz/fuzz_targets/lmtp_session.rs: which refusal won
    // depended on whether a read ended right after a bare CR.
    let limits = LmtpLimits { max_message_size: 7, bare_line_endings: BareLineEndings::Reject, ..LmtpLimits::default() };
    let script: &[u8] = b"LHLO mx\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\n1234567\rX\r\n.\r\nQUIT\r\n";
    let whole = run(limits, &[script], stored);
    assert!(whole.0.contains("552 5.3.4 <alice> Message size exceeds"), "{}", whole.0);
    for k in 0..=script.len() {
        assert_eq!(whole, run(limits, &[&script[..k], &script[k..]], stored), "split at {k}");
    }
}
