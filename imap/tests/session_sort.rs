//! SORT, ESORT, SORT=DISPLAY and THREAD (RFC 5256, 5267, 5957). The
//! messages and commands were run against Dovecot 2.3; each expected line
//! is Dovecot's answer (its tagged text differs only by the timing).
mod session_support;

use session_support::*;

/// (internal date, message): replies by In-Reply-To and References, a
/// missing parent, a message without Date, From or Subject, a forward
/// marked only by "(fwd)", list blobs, display names and bare addresses.
const MESSAGES: &[(&str, &str)] = &[
    ("24-Nov-2026 12:00:00 +0000", "From: \"Zed\" <zed@example.org>\r\nTo: amy@example.org\r\nSubject: Re: plans\r\nDate: Wed, 25 Nov 2026 10:00:00 +0100\r\nMessage-ID: <m2@x>\r\nIn-Reply-To: <m1@x>\r\n\r\nreply one\r\n"),
    ("23-Nov-2026 12:00:00 +0000", "From: amy@example.org\r\nTo: \"Bob\" <bob@example.org>\r\nCc: carl@example.org\r\nSubject: plans\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m1@x>\r\n\r\nthe first message with a longer body than the others\r\n"),
    ("24-Nov-2026 12:00:00 +0000", "From: \"bob\" <Bob@example.org>\r\nTo: zed@example.org\r\nSubject: [list] Fwd: other\r\nMessage-ID: <m3@x>\r\nReferences: <m1@x> <m2@x>\r\n\r\nno date\r\n"),
    ("22-Nov-2026 12:00:00 +0000", "From: \"Amy\" <amy@example.org>\r\nTo: \"_under\" <u@example.org>\r\nSubject: other\r\nDate: Mon, 23 Nov 2026 08:00:00 -0500\r\nMessage-ID: <m4@x>\r\n\r\nx\r\n"),
    ("25-Nov-2026 12:00:00 +0000", "To: Carl <carl@example.org>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m5@x>\r\nReferences: <m9@x>\r\n\r\nno subject, no from\r\n"),
    ("26-Nov-2026 12:00:00 +0000", "From: carl@example.org\r\nTo: amy@example.org\r\nSubject: Re: plans\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m6@x>\r\nReferences: <m1@x> <m2@x>\r\n\r\nreply two\r\n"),
    ("21-Nov-2026 12:00:00 +0000", "From: dan@example.org\r\nTo: amy@example.org\r\nSubject: plans (fwd)\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nforwarded\r\n"),
    ("27-Nov-2026 12:00:00 +0000", "From: \"Eve\" <eve@example.org>\r\nTo: bob@example.org\r\nCc: \"Dan\" <dan@example.org>\r\nSubject: Re: other\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m8@x>\r\nReferences: <m4@x>\r\n\r\nre other\r\n"),
];

fn mailbox() -> (World, Client) {
    let w = World::new();
    let mut c = w.alice();
    for (i, (date, m)) in MESSAGES.iter().enumerate() {
        let cmd = format!("ap{i} APPEND INBOX \"{date}\" {{{}+}}\r\n{m}\r\n", m.len());
        check(&c.raw(cmd.as_bytes()), &[&format!("ap{i} OK [APPENDUID {{}}] {{}}")]);
    }
    let out = c.send("s SELECT INBOX");
    assert!(out.contains("* 8 EXISTS\r\n"), "{out}");
    (w, c)
}

