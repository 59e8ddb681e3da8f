//! Mailbox-level commands as byte scripts.
mod session_support;

use session_support::*;

#[test]
fn create_list_rename_delete_subscribe() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a CREATE Archive/2024", &["a OK Create completed."]);
    c.expect("b CREATE Archive/2024", &["b NO [ALREADYEXISTS] {}"]);
    c.expect("c CREATE INBOX", &["c NO [ALREADYEXISTS] INBOX always exists."]);
    c.expect("d CREATE &AOQ-rger/", &["d OK Create completed."]);
    c.expect("d2 CREATE Sent", &["d2 OK Create completed."]);
    c.expect(
        "e LIST \"\" *",
        &[
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasChildren \\Archive) \"/\" \"Archive\"",
            "* LIST (\\HasNoChildren) \"/\" \"Archive/2024\"",
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"",
            "* LIST (\\HasNoChildren) \"/\" \"&AOQ-rger\"",
            "e OK List completed.",
        ],
    );
    c.expect("f LIST \"\" %", &["* LIST {} \"INBOX\"", "* LIST (\\HasChildren \\Archive) \"/\" \"Archive\"", "* LIST {} \"Sent\"", "* LIST {} \"&AOQ-rger\"", "f OK List completed."]);
    c.expect("g LIST Archive/ %", &["* LIST (\\HasNoChildren) \"/\" \"Archive/2024\"", "g OK List completed."]);
    c.expect("h LIST \"\" \"\"", &["* LIST (\\Noselect) \"/\" \"\"", "h OK List completed."]);
    c.expect("i RENAME Archive Old", &["i OK Rename completed."]);
    c.expect("j LIST \"\" Old*", &["* LIST (\\HasChildren) \"/\" \"Old\"", "* LIST (\\HasNoChildren) \"/\" \"Old/2024\"", "j OK List completed."]);
    c.expect("k RENAME Nope Other", &["k NO [NONEXISTENT] {}"]);
    c.expect("l SUBSCRIBE Old/2024", &["l OK Subscribe completed."]);
    c.expect("m LSUB \"\" *", &["* LSUB () \"/\" \"Old/2024\"", "m OK Lsub completed."]);
    c.expect("n UNSUBSCRIBE Old/2024", &["n OK Unsubscribe completed."]);
    c.expect("o LSUB \"\" *", &["o OK Lsub completed."]);
    c.expect("p DELETE Old/2024", &["p OK Delete completed."]);
    c.expect("q DELETE Old/2024", &["q NO [NONEXISTENT] {}"]);
    c.expect("r DELETE INBOX", &["r NO [CANNOT] INBOX cannot be deleted."]);
    c.expect("s CREATE &Jjo!", &["s NO [CANNOT] Mailbox name is not valid modified UTF-7."]);
}

