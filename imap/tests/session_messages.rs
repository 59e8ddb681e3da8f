//! STORE, SEARCH, COPY, MOVE, EXPUNGE, UIDPLUS and CONDSTORE/QRESYNC.
mod session_support;

use session_support::*;

fn three_messages() -> (World, Client) {
    let w = World::new();
    for s in ["one", "two", "three"] {
        w.deliver("alice", "INBOX", &simple_message(s));
    }
    let mut c = w.alice();
    let out = c.send("s SELECT INBOX");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    (w, c)
}

#[test]
fn store_variants() {
    let (_w, mut c) = three_messages();
    c.expect("a STORE 1 +FLAGS (\\Flagged $Work)", &["* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)", "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted.", "* 1 FETCH (FLAGS (\\Flagged $Work \\Recent))", "a OK Store completed."]);
    c.expect("b STORE 1:2 FLAGS (\\Seen)", &["* 1 FETCH (FLAGS (\\Seen \\Recent))", "* 2 FETCH (FLAGS (\\Seen \\Recent))", "b OK Store completed."]);
    c.expect("c STORE 2 -FLAGS.SILENT (\\Seen)", &["c OK Store completed."]);
    c.expect("d UID STORE 3 +FLAGS (\\Deleted)", &["* 3 FETCH (UID 3 FLAGS (\\Deleted \\Recent))", "d OK Store completed."]);
    c.expect("e FETCH 1:* FLAGS", &["* 1 FETCH (FLAGS (\\Seen \\Recent))", "* 2 FETCH (FLAGS (\\Recent))", "* 3 FETCH (FLAGS (\\Deleted \\Recent))", "e OK Fetch completed."]);
    c.expect("a2 STORE 2 +FLAGS ($Work)", &["* 2 FETCH (FLAGS ($Work \\Recent))", "a2 OK Store completed."]);
    c.expect("a3 STORE 2 -FLAGS ($Work)", &["* 2 FETCH (FLAGS (\\Recent))", "a3 OK Store completed."]);
    c.expect("f STORE 4 +FLAGS (\\Seen)", &["f BAD Invalid message sequence number."]);
    c.expect("g STORE 1 +FLAGS (\\Bogus)", &["g BAD {}"]);
    c.expect("h UID STORE 99 +FLAGS (\\Seen)", &["h OK Store completed."]);
}

#[test]
fn search_keys() {
    let (_w, mut c) = three_messages();
    c.expect("a STORE 2 +FLAGS (\\Flagged)", &["* 2 FETCH {}", "a OK {}"]);
    c.expect("b SEARCH ALL", &["* SEARCH 1 2 3", "b OK Search completed."]);
    c.expect("c SEARCH FLAGGED", &["* SEARCH 2", "c OK Search completed."]);
    c.expect("d SEARCH UNFLAGGED SUBJECT three", &["* SEARCH 3", "d OK Search completed."]);
    c.expect("e UID SEARCH OR SUBJECT one SUBJECT two", &["* SEARCH 1 2", "e OK Search completed."]);
    c.expect("f SEARCH NOT FROM alice", &["* SEARCH", "f OK Search completed."]);
    c.expect("g SEARCH BODY \"hello TWO\"", &["* SEARCH 2", "g OK Search completed."]);
    c.expect("h SEARCH TEXT two@example", &["* SEARCH 2", "h OK Search completed."]);
    c.expect("i SEARCH HEADER Message-ID <one@", &["* SEARCH 1", "i OK Search completed."]);
    c.expect("j SEARCH 2:* LARGER 10 SMALLER 100000", &["* SEARCH 2 3", "j OK Search completed."]);
    c.expect("k SEARCH UID 1,3 RECENT NEW", &["* SEARCH 1 3", "k OK Search completed."]);
    c.expect("l SEARCH SENTON 25-Nov-2026 SENTBEFORE 26-Nov-2026 SENTSINCE 1-Jan-2000", &["* SEARCH 1 2 3", "l OK Search completed."]);
    c.expect("m SEARCH BEFORE 1-Jan-2000", &["* SEARCH", "m OK Search completed."]);
    c.expect("n SEARCH SINCE 1-Jan-2000 UNSEEN UNDELETED UNANSWERED UNDRAFT", &["* SEARCH 1 2 3", "n OK Search completed."]);
    c.expect("o SEARCH KEYWORD $Work", &["* SEARCH", "o OK Search completed."]);
    c.expect("p SEARCH CHARSET X-UNKNOWN ALL", &["p NO [BADCHARSET (UTF-8 US-ASCII ISO-8859-1 WINDOWS-1252)] Unsupported charset."]);
    c.expect("q SEARCH CHARSET UTF-8 TO bob", &["* SEARCH 1 2 3", "q OK Search completed."]);
    c.expect("r SEARCH MODSEQ 1", &["* OK [HIGHESTMODSEQ {}] Highest", "* SEARCH 1 2 3 (MODSEQ {})", "r OK Search completed."]);
    c.expect("s SEARCH (OR DELETED (FLAGGED)) OLD", &["* SEARCH", "s OK Search completed."]);
    c.expect("t SEARCH (", &["t BAD {}"]);
}