#[test]
fn sort_by_every_key() {
    let (_w, mut c) = mailbox();
    let cases = [
        ("(ARRIVAL) UTF-8 ALL", "7 4 2 1 3 5 6 8"),
        // Equal keys keep mailbox order, also when reversed.
        ("(REVERSE ARRIVAL) UTF-8 ALL", "8 6 5 1 3 2 4 7"),
        // No Date: header: the internal date.
        ("(DATE) UTF-8 ALL", "7 4 2 5 3 1 6 8"),
        ("(REVERSE DATE) UTF-8 ALL", "8 6 1 3 2 5 4 7"),
        ("(FROM) UTF-8 ALL", "5 2 4 3 6 7 8 1"),
        ("(REVERSE FROM) UTF-8 ALL", "1 8 7 6 3 2 4 5"),
        ("(TO) UTF-8 ALL", "1 6 7 2 8 5 4 3"),
        ("(CC) UTF-8 ALL", "1 3 4 5 6 7 2 8"),
        ("(SIZE) UTF-8 ALL", "7 5 3 4 6 1 8 2"),
        ("(SUBJECT) UTF-8 ALL", "5 3 4 8 1 2 6 7"),
        ("(REVERSE SUBJECT) UTF-8 ALL", "1 2 6 7 3 4 8 5"),
        ("(SUBJECT REVERSE DATE) UTF-8 ALL", "5 8 3 4 6 1 2 7"),
        ("(DISPLAYFROM) UTF-8 ALL", "5 4 2 3 6 7 8 1"),
        // "_under" sorts after letters: the comparison is upper-cased.
        ("(DISPLAYTO) UTF-8 ALL", "1 6 7 2 8 5 3 4"),
        ("(DATE) US-ASCII NOT SUBJECT plans", "4 5 3 8"),
        ("(DATE) \"UTF-8\" ALL", "7 4 2 5 3 1 6 8"),
    ];
    for (i, (args, expected)) in cases.iter().enumerate() {
        c.expect(&format!("t{i} SORT {args}"), &[&format!("* SORT {expected}"), &format!("t{i} OK Sort completed.")]);
    }
    c.expect("u1 UID SORT (DATE) UTF-8 SUBJECT plans", &["* SORT 7 2 1 6", "u1 OK Sort completed."]);
    c.expect("u2 SORT (DATE) UTF-8 SUBJECT nothing", &["* SORT", "u2 OK Sort completed."]);
    // 8-bit quoted strings are accepted in SORT and THREAD as in SEARCH.
    c.expect("u4 SORT (DATE) UTF-8 OR SUBJECT \"plänß\" FROM zed", &["* SORT 1", "u4 OK Sort completed."]);
    c.expect("u5 THREAD REFERENCES UTF-8 OR SUBJECT \"plänß\" FROM zed", &["* THREAD (1)", "u5 OK Thread completed."]);
    c.expect(
        "u3 SORT (DATE) UTF-8 MODSEQ 1",
        &["* OK [HIGHESTMODSEQ {}] Highest", "* SORT 7 4 2 5 3 1 6 8 (MODSEQ {})", "u3 OK Sort completed."],
    );
}

#[test]
fn esort_returns() {
    let (_w, mut c) = mailbox();
    c.expect(
        "t16 UID SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL",
        &["* ESEARCH (TAG \"t16\") UID MIN 7 MAX 8 ALL 7,4,2,5,3,1,6,8 COUNT 8", "t16 OK Sort completed."],
    );
    c.expect(
        "t17 SORT RETURN () (REVERSE SUBJECT) UTF-8 ALL",
        &["* ESEARCH (TAG \"t17\") ALL 1:2,6:7,3:4,8,5", "t17 OK Sort completed."],
    );
    c.expect(
        "t18 SORT RETURN (COUNT) (DATE) UTF-8 SUBJECT nothing",
        &["* ESEARCH (TAG \"t18\") COUNT 0", "t18 OK Sort completed."],
    );
    // MIN alone reports the MODSEQ of the first message in sort order (7).
    c.expect("t19 STORE 7 +FLAGS (\\Seen)", &["* 7 FETCH (FLAGS (\\Seen \\Recent))", "t19 OK Store completed."]);
    let all = c.send("t20 SORT RETURN (ALL) (DATE) UTF-8 MODSEQ 1");
    let highest: u64 = all.split("MODSEQ ").last().and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).unwrap().parse().unwrap();
    check(&c.send("t21 FETCH 7 (MODSEQ)"), &[&format!("* 7 FETCH (MODSEQ ({highest}))"), "t21 OK Fetch completed."]);
    c.expect("t22 STORE 8 +FLAGS (\\Seen)", &["* 8 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ({}))", "t22 OK Store completed."]);
    c.expect("t23 SORT RETURN (MIN) (DATE) UTF-8 MODSEQ 1", &[&format!("* ESEARCH (TAG \"t23\") MIN 7 MODSEQ {highest}"), "t23 OK Sort completed."]);
    c.expect("t24 SORT RETURN (MAX) (DATE) UTF-8 MODSEQ 1", &[&format!("* ESEARCH (TAG \"t24\") MAX 8 MODSEQ {}", highest + 1), "t24 OK Sort completed."]);
}

