//! MULTIAPPEND (RFC 3502) as byte scripts: several messages in one APPEND,
//! all stored or none.
mod session_support;

use session_support::*;

fn files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn several_messages_in_one_append() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("x CREATE Work", &["x OK Create completed."]);
    // Synchronizing literals: a `+` for each message.
    check(&c.raw(b"a APPEND Work (\\Seen) {12}\r\n"), &["+ OK"]);
    check(&c.raw(b"Subject: 1\r\n (\\Flagged) \"25-Nov-2026 10:00:00 +0100\" {12}\r\n"), &["+ OK"]);
    check(&c.raw(b"Subject: 2\r\n {12}\r\n"), &["+ OK"]);
    check(&c.raw(b"Subject: 3\r\n\r\n"), &["a OK [APPENDUID {} 1:3] Append completed."]);
    c.expect("b SELECT Work", &["* FLAGS {}", "* OK {}", "* 3 EXISTS", "* 3 RECENT", "* OK [UNSEEN 2] {}", "* OK {}", "* OK {}", "* OK {}", "b OK [READ-WRITE] {}"]);
    c.expect(
        "c FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        &[
            "* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE {} BODY[HEADER.FIELDS (SUBJECT)] {14}",
            "Subject: 1",
            ")",
            "* 2 FETCH (FLAGS (\\Flagged \\Recent) INTERNALDATE \"25-Nov-2026 09:00:00 +0000\" BODY[HEADER.FIELDS (SUBJECT)] {14}",
            "Subject: 2",
            ")",
            "* 3 FETCH (FLAGS (\\Recent) INTERNALDATE {} BODY[HEADER.FIELDS (SUBJECT)] {14}",
            "Subject: 3",
            ")",
            "c OK Fetch completed.",
        ],
    );
    // LITERAL+, into the selected mailbox: the new messages show at once.
    let out = c.send("d APPEND Work {12+}\r\nSubject: 4\r\n {12+}\r\nSubject: 5\r\n");
    check(&out, &["* 5 EXISTS", "* {} RECENT", "d OK [APPENDUID {} 4:5] Append completed."]);
    // The mailbox name as a literal works too.
    c.expect("e APPEND {4+}\r\nWork {2+}\r\nhi {2+}\r\nho", &["* 7 EXISTS", "* {} RECENT", "e OK [APPENDUID {} 6:7] Append completed."]);
    assert_eq!(files(&w.dir.path().join("alice/Maildir/tmp")), 0, "streamed files left in tmp/");
}

#[test]
fn a_failing_message_stores_none() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("x CREATE Work", &["x OK Create completed."]);
    c.expect("a APPEND Work {12+}\r\nSubject: 1\r\n", &["a OK [APPENDUID {} 1] Append completed."]);
    let work = w.dir.path().join("alice/Maildir/.Work");
    let stored = || files(&work.join("new")) + files(&work.join("cur"));
    assert_eq!(stored(), 1);
    // The middle message is empty: the first was stored, and is removed
    // again before the NO; the third is never stored.
    c.expect("b APPEND Work {12+}\r\nSubject: 2\r\n {0+}\r\n {12+}\r\nSubject: 3\r\n", &["b NO Invalid message: empty message."]);
    assert_eq!(stored(), 1, "a message of the failed MULTIAPPEND stayed");
    c.expect("c STATUS Work (MESSAGES UIDNEXT)", &["* STATUS \"Work\" (MESSAGES 1 UIDNEXT 3)", "c OK Status completed."]);
    // Refused before anything is stored: a bad flag, a missing mailbox, syntax.
    c.expect("d APPEND Work {2+}\r\nhi (\\Bogus) {2+}\r\nho", &["d BAD Invalid flag \\Bogus."]);
    c.expect("e APPEND Nope {2+}\r\nhi {2+}\r\nho", &["e NO [TRYCREATE] Mailbox does not exist."]);
    c.expect("f APPEND Work {2+}\r\nhi junk {2+}\r\nho", &["f BAD {}"]);
    c.expect("g STATUS Work (MESSAGES UIDNEXT)", &["* STATUS \"Work\" (MESSAGES 1 UIDNEXT 3)", "g OK Status completed."]);
    assert_eq!(files(&w.dir.path().join("alice/Maildir/tmp")), 0, "streamed files left in tmp/");
    c.expect("h SELECT Work", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 1 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK [UIDNEXT 3] {}", "* OK {}", "h OK [READ-WRITE] {}"]);
    c.expect("i FETCH 1 (UID BODY.PEEK[])", &["* 1 FETCH (UID 1 BODY[] {12}", "Subject: 1", ")", "i OK Fetch completed."]);
    let caps = c.send("j CAPABILITY");
    assert!(caps.contains(" MULTIAPPEND"), "{caps}");
}

#[test]
fn too_many_messages_get_no_limit() {
    let w = World::new();
    let mut c = w.alice();
    let mut cmd = b"a APPEND INBOX".to_vec();
    for i in 0..51 {
        cmd.extend_from_slice(format!(" {{12+}}\r\nSubject: {:1}\r\n", i % 10).as_bytes());
    }
    cmd.extend_from_slice(b"\r\nb NOOP\r\n");
    check(&c.raw(&cmd), &["a NO [LIMIT] At most 50 messages in one APPEND; send them in smaller batches.", "b OK NOOP completed."]);
    c.expect("c STATUS INBOX (MESSAGES)", &["* STATUS \"INBOX\" (MESSAGES 0)", "c OK Status completed."]);
    assert_eq!(files(&w.dir.path().join("alice/Maildir/tmp")), 0, "streamed files left in tmp/");
    // 50 are fine.
    let mut cmd = b"d APPEND INBOX".to_vec();
    for i in 0..50 {
        cmd.extend_from_slice(format!(" {{12+}}\r\nSubject: {:1}\r\n", i % 10).as_bytes());
    }
    cmd.extend_from_slice(b"\r\n");
    check(&c.raw(&cmd), &["d OK [APPENDUID {} 1:50] Append completed."]);
}

#[test]
fn raw_utf8_target_gets_no_cannot() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a APPEND \"München\" {2+}\r\nhi {2+}\r\nho", &["a NO [CANNOT] Mailbox name is not valid modified UTF-7: {}"]);
    assert_eq!(files(&w.dir.path().join("alice/Maildir/tmp")), 0, "streamed files left in tmp/");
}
