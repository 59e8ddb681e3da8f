//! NOTIFY (RFC 5465) as byte scripts: NOTIFY SET / NONE, the events of
//! other mailboxes (STATUS, LIST for MailboxName and SubscriptionChange),
//! the selected mailbox with fetch attributes, notifications outside IDLE,
//! the NOTIFY state across hibernation, and the error answers.
mod session_support;

use session_support::*;

#[test]
fn other_mailboxes_get_status_and_list_outside_idle() {
    let w = World::new();
    let mut c = w.alice();
    let mut other = w.alice();
    c.expect("c CREATE Other", &["c OK Create completed."]);
    assert!(c.send("s SELECT INBOX").contains("s OK [READ-WRITE]"));
    w.hook.take();
    c.expect(
        "n NOTIFY SET STATUS (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
        &["* STATUS \"Other\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY {})", "n OK NOTIFY completed."],
    );
    // A delivery to another mailbox: a STATUS, at once (no IDLE, no command).
    w.deliver("alice", "Other", &simple_message("one"));
    w.deliver_events(&mut [&mut c]);
    check(&c.run(), &["* STATUS \"Other\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]);
    // Mailbox and subscription changes made by another session.
    other.expect("x CREATE Fresh", &["x OK Create completed."]);
    other.expect("y SUBSCRIBE Fresh", &["y OK Subscribe completed."]);
    other.expect("z RENAME Fresh Renamed", &["z OK Rename completed."]);
    other.expect("d DELETE Renamed", &["d OK Delete completed."]);
    w.deliver_events(&mut [&mut c]);
    check(
        &c.run(),
        &[
            "* LIST () \"/\" \"Fresh\"",
            "* LIST (\\Subscribed) \"/\" \"Fresh\"",
            "* LIST () \"/\" \"Renamed\" (\"OLDNAME\" (\"Fresh\"))",
            "* LIST (\\NonExistent) \"/\" \"Renamed\"",
        ],
    );
    // The selected mailbox with `selected`: EXISTS between commands too.
    w.deliver("alice", "INBOX", &simple_message("two"));
    w.deliver_events(&mut [&mut c]);
    check(&c.run(), &["* 1 EXISTS", "* 1 RECENT"]);
    // NOTIFY NONE: nothing more.
    c.expect("o NOTIFY NONE", &["o OK NOTIFY completed."]);
    w.deliver("alice", "Other", &simple_message("three"));
    w.deliver_events(&mut [&mut c]);
    assert_eq!(c.run(), "");
    c.expect("p NOOP", &["p OK NOOP completed."]);
}

#[test]
fn filters_choose_mailboxes_and_events() {
    let w = World::new();
    let mut c = w.alice();
    for name in ["Lists/rust", "Lists/go", "Quiet", "Sub"] {
        c.expect(&format!("c CREATE {name}"), &["c OK Create completed."]);
    }
    c.expect("s SUBSCRIBE Sub", &["s OK Subscribe completed."]);
    w.hook.take();
    c.expect(
        "n NOTIFY SET (mailboxes Quiet NONE) (subtree Lists (MessageNew MessageExpunge)) (subscribed (MessageNew MessageExpunge FlagChange)) (inboxes (MessageNew MessageExpunge))",
        &["n OK NOTIFY completed."],
    );
    for mb in ["Quiet", "Lists/rust", "Sub", "INBOX"] {
        w.deliver("alice", mb, &simple_message(mb));
    }
    w.deliver_events(&mut [&mut c]);
    check(
        &c.run(),
        &[
            "* STATUS \"Lists/rust\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)",
            "* STATUS \"Sub\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)",
            "* STATUS \"INBOX\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)",
        ],
    );
    // FlagChange only where asked for; with CONDSTORE the STATUS has HIGHESTMODSEQ.
    c.expect("e ENABLE CONDSTORE", &["* ENABLED CONDSTORE", "e OK Enabled."]);
    assert!(c.send("x SELECT Sub").contains("x OK [READ-WRITE]"));
    c.expect("f STORE 1 +FLAGS.SILENT (\\Seen)", &["f OK Store completed."]);
    c.expect("u UNSELECT", &["u OK Unselect completed."]);
    w.deliver_events(&mut [&mut c]);
    check(&c.run(), &["* STATUS \"Sub\" (MESSAGES 1 UIDNEXT 2 UNSEEN 0 HIGHESTMODSEQ {})"]);
}

#[test]
fn message_new_fetch_attributes_for_the_selected_mailbox() {
    let w = World::new();
    let mut c = w.alice();
    assert!(c.send("s SELECT INBOX").contains("s OK [READ-WRITE]"));
    c.expect("n NOTIFY SET (selected (MessageNew (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))", &["n OK NOTIFY completed."]);
    w.deliver("alice", "INBOX", &simple_message("hello"));
    w.deliver_events(&mut [&mut c]);
    let out = c.run();
    assert!(out.starts_with("* 1 EXISTS\r\n* 1 RECENT\r\n* 1 FETCH (UID 1 FLAGS (\\Recent) BODY[HEADER.FIELDS (SUBJECT)] {"), "{out}");
    assert!(out.contains("Subject: hello"), "{out}");
    // Such a session stays in the worker (only a worker renders FETCH).
    assert!(c.s.hibernation_state().is_err());
}

#[test]
fn errors_are_bad_or_badevent() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a NOTIFY SET (personal (AnnotationChange))", &["a NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Event annotationchange is not supported."]);
    c.expect("b NOTIFY SET (personal (MessageNew))", &["b BAD MessageNew and MessageExpunge must be given together, and FlagChange needs both."]);
    c.expect("c NOTIFY SET (selected (MailboxName))", &["c BAD Only message events can be asked for the selected mailbox."]);
    c.expect("d NOTIFY BOGUS", &["d BAD NOTIFY needs NONE or SET."]);
    c.expect("e NOTIFY SET (everywhere (MessageNew MessageExpunge))", &["e BAD Unknown NOTIFY filter everywhere."]);
    let caps = c.send("f CAPABILITY");
    assert!(caps.contains(" NOTIFY"), "{caps}");
}

#[test]
fn notify_state_survives_hibernation() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("c CREATE Other", &["c OK Create completed."]);
    c.expect("n NOTIFY SET (personal (MessageNew MessageExpunge))", &["n OK NOTIFY completed."]);
    w.hook.take();
    let state = c.s.hibernation_state().unwrap();
    assert!(state.notify.is_some());
    let s = imap::session::Session::resume_hibernated(World::options(), state, w.auth.clone(), w.hooks(), w.start).unwrap();
    let mut c = Client { s, now: w.start, greeting: String::new(), closed: false, events: Vec::new() };
    w.deliver("alice", "Other", &simple_message("x"));
    w.deliver_events(&mut [&mut c]);
    check(&c.run(), &["* STATUS \"Other\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"]);
}
