//! SEARCHRES (RFC 5182): `SEARCH RETURN (SAVE)` and `$`.
mod session_support;

use session_support::*;

/// alice's INBOX with five messages, 2 and 4 flagged, selected.
fn five() -> (World, Client) {
    let w = World::new();
    for i in 1..=5 {
        w.deliver("alice", "INBOX", &simple_message(&format!("m{i}")));
    }
    let mut c = w.alice();
    c.send("s SELECT INBOX");
    c.expect("f STORE 2,4 +FLAGS.SILENT (\\Flagged)", &["f OK Store completed."]);
    (w, c)
}

#[test]
fn save_then_use_in_fetch_store_search_copy() {
    let (_w, mut c) = five();
    let caps = c.send("c CAPABILITY");
    assert!(caps.contains(" SEARCHRES"), "{caps}");
    // SAVE alone: no ESEARCH response.
    c.expect("s1 SEARCH RETURN (SAVE) FLAGGED", &["s1 OK Search completed."]);
    c.expect("f1 FETCH $ (FLAGS)", &["* 2 FETCH (FLAGS (\\Flagged \\Recent))", "* 4 FETCH (FLAGS (\\Flagged \\Recent))", "f1 OK Fetch completed."]);
    c.expect("f2 UID FETCH $ (FLAGS)", &["* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))", "* 4 FETCH (UID 4 FLAGS (\\Flagged \\Recent))", "f2 OK Fetch completed."]);
    c.expect("q1 SEARCH OR $ 5", &["* SEARCH 2 4 5", "q1 OK Search completed."]);
    c.expect("q2 UID SEARCH NOT $", &["* SEARCH 1 3 5", "q2 OK Search completed."]);
    c.expect("t1 STORE $ +FLAGS (\\Seen)", &["* 2 FETCH (FLAGS (\\Flagged \\Seen \\Recent))", "* 4 FETCH (FLAGS (\\Flagged \\Seen \\Recent))", "t1 OK Store completed."]);
    c.expect("k1 CREATE Keep", &["k1 OK {}"]);
    c.expect("k2 COPY $ Keep", &["k2 OK [COPYUID {} 2,4 1:2] Copy completed."]);
    // SAVE with other options: ESEARCH as usual; with MIN alone only the minimum is saved.
    c.expect("s2 SEARCH RETURN (SAVE MIN) FLAGGED", &["* ESEARCH (TAG \"s2\") MIN 2", "s2 OK Search completed."]);
    c.expect("q3 SEARCH $", &["* SEARCH 2", "q3 OK Search completed."]);
    c.expect("s3 SEARCH RETURN (SAVE COUNT) 3:5", &["* ESEARCH (TAG \"s3\") COUNT 3", "s3 OK Search completed."]);
    c.expect("q4 SEARCH $", &["* SEARCH 3 4 5", "q4 OK Search completed."]);
    // The result follows expunges: message 4 goes, 5 becomes sequence number 3.
    c.expect("d1 STORE 4 +FLAGS.SILENT (\\Deleted)", &["d1 OK Store completed."]);
    c.expect("d2 EXPUNGE", &["* 4 EXPUNGE", "d2 OK Expunge completed."]);
    c.expect("f3 FETCH $ (UID)", &["* 3 FETCH (UID 3)", "* 4 FETCH (UID 5)", "f3 OK Fetch completed."]);
    // A saved empty result names no message.
    c.expect("s4 SEARCH RETURN (SAVE) DELETED", &["s4 OK Search completed."]);
    c.expect("f4 FETCH $ (UID)", &["f4 OK Fetch completed."]);
    c.expect("f5 UID FETCH $ (UID)", &["f5 OK Fetch completed."]);
    c.expect("q5 SEARCH $", &["* SEARCH", "q5 OK Search completed."]);
    // A failed SAVE empties it.
    c.expect("s5 SEARCH RETURN (SAVE) ALL", &["s5 OK Search completed."]);
    c.expect("s6 SEARCH RETURN (SAVE) CHARSET X-BOGUS ALL", &["s6 NO [BADCHARSET {}"]);
    c.expect("q6 SEARCH $", &["* SEARCH", "q6 OK Search completed."]);
    // `$` inside a quoted string is text.
    c.expect("q7 SEARCH SUBJECT \"$\"", &["* SEARCH", "q7 OK Search completed."]);
}

#[test]
fn select_resets_the_saved_result() {
    let (_w, mut c) = five();
    c.expect("s1 SEARCH RETURN (SAVE) 1:2", &["s1 OK Search completed."]);
    c.expect("q1 SEARCH $", &["* SEARCH 1 2", "q1 OK Search completed."]);
    c.send("s2 EXAMINE INBOX");
    c.expect("q2 SEARCH $", &["* SEARCH", "q2 OK Search completed."]);
    c.expect("b1 SEARCH RETURN (SAVE BOGUS) ALL", &["b1 BAD {}"]);
}