#[test]
fn header_search_parses_each_message_once() {
    let (w, mut c) = three_messages();
    c.expect("a SEARCH SUBJECT two", &["* SEARCH 2", "a OK Search completed."]);
    // The header fields are cached now: rewriting a file (which no Maildir
    // writer does: a file's content is fixed under its name) changes nothing
    // for header searches, so they opened no file...
    let maildir = w.dir.path().join("alice/Maildir");
    for entry in std::fs::read_dir(maildir.join("cur")).unwrap().chain(std::fs::read_dir(maildir.join("new")).unwrap()) {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("Subject: two", "Subject: owt")).unwrap();
    }
    c.expect("b SEARCH SUBJECT two", &["* SEARCH 2", "b OK Search completed."]);
    c.expect("c SEARCH OR SUBJECT one FROM alice", &["* SEARCH 1 2 3", "c OK Search completed."]);
    // ...while a body search still reads the files.
    c.expect("d SEARCH TEXT owt", &["* SEARCH 2", "d OK Search completed."]);
}

#[test]
fn copy_move_uidplus() {
    let (w, mut c) = three_messages();
    c.expect("a CREATE Archive", &["a OK {}"]);
    c.expect("b COPY 1:2 Archive", &["b OK [COPYUID {} 1:2 1:2] Copy completed."]);
    c.expect("c UID COPY 3 Nope", &["c NO [TRYCREATE] Mailbox does not exist."]);
    c.expect("d MOVE 1 Archive", &["* OK [COPYUID {} 1 3] Moved UIDs.", "* 1 EXPUNGE", "d OK Move completed."]);
    c.expect("e UID MOVE 3 Archive", &["* OK [COPYUID {} 3 4] Moved UIDs.", "* 2 EXPUNGE", "e OK Move completed."]);
    c.expect("f FETCH 1:* UID", &["* 1 FETCH (UID 2)", "f OK Fetch completed."]);
    c.expect("g STATUS Archive (MESSAGES UIDNEXT)", &["* STATUS \"Archive\" (MESSAGES 4 UIDNEXT 5)", "g OK Status completed."]);
    c.expect("h COPY 5 Archive", &["h BAD Invalid message sequence number."]);
    c.expect("i UID COPY 100 Archive", &["i OK No messages found; Copy completed."]);
    let _ = w;
}

