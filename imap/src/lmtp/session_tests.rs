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

/// Drives a session with `chunks` of input; every transaction is recorded
/// and answered by `outcome(recipient target)`. Returns all output and the
/// transactions.
fn run(
    limits: LmtpLimits,
    chunks: &[&[u8]],
    outcome: impl Fn(&str) -> DeliveryStatus,
) -> (String, Vec<Transaction<&'static str>>, bool) {
    let mut s = LmtpSession::new("mx.test", "s1", limits);
    let mut out = s.take_output();
    let mut txs = Vec::new();
    for chunk in chunks {
        s.receive(chunk, &Users);
        out.extend(s.take_output());
        while let Some(tx) = s.take_transaction() {
            let statuses = tx.recipients.iter().map(|r| outcome(r.target)).collect();
            txs.push(tx);
            s.delivery_done(statuses, &Users);
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
    assert_eq!(txs[0].sender, "s@x");
    assert_eq!(txs[0].helo, "mx");
    assert_eq!(txs[0].id, "s1.1");
    let targets: Vec<_> = txs[0].recipients.iter().map(|r| (r.address.as_str(), r.target)).collect();
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
    assert_eq!(whole.1[0].sender, "");
}

#[test]
fn dot_unstuffing_and_bare_lf() {
    let script = b"LHLO mx\nMAIL FROM:<a>\nRCPT TO:<alice>\nDATA\n..a\n...\nb.\n.\n";
    let (out, txs, _) = run(LmtpLimits::default(), &[script], stored);
    assert_eq!(codes(&out), ["220", "250", "250", "250", "250", "250", "250", "250", "354", "250"]);
    assert_eq!(txs[0].data, b".a\n..\nb.\n");
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
    assert_eq!(txs[0].recipients.len(), 2);
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
    s.receive(b"NOOP\r\n", &Users);
    assert!(s.take_output().is_empty());
    let mut s: LmtpSession<&str> = LmtpSession::new("h", "s", LmtpLimits::default());
    s.take_output();
    s.shutting_down();
    assert!(s.take_output().starts_with(b"421 4.3.2"));
}

#[test]
fn input_after_data_waits_for_the_delivery() {
    let mut s = LmtpSession::new("h", "s", LmtpLimits::default());
    s.receive(b"LHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<alice>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n", &Users);
    let before = String::from_utf8(s.take_output()).unwrap();
    assert!(before.ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n"), "{before}");
    assert!(s.is_delivering());
    assert_eq!(s.buffered_input(), 6);
    let tx = s.take_transaction().unwrap();
    assert_eq!(tx.data, b"x\r\n");
    s.delivery_done(vec![DeliveryStatus::Stored { uid: 1 }], &Users);
    assert_eq!(s.take_output(), b"250 2.0.0 <alice> Saved as UID 1\r\n250 2.0.0 OK\r\n");
    // A second transaction on the same connection works and gets a new id.
    s.receive(b"MAIL FROM:<a>\r\nRCPT TO:<bob>\r\nDATA\r\ny\r\n.\r\n", &Users);
    assert_eq!(s.take_transaction().unwrap().id, "s.2");
}