#[test]
fn status_append_select_examine() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a STATUS INBOX (MESSAGES UIDNEXT UNSEEN RECENT)", &["* STATUS \"INBOX\" (MESSAGES 0 UIDNEXT 1 UNSEEN 0 RECENT 0)", "a OK Status completed."]);
    let msg = simple_message("hi");
    let out = c.raw(format!("b APPEND INBOX (\\Seen $Junk) \"25-Nov-2026 10:00:00 +0100\" {{{}+}}\r\n", msg.len()).as_bytes());
    assert_eq!(out, "");
    let mut rest = msg.clone();
    rest.extend_from_slice(b"\r\n");
    check(&c.raw(&rest), &["b OK [APPENDUID {} 1] Append completed."]);
    c.expect("c APPEND Nope {2+}\r\nhi", &["c NO [TRYCREATE] Mailbox does not exist."]);
    c.expect("d APPEND INBOX {0+}\r\n", &["d NO {}"]);
    w.deliver("alice", "INBOX", &simple_message("two"));
    c.expect(
        "e STATUS INBOX (MESSAGES UIDNEXT UNSEEN UIDVALIDITY HIGHESTMODSEQ)",
        &["* STATUS \"INBOX\" (MESSAGES 2 UIDNEXT 3 UNSEEN 1 UIDVALIDITY {} HIGHESTMODSEQ {})", "e OK Status completed."],
    );
    c.expect("f STATUS Nope (MESSAGES)", &["f NO [NONEXISTENT] {}"]);
    c.expect(
        "g EXAMINE INBOX",
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)",
            "* OK [PERMANENTFLAGS ()] Read-only mailbox.",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN 2] First unseen.",
            "* OK [UIDVALIDITY {}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [HIGHESTMODSEQ {}] Highest",
            "g OK [READ-ONLY] Examine completed.",
        ],
    );
    c.expect("h FETCH 1:2 (UID INTERNALDATE FLAGS)", &["* 1 FETCH (UID 1 INTERNALDATE \"25-Nov-2026 09:00:00 +0000\" FLAGS (\\Seen $Junk \\Recent))", "* 2 FETCH (UID 2 INTERNALDATE {} FLAGS (\\Recent))", "h OK Fetch completed."]);
    c.expect("i STORE 1 +FLAGS (\\Flagged)", &["i NO [READ-ONLY] Mailbox is read-only."]);
    c.expect("j FETCH 2 BODY[]", &["* 2 FETCH (BODY[] {{}}", "From: {}", "To: {}", "Subject: two", "Date: {}", "Message-ID: {}", "Hello two.", ")", "j OK Fetch completed."]);
    c.expect("k FETCH 2 FLAGS", &["* 2 FETCH (FLAGS (\\Recent))", "k OK Fetch completed."]);
    c.expect(
        "l SELECT INBOX",
        &["* OK [CLOSED] Previous mailbox closed.", "* FLAGS {}", "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] Flags permitted.", "* 2 EXISTS", "* 2 RECENT", "* OK [UNSEEN 2] {}", "* OK [UIDVALIDITY {}", "* OK [UIDNEXT 3] {}", "* OK [HIGHESTMODSEQ {}", "l OK [READ-WRITE] Select completed."],
    );
    // A second SELECT: the recent message now belongs to the first selection.
    c.expect("m SELECT INBOX", &["* OK [CLOSED] {}", "* FLAGS {}", "* OK [PERMANENTFLAGS {}", "* 2 EXISTS", "* 0 RECENT", "* OK [UNSEEN 2] {}", "* OK [UIDVALIDITY {}", "* OK [UIDNEXT 3] {}", "* OK [HIGHESTMODSEQ {}", "m OK [READ-WRITE] Select completed."]);
    c.expect("n SELECT Nope", &["* OK [CLOSED] {}", "n NO [NONEXISTENT] {}"]);
    assert_eq!(c.s.selected_mailbox(), None);
    c.expect("o UNSELECT", &["o BAD UNSELECT needs a selected mailbox."]);
}