#[test]
fn expunge_and_uid_expunge() {
    let (_w, mut c) = three_messages();
    c.expect("a STORE 1:3 +FLAGS.SILENT (\\Deleted)", &["a OK Store completed."]);
    c.expect("b UID EXPUNGE 2", &["* 2 EXPUNGE", "b OK Expunge completed."]);
    c.expect("c EXPUNGE", &["* 1 EXPUNGE", "* 1 EXPUNGE", "c OK Expunge completed."]);
    c.expect("d SEARCH ALL", &["* SEARCH", "d OK Search completed."]);
    c.expect("e EXAMINE INBOX", &["* OK [CLOSED] {}", "* FLAGS {}", "* OK {}", "* 0 EXISTS", "* 0 RECENT", "* OK {}", "* OK {}", "* OK {}", "e OK [READ-ONLY] {}"]);
    c.expect("f EXPUNGE", &["f NO [READ-ONLY] Mailbox is read-only."]);
}

#[test]
fn condstore() {
    let (_w, mut c) = three_messages();
    // The first CONDSTORE-enabling command with a mailbox selected reports
    // HIGHESTMODSEQ (RFC 7162 §3.1); the next ones do not repeat it.
    c.expect("a FETCH 1 (MODSEQ)", &["* OK [HIGHESTMODSEQ {}] Highest", "* 1 FETCH (MODSEQ ({}))", "a OK Fetch completed."]);
    c.expect("a2 FETCH 1 (MODSEQ)", &["* 1 FETCH (MODSEQ ({}))", "a2 OK Fetch completed."]);
    let out = c.send("b STORE 1 +FLAGS (\\Seen)");
    let modseq: u64 = out.split("MODSEQ (").nth(1).and_then(|s| s.split(')').next()).unwrap().parse().unwrap();
    check(&out, &["* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ({}))", "b OK Store completed."]);
    c.expect(&format!("c STORE 1,2 (UNCHANGEDSINCE {}) +FLAGS (\\Flagged)", modseq - 1), &["* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ({}))", "c OK [MODIFIED 1] Conditional STORE failed."]);
    c.expect(&format!("d UID STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS.SILENT (\\Answered)"), &["* 1 FETCH (UID 1 FLAGS (\\Answered \\Seen \\Recent) MODSEQ ({}))", "d OK Store completed."]);
    c.expect(&format!("e FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})"), &["* 1 FETCH (FLAGS (\\Answered \\Seen \\Recent) MODSEQ ({}))", "* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ({}))", "e OK Fetch completed."]);
    c.expect("f SELECT INBOX (CONDSTORE)", &["* OK [CLOSED] {}", "* FLAGS {}", "* OK {}", "* 3 EXISTS", "* 0 RECENT", "* OK [UNSEEN 2] {}", "* OK {}", "* OK {}", "* OK [HIGHESTMODSEQ {}] Highest", "f OK [READ-WRITE] {}"]);
    c.expect("g STATUS INBOX (HIGHESTMODSEQ)", &["* STATUS \"INBOX\" (HIGHESTMODSEQ {})", "g OK {}"]);
}

#[test]
fn qresync_select_and_vanished() {
    let (w, mut c) = three_messages();
    let out = c.send("a FETCH 3 (UID MODSEQ)");
    let modseq: u64 = out.split("MODSEQ (").nth(1).and_then(|s| s.split(')').next()).unwrap().parse().unwrap();
    let uidvalidity = {
        let o = c.send("b STATUS INBOX (UIDVALIDITY)");
        o.split("UIDVALIDITY ").nth(1).and_then(|s| s.split(')').next()).unwrap().parse::<u32>().unwrap()
    };
    c.expect("c SELECT INBOX (QRESYNC (1 1))", &["* OK [CLOSED] {}", "c BAD QRESYNC must be enabled first."]);
    c.expect("d ENABLE QRESYNC", &["* ENABLED QRESYNC", "d OK Enabled."]);
    c.expect("e SELECT INBOX", &["* FLAGS {}", "* OK {}", "* 3 EXISTS", "* 0 RECENT", "* OK {}", "* OK {}", "* OK {}", "* OK {}", "e OK {}"]);
    c.expect("f STORE 2 +FLAGS (\\Deleted)", &["* 2 FETCH (UID 2 FLAGS (\\Deleted) MODSEQ ({}))", "f OK {}"]);
    c.expect("g EXPUNGE", &["* VANISHED 2", "g OK [HIGHESTMODSEQ {}] Expunge completed."]);
    c.expect("h STORE 1 +FLAGS (\\Seen)", &["* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ ({}))", "h OK {}"]);
    c.expect("i UNSELECT", &["i OK {}"]);
    c.expect(
        &format!("j SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))"),
        &["* FLAGS {}", "* OK {}", "* 2 EXISTS", "* 0 RECENT", "* OK {}", "* OK {}", "* OK {}", "* OK {}", "* VANISHED (EARLIER) 2", "* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ ({}))", "j OK [READ-WRITE] {}"],
    );
    c.expect(&format!("k UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)"), &["* VANISHED (EARLIER) 2", "* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ ({}))", "k OK Fetch completed."]);
    c.expect(&format!("l FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)"), &["l BAD {}"]);
    let _ = w;
}

