//! FETCH items, compared with Dovecot 2.3's answers for the same message.
mod session_support;

use session_support::*;

const MULTIPART: &[u8] = include_bytes!("session_support/multipart.eml");

fn selected_with_multipart() -> (World, Client) {
    let w = World::new();
    w.deliver("alice", "INBOX", MULTIPART);
    w.deliver("alice", "INBOX", &simple_message("two"));
    let mut c = w.alice();
    let out = c.send("s SELECT INBOX");
    assert!(out.ends_with("s OK [READ-WRITE] Select completed.\r\n"), "{out}");
    (w, c)
}

// Dovecot 2.3 counts the CRLF after an encapsulated multipart's closing
// boundary into the message/rfc822 part (214 bytes, 13 lines, 2.TEXT of 110
// bytes); RFC 2046 5.1.1 assigns that CRLF to the outer delimiter, which is
// what we do (212 / 12 / 108). Everything else is byte-identical to Dovecot.

#[test]
fn bodystructure_body_envelope_match_dovecot() {
    let (_w, mut c) = selected_with_multipart();
    c.expect("a FETCH 1 BODYSTRUCTURE", &[r#"* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 12 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 212 (NIL "inner" (("Dave" NIL "dave" "example.org")) (("Dave" NIL "dave" "example.org")) (("Dave" NIL "dave" "example.org")) NIL NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL) 12 NIL ("attachment" ("filename" "fwd.eml")) NIL NIL)("application" "octet-stream" ("name" "a.bin") "<a@b>" "some bytes" "base64" 8 NIL NIL NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL))"#, "a OK Fetch completed."]);
    c.expect("b FETCH 1 BODY", &[r#"* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 12 0)("message" "rfc822" NIL NIL NIL "7bit" 212 (NIL "inner" (("Dave" NIL "dave" "example.org")) (("Dave" NIL "dave" "example.org")) (("Dave" NIL "dave" "example.org")) NIL NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 0) "alternative") 12)("application" "octet-stream" ("name" "a.bin") "<a@b>" "some bytes" "base64" 8) "mixed"))"#, "b OK Fetch completed."]);
    c.expect("c FETCH 1 ENVELOPE", &[r#"* 1 FETCH (ENVELOPE ("Wed, 25 Nov 2026 10:00:00 +0000" "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" (("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) (("Bob" NIL "bob" "example.org")("Carol, C." NIL "carol" "example.org")) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL "<mp@example.org>"))"#, "c OK Fetch completed."]);
    // Peeking did not set \Seen.
    c.expect("d FETCH 1 FLAGS", &["* 1 FETCH (FLAGS (\\Recent))", "d OK Fetch completed."]);
}

#[test]
fn sections_and_partials_match_dovecot() {
    let (_w, mut c) = selected_with_multipart();
    let out = c.send("a FETCH 1 (BODY.PEEK[1.MIME] BODY.PEEK[2.HEADER] BODY.PEEK[2.1] BODY.PEEK[2.TEXT])");
    assert_eq!(
        out,
        "* 1 FETCH (BODY[1.MIME] {88}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n BODY[2.HEADER] {104}\r\nFrom: Dave <dave@example.org>\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n BODY[2.1] {10}\r\ninner text BODY[2.TEXT] {108}\r\n--inner\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--inner\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--inner--)\r\na OK Fetch completed.\r\n"
    );
    let out = c.send("b FETCH 1 (BODY.PEEK[3]<2.4> BODY.PEEK[HEADER.FIELDS (Subject from)] BODY.PEEK[2.2.MIME])");
    assert_eq!(
        out,
        "* 1 FETCH (BODY[3]<2> {4}\r\nECAw BODY[HEADER.FIELDS (SUBJECT FROM)] {73}\r\nFrom: Alice <alice@example.org>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n BODY[2.2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n)\r\nb OK Fetch completed.\r\n"
    );
    let out = c.send("c FETCH 1 (BODY.PEEK[9] BODY.PEEK[HEADER.FIELDS.NOT (to cc from subject date message-id)] BODY.PEEK[]<0.4> BODY.PEEK[1]<100.5>)");
    assert_eq!(
        out,
        "* 1 FETCH (BODY[9] {0}\r\n BODY[HEADER.FIELDS.NOT (TO CC FROM SUBJECT DATE MESSAGE-ID)] {70}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n BODY[]<0> {4}\r\nFrom BODY[1]<100> {0}\r\n)\r\nc OK Fetch completed.\r\n"
    );
    let out = c.send("d FETCH 2 (BODY.PEEK[1] BODY.PEEK[TEXT] RFC822.SIZE)");
    assert_eq!(out, "* 2 FETCH (BODY[1] {12}\r\nHello two.\r\n BODY[TEXT] {12}\r\nHello two.\r\n RFC822.SIZE 160)\r\nd OK Fetch completed.\r\n");
}

#[test]
fn rfc822_items_macros_and_seen() {
    let (_w, mut c) = selected_with_multipart();
    let two = simple_message("two");
    let header_len = two.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let out = c.send("a FETCH 2 (RFC822.HEADER RFC822.TEXT)");
    let expect = format!(
        "* 2 FETCH (RFC822.HEADER {{{}}}\r\n{} RFC822.TEXT {{12}}\r\nHello two.\r\n FLAGS (\\Seen \\Recent))\r\na OK Fetch completed.\r\n",
        header_len,
        String::from_utf8_lossy(&two[..header_len])
    );
    assert_eq!(out, expect);
    c.expect("b FETCH 1 FAST", &["* 1 FETCH (FLAGS (\\Recent) INTERNALDATE \"{}\" RFC822.SIZE 902)", "b OK Fetch completed."]);
    c.expect("c FETCH 2 ALL", &["* 2 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE {} RFC822.SIZE 160 ENVELOPE (\"Wed, 25 Nov 2026 10:00:00 +0000\" \"two\" {} \"<two@example.org>\"))", "c OK Fetch completed."]);
    c.expect("d FETCH 2 FULL", &["* 2 FETCH (FLAGS {} ENVELOPE {} BODY (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 1))", "d OK Fetch completed."]);
    c.expect("e UID FETCH 1 (BODY[1.MIME])", &["* 1 FETCH (UID 1 BODY[1.MIME] {88}", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable", " FLAGS (\\Seen \\Recent))", "e OK Fetch completed."]);
    c.expect("f FETCH 1:2 (UID RFC822.SIZE)", &["* 1 FETCH (UID 1 RFC822.SIZE 902)", "* 2 FETCH (UID 2 RFC822.SIZE 160)", "f OK Fetch completed."]);
    let out = c.send("g FETCH 2 RFC822");
    assert!(out.starts_with(&format!("* 2 FETCH (RFC822 {{{}}}\r\nFrom:", two.len())), "{out}");
    c.expect("h UID FETCH 3:* FLAGS", &["* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))", "h OK Fetch completed."]);
    c.expect("i UID FETCH 7 FLAGS", &["i OK Fetch completed."]);
    c.expect("j FETCH 1 BINARY[1]", &["j BAD {}"]);
}

#[test]
fn large_fetch_is_streamed_in_chunks() {
    use imap::session::SessionEvent;
    let w = World::new();
    let body = "x".repeat(20_000);
    for i in 0..40 {
        let msg = format!("Subject: m{i}\r\n\r\n{body}\r\n");
        w.deliver("alice", "INBOX", msg.as_bytes());
    }
    let mut c = w.alice();
    c.send("s SELECT INBOX");
    c.s.enqueue_input(b"a FETCH 1:* BODY.PEEK[]\r\nb NOOP\r\n");
    let mut chunks = Vec::new();
    loop {
        match c.s.next(c.now) {
            SessionEvent::Output(b) => chunks.push(b),
            SessionEvent::NeedMoreInput { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(chunks.len() >= 3, "expected several chunks, got {}", chunks.len());
    assert!(chunks.iter().all(|c| c.len() < 400_000));
    let all = String::from_utf8(chunks.concat()).unwrap();
    assert_eq!(all.matches(" FETCH (BODY[] {2001").count(), 40);
    assert!(all.ends_with("a OK Fetch completed.\r\nb OK NOOP completed.\r\n"), "{}", &all[all.len() - 80..]);
}

#[test]
fn malformed_mime_is_rendered_without_failing() {
    let w = World::new();
    let messages: &[&[u8]] = &[
        b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter\r\n",
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nnever closed",
        b"Subject: header only, no blank line",
        b"Subject: \xff\xfe bin\xc3\r\nFrom: =?x-unknown?q?=ff?= <@>\r\nTo: ,,,;:\r\n\r\n\x00\x01\x02 body\r\n",
        b"Content-Type: message/rfc822\r\n\r\nnot really a message",
        b"Content-Type: text/plain; charset=\"\r\n\r\nx",
    ];
    for m in messages {
        w.deliver("alice", "INBOX", m);
    }
    let mut c = w.alice();
    c.send("s SELECT INBOX");
    for n in 1..=messages.len() {
        for items in ["BODYSTRUCTURE", "BODY", "ENVELOPE", "BODY.PEEK[1]", "BODY.PEEK[1.MIME]", "BODY.PEEK[2.1.TEXT]", "BODY.PEEK[HEADER.FIELDS (FROM TO)]", "BODY.PEEK[TEXT]<1.3>"] {
            let out = c.send(&format!("f FETCH {n} ({items})"));
            assert!(out.starts_with(&format!("* {n} FETCH (")), "{items} of {n}: {out}");
            assert!(out.ends_with("f OK Fetch completed.\r\n"), "{items} of {n}: {out}");
            // Parentheses outside literals and quoted strings balance.
            if items == "BODYSTRUCTURE" && n == 5 {
                // message/rfc822 always carries envelope, body and lines.
                assert!(out.contains("\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 20 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\""), "{out}");
            }
            if !out.contains('{') && !out.contains('"') {
                assert_eq!(out.matches('(').count(), out.matches(')').count(), "{out}");
            }
        }
    }
}

/// Groups holding only comments, obsolete source routes, comment-only
/// lists, and an attached message whose multipart has an epilogue. The
/// expected answers are Dovecot 2.3's.
#[test]
fn envelope_routes_comment_groups_and_attached_epilogue_match_dovecot() {
    let w = World::new();
    w.deliver(
        "alice",
        "INBOX",
        b"From: Alice <@route1,@route2:alice@example.org>\r\nTo: group1: a@example.org, B <b@example.org>;, c@example.org\r\n\
Cc: group2: (foo) ;\r\nBcc: <@route:user@domain>\r\nSubject: env\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n",
    );
    w.deliver(
        "alice",
        "INBOX",
        b"From: Alice <@route1,@route2:alice@example.org>\r\nReply-To: x@y (Comment Name)\r\nTo: (only comment)\r\n\
Cc: g: (c1) ;, h: <@r:u@d> (c2);\r\nSubject: env\r\n\r\nbody\r\n",
    );
    let inner = "From: inner@example.org\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"in\"\r\n\r\n\
preamble\r\n--in\r\nContent-Type: text/plain\r\n\r\npart one\r\n--in--\r\nepilogue line\r\n";
    let outer = format!(
        "From: outer@example.org\r\nSubject: outer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"out\"\r\n\r\n\
--out\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--out--\r\n"
    );
    w.deliver("alice", "INBOX", outer.as_bytes());
    let mut c = w.alice();
    c.send("s EXAMINE INBOX");
    c.expect("f1 FETCH 1 ENVELOPE", &[r#"* 1 FETCH (ENVELOPE ("Wed, 25 Nov 2026 10:00:00 +0000" "env" (("Alice" "@route1,@route2" "alice" "example.org")) (("Alice" "@route1,@route2" "alice" "example.org")) (("Alice" "@route1,@route2" "alice" "example.org")) ((NIL NIL "group1" NIL)(NIL NIL "a" "example.org")("B" NIL "b" "example.org")(NIL NIL NIL NIL)(NIL NIL "c" "example.org")) ((NIL NIL "group2" NIL)(NIL NIL NIL NIL)) ((NIL "@route" "user" "domain")) NIL "<x@y>"))"#, "f1 OK Fetch completed."]);
    c.expect("f2 FETCH 2 ENVELOPE", &[r#"* 2 FETCH (ENVELOPE (NIL "env" (("Alice" "@route1,@route2" "alice" "example.org")) (("Alice" "@route1,@route2" "alice" "example.org")) (("Comment Name" NIL "x" "y")) NIL ((NIL NIL "g" NIL)(NIL NIL NIL NIL)(NIL NIL "h" NIL)(NIL "@r" "u" "d")(NIL NIL NIL NIL)) NIL NIL NIL))"#, "f2 OK Fetch completed."]);
    let out = c.send("f3 FETCH 3 (BODY[1.TEXT] BODY[1])");
    let text = &inner[inner.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(
        out,
        format!("* 3 FETCH (BODY[1.TEXT] {{{}}}\r\n{text} BODY[1] {{{}}}\r\n{inner})\r\nf3 OK Fetch completed.\r\n", text.len(), inner.len())
    );
    assert_eq!((text.len(), inner.len()), (77, 166), "Dovecot's sizes");
}
