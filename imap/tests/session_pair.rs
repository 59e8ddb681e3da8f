//! Two sessions on one mailbox seeing each other's changes, with events
//! fed from a CollectingHook (as the bus would deliver them).
mod session_support;

use session_support::*;

fn pair() -> (World, Client, Client) {
    let w = World::new();
    for s in ["one", "two", "three"] {
        w.deliver("alice", "INBOX", &simple_message(s));
    }
    let mut a = w.alice();
    let mut b = w.alice();
    assert!(a.send("s SELECT INBOX").contains("* 3 RECENT"));
    assert!(b.send("s SELECT INBOX").contains("* 0 RECENT"));
    w.hook.take();
    (w, a, b)
}

#[test]
fn idle_reports_flags_new_mail_and_expunges_at_once() {
    let (w, mut a, mut b) = pair();
    a.expect("i IDLE", &["+ idling"]);
    b.expect("x STORE 1 +FLAGS (\\Flagged)", &["* 1 FETCH (FLAGS (\\Flagged))", "x OK {}"]);
    // Nothing happens for the idler until the event arrives.
    check(&a.run(), &[]);
    w.deliver_events(&mut [&mut a, &mut b]);
    check(&a.run(), &["* 1 FETCH (FLAGS (\\Flagged \\Recent))"]);
    w.deliver("alice", "INBOX", &simple_message("four"));
    w.deliver_events(&mut [&mut a, &mut b]);
    check(&a.run(), &["* 4 EXISTS", "* 4 RECENT"]);
    // B learns about the delivery with its next command.
    b.expect("y STORE 2 +FLAGS.SILENT (\\Deleted)", &["* 4 EXISTS", "y OK {}"]);
    b.expect("z EXPUNGE", &["* 2 EXPUNGE", "z OK Expunge completed."]);
    w.deliver_events(&mut [&mut a, &mut b]);
    check(&a.run(), &["* 2 EXPUNGE"]);
    a.expect("DONE", &["i OK Idle completed."]);
    a.expect("j FETCH 1:* UID", &["* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 4)", "j OK Fetch completed."]);
}

#[test]
fn new_keyword_from_another_session_announces_flags() {
    let (w, mut a, mut b) = pair();
    b.expect("x STORE 1 +FLAGS ($Junk)", &["* FLAGS {}", "* OK [PERMANENTFLAGS {}", "* 1 FETCH (FLAGS ($Junk))", "x OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    a.expect("a NOOP", &["* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)", "* OK [PERMANENTFLAGS {} $Junk \\*)] Flags permitted.", "* 1 FETCH (FLAGS ($Junk \\Recent))", "a OK NOOP completed."]);
}