#[test]
fn esearch_return_options() {
    let (_w, mut c) = three_messages();
    c.expect("a SEARCH RETURN (MIN MAX COUNT) ALL", &["* ESEARCH (TAG \"a\") MIN 1 MAX 3 COUNT 3", "a OK Search completed."]);
    c.expect("b UID SEARCH RETURN () 2:*", &["* ESEARCH (TAG \"b\") UID ALL 2:3", "b OK Search completed."]);
    c.expect("c SEARCH RETURN (COUNT ALL) DELETED", &["* ESEARCH (TAG \"c\") COUNT 0", "c OK Search completed."]);
    c.expect("d SEARCH RETURN (ALL) MODSEQ 1", &["* OK [HIGHESTMODSEQ {}] Highest", "* ESEARCH (TAG \"d\") ALL 1:3 MODSEQ {}", "d OK Search completed."]);
    // SAVE is valid since SEARCHRES (session tests of its own).
    c.expect("f SEARCH RETURN MIN ALL", &["f BAD Invalid SEARCH RETURN options."]);
}

#[test]
fn esearch_min_max_report_the_returned_messages_modseq() {
    let (_w, mut c) = three_messages();
    c.expect("a ENABLE CONDSTORE", &["* ENABLED CONDSTORE", "a OK Enabled."]);
    // Message 2 changes last: it holds the mailbox's highest MODSEQ.
    let out = c.send("b STORE 2 +FLAGS (\\Flagged)");
    let high: u64 = out.split("MODSEQ (").nth(1).and_then(|s| s.split(')').next()).unwrap().parse().unwrap();
    let out = c.send("c FETCH 1 (MODSEQ)");
    let first: u64 = out.split("MODSEQ (").nth(1).and_then(|s| s.split(')').next()).unwrap().parse().unwrap();
    assert!(first < high);
    c.expect("d SEARCH RETURN (MIN) MODSEQ 1", &[&format!("* ESEARCH (TAG \"d\") MIN 1 MODSEQ {first}"), "d OK Search completed."]);
    let third = high_of(&mut c, 3);
    c.expect("e SEARCH RETURN (MIN MAX) MODSEQ 1", &[&format!("* ESEARCH (TAG \"e\") MIN 1 MAX 3 MODSEQ {}", first.max(third)), "e OK Search completed."]);
    c.expect("f SEARCH RETURN (COUNT) MODSEQ 1", &[&format!("* ESEARCH (TAG \"f\") COUNT 3 MODSEQ {high}"), "f OK Search completed."]);
}

fn high_of(c: &mut Client, seq: u32) -> u64 {
    let out = c.send(&format!("m{seq} FETCH {seq} (MODSEQ)"));
    out.split("MODSEQ (").nth(1).and_then(|s| s.split(')').next()).unwrap().parse().unwrap()
}