#[test]
fn enable_namespace_unselect_close() {
    let w = World::new();
    w.deliver("alice", "INBOX", &simple_message("x"));
    let mut c = w.alice();
    c.expect("a ENABLE CONDSTORE", &["* ENABLED CONDSTORE", "a OK Enabled."]);
    c.expect("b ENABLE CONDSTORE QRESYNC FOO", &["* ENABLED QRESYNC", "b OK Enabled."]);
    c.expect("c NAMESPACE", &["* NAMESPACE ((\"\" \"/\")) NIL NIL", "c OK Namespace completed."]);
    c.expect("d SELECT INBOX", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 1 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK {}", "* OK {}", "d OK [READ-WRITE] {}"]);
    c.expect("e STORE 1 +FLAGS.SILENT (\\Deleted)", &["e OK Store completed."]);
    c.expect("f UNSELECT", &["f OK Unselect completed."]);
    c.expect("g SELECT INBOX", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 0 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK {}", "* OK {}", "g OK [READ-WRITE] {}"]);
    c.expect("h CLOSE", &["h OK Close completed."]);
    c.expect("i STATUS INBOX (MESSAGES)", &["* STATUS \"INBOX\" (MESSAGES 0)", "i OK Status completed."]);
}

#[test]
fn list_patterns_take_any_atom_characters() {
    let w = World::new();
    let mut c = w.alice();
    // Not valid modified UTF-7 as a name, but a pattern: answered, not refused.
    c.expect("a LIST \"\" !#$&'+,%*", &["a OK List completed."]);
    c.expect("b LIST \"\" &", &["b OK List completed."]);
    c.expect("c CREATE &AOQ-rger", &["c OK Create completed."]);
    c.expect("d LIST \"\" &AOQ-*", &["* LIST (\\HasNoChildren) \"/\" \"&AOQ-rger\"", "d OK List completed."]);
    c.expect("e LIST \"\" &*", &["* LIST (\\HasNoChildren) \"/\" \"&AOQ-rger\"", "e OK List completed."]);
}

#[test]
fn lsub_returns_unsubscribed_parents_as_noselect() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a CREATE foo/bar", &["a OK Create completed."]);
    c.expect("b CREATE baz/x/y", &["b OK Create completed."]);
    c.expect("c SUBSCRIBE foo/bar", &["c OK Subscribe completed."]);
    c.expect("d SUBSCRIBE baz/x/y", &["d OK Subscribe completed."]);
    // RFC 3501 §6.3.9: "%" returns foo, not foo/bar, with \Noselect.
    c.expect("e LSUB \"\" %", &["* LSUB (\\Noselect) \"/\" \"baz\"", "* LSUB (\\Noselect) \"/\" \"foo\"", "e OK Lsub completed."]);
    c.expect("f LSUB \"\" baz/%", &["* LSUB (\\Noselect) \"/\" \"baz/x\"", "f OK Lsub completed."]);
    // "*" matches the subscribed names themselves: no implied parents.
    c.expect("g LSUB \"\" *", &["* LSUB () \"/\" \"baz/x/y\"", "* LSUB () \"/\" \"foo/bar\"", "g OK Lsub completed."]);
    // A subscribed parent is listed as itself, not as \Noselect.
    c.expect("h SUBSCRIBE foo", &["h OK Subscribe completed."]);
    c.expect("i LSUB \"\" %", &["* LSUB (\\Noselect) \"/\" \"baz\"", "* LSUB () \"/\" \"foo\"", "i OK Lsub completed."]);
}

#[test]
fn reselecting_reuses_the_open_mailbox_instead_of_rebuilding_it() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a APPEND INBOX {1+}\r\nx", &["a OK [APPENDUID {}] {}"]);
    c.expect("b SELECT INBOX", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 1 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK {}", "* OK {}", "b OK [READ-WRITE] {}"]);
    // Only opening a mailbox from disk sweeps leftovers of killed writers;
    // a re-SELECT that keeps the open mailbox (O(change), not O(mailbox))
    // leaves this one for the next open.
    // (pid 999999999 is above any pid_max: a dead writer.)
    let leftover = w.dir.path().join("alice/Maildir/dormouse-index.dormouse-tmp.999999999.1");
    std::fs::write(&leftover, b"x").unwrap();
    // A live writer's temp (ours) is about to be renamed: never swept.
    let in_flight = w.dir.path().join(format!("alice/Maildir/dormouse-move.1.0.dormouse-tmp.{}.7", std::process::id()));
    std::fs::write(&in_flight, b"x").unwrap();
    c.expect("c SELECT INBOX", &["* OK [CLOSED] {}", "* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 0 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK {}", "* OK {}", "c OK [READ-WRITE] {}"]);
    assert!(leftover.exists(), "re-SELECT rebuilt the mailbox from disk");
    c.expect("d UNSELECT", &["d OK Unselect completed."]);
    c.expect("e SELECT INBOX", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 0 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK {}", "* OK {}", "e OK [READ-WRITE] {}"]);
    assert!(!leftover.exists(), "a fresh open sweeps leftovers");
    assert!(in_flight.exists(), "a live writer's temp was swept");
}

#[test]
fn append_with_the_mailbox_name_as_a_literal() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a CREATE Work", &["a OK Create completed."]);
    // Synchronizing: a `+` for the name, another for the message.
    check(&c.raw(b"b APPEND {4}\r\n"), &["+ OK"]);
    check(&c.raw(b"Work (\\Seen) {12}\r\n"), &["+ OK"]);
    check(&c.raw(b"Subject: x\r\n\r\n"), &["b OK [APPENDUID {} 1] Append completed."]);
    // LITERAL+ for both, in one piece.
    c.expect("c APPEND {5+}\r\nINBOX {12+}\r\nSubject: y\r\n", &["c OK [APPENDUID {} 1] Append completed."]);
    c.expect("d STATUS Work (MESSAGES)", &["* STATUS \"Work\" (MESSAGES 1)", "d OK Status completed."]);
    c.expect("e SELECT Work", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 1 RECENT", "* OK {}", "* OK {}", "* OK {}", "e OK [READ-WRITE] {}"]);
    c.expect("f FETCH 1 (FLAGS BODY[])", &["* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] {12}", "Subject: x", ")", "f OK Fetch completed."]);
    c.expect("g STATUS INBOX (MESSAGES)", &["* STATUS \"INBOX\" (MESSAGES 1)", "g OK Status completed."]);
    // A name literal that does not exist: TRYCREATE, nothing stored.
    c.expect("h APPEND {4+}\r\nNope {2+}\r\nhi", &["h NO [TRYCREATE] Mailbox does not exist."]);
}

#[test]
fn dotted_names_are_stored_escaped_like_dovecot_listescape() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a CREATE lists.debian.org", &["a OK Create completed."]);
    c.expect("b CREATE v1.2/rc.1", &["b OK Create completed."]);
    c.expect("c CREATE \"back\\\\slash\"", &["c OK Create completed."]);
    c.expect("d CREATE ~home.dir", &["d OK Create completed."]);
    let root = w.dir.path().join("alice/Maildir");
    for dir in [".lists\\2edebian\\2eorg", ".v1\\2e2", ".v1\\2e2.rc\\2e1", ".back\\5cslash", ".\\7ehome\\2edir"] {
        assert!(root.join(dir).join("cur").is_dir(), "{dir} missing");
    }
    c.expect(
        "e LIST \"\" *",
        &[
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren) \"/\" \"back\\\\slash\"",
            "* LIST (\\HasNoChildren) \"/\" \"lists.debian.org\"",
            "* LIST (\\HasChildren) \"/\" \"v1.2\"",
            "* LIST (\\HasNoChildren) \"/\" \"v1.2/rc.1\"",
            "* LIST (\\HasNoChildren) \"/\" \"~home.dir\"",
            "e OK List completed.",
        ],
    );
    c.expect("f LIST \"\" v1.2/%", &["* LIST (\\HasNoChildren) \"/\" \"v1.2/rc.1\"", "f OK List completed."]);
    w.deliver("alice", "lists.debian.org", &simple_message("deb"));
    c.expect("g SELECT lists.debian.org", &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 1 RECENT", "* OK [UNSEEN 1] {}", "* OK {}", "* OK {}", "* OK {}", "g OK [READ-WRITE] {}"]);
    c.expect("h SUBSCRIBE v1.2/rc.1", &["h OK Subscribe completed."]);
    assert_eq!(std::fs::read_to_string(root.join("subscriptions")).unwrap(), "V\t2\n\nv1\\2e2\trc\\2e1\n");
    c.expect("i LSUB \"\" *", &["* LSUB () \"/\" \"v1.2/rc.1\"", "i OK Lsub completed."]);
    c.expect("j RENAME v1.2 v2.0", &["j OK Rename completed."]);
    assert!(root.join(".v2\\2e0.rc\\2e1").is_dir());
    c.expect("k LIST \"\" v*", &["* LIST (\\HasChildren) \"/\" \"v2.0\"", "* LIST (\\HasNoChildren) \"/\" \"v2.0/rc.1\"", "k OK List completed."]);
    c.expect("l COPY 1 v2.0/rc.1", &["l OK [COPYUID {} 1 1] Copy completed."]);
    c.expect("m STATUS v2.0/rc.1 (MESSAGES)", &["* STATUS \"v2.0/rc.1\" (MESSAGES 1)", "m OK Status completed."]);
    c.expect("n DELETE v2.0/rc.1", &["n OK Delete completed."]);
    c.expect("p UNSELECT", &["p OK Unselect completed."]);
    c.expect("q DELETE lists.debian.org", &["q OK Delete completed."]);
    assert!(!root.join(".lists\\2edebian\\2eorg").exists());
    c.expect("r LIST \"\" *", &["* LIST {} \"INBOX\"", "* LIST {} \"back\\\\slash\"", "* LIST (\\HasNoChildren) \"/\" \"v2.0\"", "* LIST {} \"~home.dir\"", "r OK List completed."]);
    // Levels "." and ".." stay refused.
    c.expect("s CREATE a/../b", &["s NO [CANNOT] {}"]);
    c.expect("t CREATE .", &["t NO [CANNOT] {}"]);
}

#[test]
fn raw_utf8_mailbox_names_get_no_cannot() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a CREATE \"München\"", &["a NO [CANNOT] Mailbox name is not valid modified UTF-7: 8-bit characters must be sent encoded {}"]);
    // An 8-bit atom is a syntax error (Dovecot: "8bit data in atom").
    c.expect("b CREATE München", &["b BAD {}"]);
    c.expect("c CREATE {8+}\r\nMünchen", &["c NO [CANNOT] Mailbox name is not valid modified UTF-7: {}"]);
    c.expect("d SELECT \"München\"", &["d NO [CANNOT] {}"]);
    c.expect("e STATUS \"München\" (MESSAGES)", &["e NO [CANNOT] {}"]);
    c.expect("f CREATE M&APw-nchen", &["f OK Create completed."]);
    c.expect("g RENAME M&APw-nchen \"Köln\"", &["g NO [CANNOT] {}"]);
    c.expect("h LIST \"\" *", &["* LIST {} \"INBOX\"", "* LIST (\\HasNoChildren) \"/\" \"M&APw-nchen\"", "h OK List completed."]);
}
