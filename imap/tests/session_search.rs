//! SEARCH with charsets, 8-bit quoted strings, decoded headers and bodies,
//! and the RFC 3501 date rules. Expected answers are Dovecot 2.3's for the
//! same messages and commands.
mod session_support;

use session_support::*;

/// Latin-1 encoded-word headers with a quoted-printable Latin-1 body, sent
/// late on 25 Nov in UTC-8 (26 Nov in UTC).
const LATIN1: &[u8] = b"From: =?iso-8859-1?q?J=FCrgen?= <juergen@example.org>\r\nTo: bob@example.org\r\n\
Subject: =?iso-8859-1?q?M=FCnchen?= trip\r\nDate: Wed, 25 Nov 2026 23:30:00 -0800\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Gr=FC=DFe aus Bayern\r\n";

/// A base64 UTF-8 body, sent early on 26 Nov in UTC+1 (25 Nov in UTC).
const BASE64: &[u8] =
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: plain\r\nDate: Thu, 26 Nov 2026 00:30:00 +0100\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
R3LDvMOfZSB6dXLDvGNrDQo=\r\n";

fn two_messages() -> (World, Client) {
    let w = World::new();
    let mut c = w.alice();
    for (i, m) in [LATIN1, BASE64].iter().enumerate() {
        let mut cmd = format!("ap{i} APPEND INBOX \"26-Nov-2026 05:00:00 +0000\" {{{}+}}\r\n", m.len()).into_bytes();
        cmd.extend_from_slice(m);
        cmd.extend_from_slice(b"\r\n");
        check(&c.raw(&cmd), &[&format!("ap{i} OK [APPENDUID {{}}] {{}}")]);
    }
    c.expect(
        "s SELECT INBOX",
        &[
            "* FLAGS {}",
            "* OK {}",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN 1] {}",
            "* OK {}",
            "* OK {}",
            "* OK {}",
            "s OK [READ-WRITE] {}",
        ],
    );
    (w, c)
}

fn answer(c: &mut Client, cmd: &[u8], expected: &[&str]) {
    check(&c.raw(cmd), expected);
}

#[test]
fn charsets_and_8bit_quoted_strings() {
    let (_w, mut c) = two_messages();
    answer(
        &mut c,
        "t1 SEARCH CHARSET UTF-8 SUBJECT \"München\"\r\n".as_bytes(),
        &["* SEARCH 1", "t1 OK Search completed."],
    );
    answer(
        &mut c,
        b"t2 SEARCH CHARSET ISO-8859-1 SUBJECT {7+}\r\nM\xfcnchen\r\n",
        &["* SEARCH 1", "t2 OK Search completed."],
    );
    answer(
        &mut c,
        "t3 SEARCH CHARSET utf8 BODY \"grüße\"\r\n".as_bytes(),
        &["* SEARCH 1 2", "t3 OK Search completed."],
    );
    answer(
        &mut c,
        b"t4 SEARCH CHARSET windows-1252 FROM \"j\xfcrgen\"\r\n",
        &["* SEARCH 1", "t4 OK Search completed."],
    );
    answer(&mut c, b"t5 SEARCH CHARSET X-BOGUS ALL\r\n", &["t5 NO [BADCHARSET (UTF-8 {})] {}"]);
    answer(&mut c, "u3 SEARCH TEXT \"zurück\"\r\n".as_bytes(), &["* SEARCH 2", "u3 OK Search completed."]);
    answer(&mut c, b"u4 SEARCH CHARSET KOI8-R ALL\r\n", &["* SEARCH 1 2", "u4 OK Search completed."]);
    answer(&mut c, "u5 UID SEARCH SUBJECT \"München\"\r\n".as_bytes(), &["* SEARCH 1", "u5 OK Search completed."]);
    // A quote inside a literal is data, not the start of a quoted string.
    answer(
        &mut c,
        "u6 SEARCH NOT SUBJECT {3+}\r\n\"ü FROM \"jürgen\"\r\n".as_bytes(),
        &["* SEARCH 1", "u6 OK Search completed."],
    );
}

#[test]
fn sent_dates_as_written_internal_dates_in_local_zone() {
    let (_w, mut c) = two_messages();
    // SENT*: the Date: header's own day, whatever its zone.
    c.expect("t6 SEARCH SENTON 25-Nov-2026", &["* SEARCH 1", "t6 OK Search completed."]);
    c.expect("t7 SEARCH SENTON 26-Nov-2026", &["* SEARCH 2", "t7 OK Search completed."]);
    c.expect("t8 SEARCH SENTBEFORE 26-Nov-2026", &["* SEARCH 1", "t8 OK Search completed."]);
    c.expect("t9 SEARCH SENTSINCE 26-Nov-2026", &["* SEARCH 2", "t9 OK Search completed."]);
    // ON/BEFORE/SINCE: the internal date's day in the server's zone.
    use chrono::TimeZone;
    let local = chrono::Local.timestamp_opt(1_795_669_200, 0).unwrap().format("%-d-%b-%Y").to_string();
    c.expect(&format!("u1 SEARCH ON {local}"), &["* SEARCH 1 2", "u1 OK Search completed."]);
    c.expect(&format!("u2 SEARCH BEFORE {local}"), &["* SEARCH", "u2 OK Search completed."]);
    c.expect(&format!("u3 SEARCH SINCE {local}"), &["* SEARCH 1 2", "u3 OK Search completed."]);
}