#[test]
fn no_expunge_during_fetch_store_search() {
    let (w, mut a, mut b) = pair();
    b.expect("x STORE 2 +FLAGS.SILENT (\\Deleted)", &["x OK {}"]);
    b.expect("y EXPUNGE", &["* 2 EXPUNGE", "y OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    // A still sees 3 messages: numbers stay stable until a command that may expunge.
    a.expect("a FETCH 1:3 (UID FLAGS)", &["* 1 FETCH (UID 1 FLAGS (\\Recent))", "* 2 FETCH (UID 2 FLAGS (\\Recent))", "* 3 FETCH (UID 3 FLAGS (\\Recent))", "a OK Fetch completed."]);
    // Its file is gone: NIL data and OK [EXPUNGEISSUED], as Dovecot answers (RFC 2180 4.1.3).
    a.expect("b FETCH 2 BODY.PEEK[]", &["* 2 FETCH (BODY[] NIL)", "b OK [EXPUNGEISSUED] Some messages were already expunged."]);
    a.expect("c STORE 3 +FLAGS (\\Seen)", &["* 3 FETCH (FLAGS (\\Seen \\Recent))", "c OK Store completed."]);
    a.expect("d SEARCH ALL", &["* SEARCH 1 2 3", "d OK Search completed."]);
    a.expect("e NOOP", &["* 2 EXPUNGE", "e OK NOOP completed."]);
    a.expect("f SEARCH ALL", &["* SEARCH 1 2", "f OK Search completed."]);
}

#[test]
fn uid_commands_may_expunge_like_dovecot() {
    let (w, mut a, mut b) = pair();
    b.expect("x STORE 1 +FLAGS.SILENT (\\Deleted)", &["x OK {}"]);
    b.expect("y EXPUNGE", &["* 1 EXPUNGE", "y OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    a.expect("a UID FETCH 1:* UID", &["* 1 EXPUNGE", "* 1 FETCH (UID 2)", "* 2 FETCH (UID 3)", "a OK Fetch completed."]);
}

#[test]
fn noop_finds_changes_without_events() {
    let (w, mut a, mut b) = pair();
    w.deliver("alice", "INBOX", &simple_message("four"));
    b.expect("x STORE 3 +FLAGS (\\Answered)", &["* 3 FETCH {}", "x OK {}"]);
    a.expect("a NOOP", &["* 3 FETCH (FLAGS (\\Answered \\Recent))", "* 4 EXISTS", "* 4 RECENT", "a OK NOOP completed."]);
    b.expect("b CHECK", &["* 4 EXISTS", "b OK CHECK completed."]);
}

#[test]
fn qresync_sessions_get_vanished() {
    let (w, mut a, mut b) = pair();
    a.expect("e ENABLE QRESYNC", &["* ENABLED QRESYNC", "e OK {}"]);
    a.expect("i IDLE", &["+ idling"]);
    b.expect("x STORE 1:2 +FLAGS.SILENT (\\Deleted)", &["x OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    check(&a.run(), &["* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent) MODSEQ ({}))", "* 2 FETCH (UID 2 FLAGS (\\Deleted \\Recent) MODSEQ ({}))"]);
    b.expect("y EXPUNGE", &["* 1 EXPUNGE", "* 1 EXPUNGE", "y OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    check(&a.run(), &["* VANISHED 1:2"]);
    a.expect("DONE", &["i OK {}"]);
}

#[test]
fn events_for_other_mailboxes_and_users_are_ignored() {
    let (w, mut a, mut b) = pair();
    a.expect("c CREATE Other", &["c OK {}"]);
    w.deliver("alice", "Other", &simple_message("x"));
    w.deliver("bob", "INBOX", &simple_message("y"));
    a.expect("i IDLE", &["+ idling"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    check(&a.run(), &[]);
    a.expect("DONE", &["i OK {}"]);
}

#[test]
fn selected_mailbox_deleted_elsewhere() {
    let (w, mut a, mut b) = pair();
    b.expect("c CREATE Doomed", &["c OK {}"]);
    a.expect("d SELECT Doomed", &["* OK [CLOSED] {}", "* FLAGS {}", "* OK {}", "* 0 EXISTS", "* 0 RECENT", "* OK {}", "* OK {}", "* OK {}", "d OK {}"]);
    b.expect("e DELETE Doomed", &["e OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    a.expect("f NOOP", &["* BYE {}", "f OK NOOP completed."]);
    assert!(a.closed);
}

#[test]
fn hibernate_and_resume_reports_what_happened_meanwhile() {
    use imap::session::{NotHibernatable, Session};
    let (w, mut a, mut b) = pair();
    a.expect("e ENABLE CONDSTORE", &["* ENABLED CONDSTORE", "e OK {}"]);
    // A partial command line travels with the state.
    a.expect("i IDLE", &["+ idling"]);
    let state = a.s.hibernation_state().unwrap();
    assert_eq!(state.idle_tag.as_deref(), Some("i"));
    let view = state.selected.clone().unwrap();
    assert_eq!(view.uids.iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    drop(a);
    // Meanwhile: a flag change, an expunge and a delivery.
    b.expect("x STORE 1 +FLAGS (\\Flagged)", &["* 1 FETCH {}", "x OK {}"]);
    b.expect("y STORE 2 +FLAGS.SILENT (\\Deleted)", &["y OK {}"]);
    b.expect("z EXPUNGE", &["* 2 EXPUNGE", "z OK {}"]);
    w.deliver("alice", "INBOX", &simple_message("four"));
    let mut state = state;
    state.pending_input = b"DO".to_vec();
    let s = Session::resume_hibernated(World::options(), state, w.auth.clone(), w.hooks(), w.start).unwrap();
    let mut a = Client { s, now: w.start, greeting: String::new(), closed: false, events: Vec::new() };
    check(&a.run(), &["* 2 EXPUNGE", "* 1 FETCH (FLAGS (\\Flagged) MODSEQ ({}))", "* 3 EXISTS", "* 1 RECENT"]);
    a.expect("NE", &["i OK Idle completed."]);
    a.expect("j FETCH 1:* UID", &["* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 4)", "j OK {}"]);
    // Not parkable while output is pending or before login.
    let c = w.client();
    assert_eq!(c.s.hibernation_state().unwrap_err(), NotHibernatable::NotAuthenticated);
}

#[test]
fn resume_after_uidvalidity_change_says_bye() {
    use imap::session::Session;
    let (w, a, mut b) = pair();
    b.expect("c CREATE Box", &["c OK {}"]);
    let mut state = a.s.hibernation_state().unwrap();
    if let Some(v) = state.selected.as_mut() {
        v.uidvalidity ^= 1;
    }
    let s = Session::resume_hibernated(World::options(), state, w.auth.clone(), w.hooks(), w.start).unwrap();
    let mut a = Client { s, now: w.start, greeting: String::new(), closed: false, events: Vec::new() };
    check(&a.run(), &["* BYE {}"]);
    assert!(a.closed);
}

#[test]
fn own_changes_coming_back_as_events_cause_no_output() {
    let (w, mut a, mut b) = pair();
    a.expect("x STORE 1 +FLAGS (\\Seen)", &["* 1 FETCH {}", "x OK {}"]);
    w.deliver_events(&mut [&mut a, &mut b]);
    a.expect("i IDLE", &["+ idling"]);
    check(&a.run(), &[]);
    a.expect("DONE", &["i OK Idle completed."]);
    b.expect("y NOOP", &["* 1 FETCH (FLAGS (\\Seen))", "y OK NOOP completed."]);
}

#[test]
fn changes_synced_by_one_session_reach_the_other_with_recent_for_one_only() {
    // Both sessions share one storage mailbox in this process: whichever
    // syncs first consumes the storage's change report; the other must
    // still find the changes by comparing its own view.
    let (w, mut a, mut b) = pair();
    w.deliver("alice", "INBOX", &simple_message("four"));
    b.expect("x NOOP", &["* 4 EXISTS", "* 1 RECENT", "x OK {}"]);
    a.expect("a NOOP", &["* 4 EXISTS", "a OK NOOP completed."]);
    b.expect("y STORE 4 +FLAGS ($Work)", &["* FLAGS {}", "* OK [PERMANENTFLAGS {}", "* 4 FETCH (FLAGS ($Work \\Recent))", "y OK {}"]);
    b.expect("z STORE 1 +FLAGS.SILENT (\\Deleted)", &["z OK {}"]);
    b.expect("e EXPUNGE", &["* 1 EXPUNGE", "e OK {}"]);
    a.expect("b FETCH 4 (FLAGS)", &["* 4 FETCH (FLAGS ())", "b OK Fetch completed."]);
    a.expect("c NOOP", &["* 1 EXPUNGE", "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)", "* OK [PERMANENTFLAGS {} $Work \\*)] Flags permitted.", "* 3 FETCH (FLAGS ($Work))", "c OK NOOP completed."]);
    a.expect("d SEARCH KEYWORD $Work", &["* SEARCH 3", "d OK Search completed."]);
}