#[test]
fn sort_and_thread_errors() {
    let (_w, mut c) = mailbox();
    c.expect("t19 SORT (DATE) X-BOGUS ALL", &["t19 NO [BADCHARSET {}] {}"]);
    c.expect("t20 SORT (FOO) UTF-8 ALL", &["t20 BAD {}"]);
    c.expect("t21 SORT (DATE) UTF-8 ALL CHARSET", &["t21 BAD Error in IMAP command SORT: invalid arguments."]);
    c.expect("t22 SORT RETURN (FOO) (DATE) UTF-8 ALL", &["t22 BAD {}"]);
    c.expect("t26 THREAD FOO UTF-8 ALL", &["t26 BAD {}"]);
    c.expect("t27 THREAD REFERENCES X-BOGUS ALL", &["t27 NO [BADCHARSET {}] {}"]);
    c.expect("u CLOSE", &["u OK {}"]);
    c.expect("t28 SORT (DATE) UTF-8 ALL", &["t28 BAD SORT needs a selected mailbox."]);
    c.expect("t31 THREAD REFERENCES UTF-8 ALL", &["t31 BAD THREAD needs a selected mailbox."]);
}

#[test]
fn threads() {
    let (_w, mut c) = mailbox();
    c.expect(
        "t22 THREAD ORDEREDSUBJECT UTF-8 ALL",
        &["* THREAD (7 (2)(1)(6))(4 (3)(8))(5)", "t22 OK Thread completed."],
    );
    c.expect("t23 THREAD REFERENCES UTF-8 ALL", &["* THREAD (4 8)(2 (7)(1 (3)(6)))(5)", "t23 OK Thread completed."]);
    c.expect(
        "t24 UID THREAD REFERENCES US-ASCII NOT FROM carl",
        &["* THREAD (4 8)(2 (7)(1 3))(5)", "t24 OK Thread completed."],
    );
    c.expect("t25 THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing", &["* THREAD", "t25 OK Thread completed."]);
    c.expect(
        "t29 THREAD ORDEREDSUBJECT UTF-8 NOT SUBJECT other NOT UID 1,6",
        &["* THREAD (7 2)(5)", "t29 OK Thread completed."],
    );
    c.expect("t30 UID THREAD ORDEREDSUBJECT UTF-8 SUBJECT other", &["* THREAD (4 (3)(8))", "t30 OK Thread completed."]);
}

#[test]
fn capabilities_name_sort_and_thread() {
    let (_w, mut c) = mailbox();
    let out = c.send("c CAPABILITY");
    let words: Vec<&str> = out.lines().next().unwrap_or("").split(' ').collect();
    for cap in ["SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"] {
        assert!(words.contains(&cap), "{cap} missing: {out}");
    }
}

#[test]
fn subjects_compare_by_unicode_casemap_like_dovecot() {
    let w = World::new();
    for subject in ["Zebra", "Äpfel", "Apfel", "apple", "Ølen", "Oma", "éclair", "Eclair", "_x", "ß"] {
        let m = format!("From: a@b\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nx\r\n");
        w.deliver("alice", "INBOX", m.as_bytes());
    }
    let mut c = w.alice();
    c.send("s EXAMINE INBOX");
    // Dovecot 2.3: decomposed title case, so accents sort after the bare
    // letter's words and "ß" stays itself.
    c.expect("t SORT (SUBJECT) UTF-8 ALL", &["* SORT 3 4 2 8 7 6 1 9 5 10", "t OK Sort completed."]);
    c.expect("u THREAD ORDEREDSUBJECT UTF-8 ALL", &["* THREAD (1)(2)(3)(4)(5)(6)(7)(8)(9)(10)", "u OK Thread completed."]);
}
