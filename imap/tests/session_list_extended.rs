//! LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819) as byte scripts.
//!
//! The mailbox tree and the queries are those run against Dovecot 2.3
//! (listescape, separator `/`, `Sent`/`Archive` with special_use) by hand;
//! each expectation is Dovecot's answer in our order (INBOX first, then by
//! name; RFC 5258 leaves the order free) and without the `\Marked` /
//! `\UnMarked` attributes Dovecot adds from its list index (optional in
//! RFC 3501). `("CHILDINFO" ("SUBSCRIBED"))` is RFC 5258's own spelling
//! of Dovecot's `(CHILDINFO ("SUBSCRIBED"))`.
mod session_support;

use session_support::*;

fn tree() -> (World, Client) {
    let w = World::new();
    let mut c = w.alice();
    for name in ["Archive/2024", "Sent", "foo/bar", "Work/Deep/x", "solo"] {
        c.expect(&format!("c CREATE {name}"), &["c OK Create completed."]);
    }
    // Parents without a mailbox of their own (Maildir++ keeps children).
    for name in ["Work/Deep", "Work", "foo"] {
        c.expect(&format!("d DELETE {name}"), &["d OK Delete completed."]);
    }
    for name in ["Archive/2024", "foo/bar", "solo", "Work/Deep/x", "Sent", "Archive"] {
        c.expect(&format!("s SUBSCRIBE {name}"), &["s OK Subscribe completed."]);
    }
    c.expect("a APPEND solo {12+}\r\nSubject: a\r\n", &["a OK [APPENDUID {} 1] Append completed."]);
    (w, c)
}

#[test]
fn selection_options() {
    let (_w, mut c) = tree();
    c.expect("q0 LIST (SUBSCRIBED) \"\" %", &["* LIST (\\Subscribed) \"/\" \"Archive\"", "* LIST (\\Subscribed) \"/\" \"Sent\"", "* LIST (\\Subscribed) \"/\" \"solo\"", "q0 OK List completed."]);
    c.expect(
        "q1 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (CHILDREN)",
        &[
            "* LIST (\\Subscribed \\HasChildren) \"/\" \"Archive\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Sent\"",
            "* LIST (\\NonExistent \\HasChildren) \"/\" \"Work\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\NonExistent \\HasChildren) \"/\" \"foo\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"solo\"",
            "q1 OK List completed.",
        ],
    );
    c.expect("q4 LIST (SPECIAL-USE) \"\" *", &["* LIST (\\Archive) \"/\" \"Archive\"", "* LIST (\\Sent) \"/\" \"Sent\"", "q4 OK List completed."]);
    c.expect(
        "q6 LIST (REMOTE) \"\" %",
        &["* LIST () \"/\" \"INBOX\"", "* LIST () \"/\" \"Archive\"", "* LIST () \"/\" \"Sent\"", "* LIST (\\NonExistent) \"/\" \"Work\"", "* LIST (\\NonExistent) \"/\" \"foo\"", "* LIST () \"/\" \"solo\"", "q6 OK List completed."],
    );
    c.expect("q8 LIST () \"\" Work/*", &["* LIST (\\NonExistent) \"/\" \"Work/Deep\"", "* LIST () \"/\" \"Work/Deep/x\"", "q8 OK List completed."]);
    c.expect(
        "q9 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" Work/% RETURN (CHILDREN)",
        &["* LIST (\\NonExistent \\HasChildren) \"/\" \"Work/Deep\" (\"CHILDINFO\" (\"SUBSCRIBED\"))", "q9 OK List completed."],
    );
    c.expect("q12 LIST (SPECIAL-USE SUBSCRIBED) \"\" *", &["* LIST (\\Subscribed \\Archive) \"/\" \"Archive\"", "* LIST (\\Subscribed \\Sent) \"/\" \"Sent\"", "q12 OK List completed."]);
    // Errors, with Dovecot's meaning.
    c.expect("e1 LIST (RECURSIVEMATCH) \"\" %", &["e1 BAD RECURSIVEMATCH must not be the only selection option."]);
    c.expect("e2 LIST (RECURSIVEMATCH REMOTE) \"\" %", &["e2 BAD RECURSIVEMATCH must not be the only selection option."]);
    c.expect("e3 LIST (BOGUS) \"\" %", &["e3 BAD Unknown LIST selection option BOGUS."]);
    c.expect("e4 LIST \"\" % RETURN (BOGUS)", &["e4 BAD Unknown LIST return option BOGUS."]);
    c.expect("e5 LIST \"\" ()", &["e5 OK List completed."]);
}

#[test]
fn return_options_and_patterns() {
    let (_w, mut c) = tree();
    c.expect(
        "q2 LIST \"\" % RETURN (SUBSCRIBED)",
        &["* LIST () \"/\" \"INBOX\"", "* LIST (\\Subscribed) \"/\" \"Archive\"", "* LIST (\\Subscribed) \"/\" \"Sent\"", "* LIST (\\NonExistent) \"/\" \"Work\"", "* LIST (\\NonExistent) \"/\" \"foo\"", "* LIST (\\Subscribed) \"/\" \"solo\"", "q2 OK List completed."],
    );
    c.expect(
        "q3 LIST \"\" (solo foo/* Sent) RETURN (CHILDREN)",
        &["* LIST (\\HasNoChildren) \"/\" \"Sent\"", "* LIST (\\HasNoChildren) \"/\" \"foo/bar\"", "* LIST (\\HasNoChildren) \"/\" \"solo\"", "q3 OK List completed."],
    );
    c.expect(
        "q5 LIST \"\" * RETURN (SPECIAL-USE)",
        &[
            "* LIST () \"/\" \"INBOX\"",
            "* LIST (\\Archive) \"/\" \"Archive\"",
            "* LIST () \"/\" \"Archive/2024\"",
            "* LIST (\\Sent) \"/\" \"Sent\"",
            "* LIST (\\NonExistent) \"/\" \"Work\"",
            "* LIST (\\NonExistent) \"/\" \"Work/Deep\"",
            "* LIST () \"/\" \"Work/Deep/x\"",
            "* LIST (\\NonExistent) \"/\" \"foo\"",
            "* LIST () \"/\" \"foo/bar\"",
            "* LIST () \"/\" \"solo\"",
            "q5 OK List completed.",
        ],
    );
    c.expect(
        "q11 LIST \"\" * RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)",
        &[
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\Subscribed \\HasChildren \\Archive) \"/\" \"Archive\"",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Archive/2024\"",
            "* LIST (\\Subscribed \\HasNoChildren \\Sent) \"/\" \"Sent\"",
            "* LIST (\\NonExistent \\HasChildren) \"/\" \"Work\"",
            "* LIST (\\NonExistent \\HasChildren) \"/\" \"Work/Deep\"",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Work/Deep/x\"",
            "* LIST (\\NonExistent \\HasChildren) \"/\" \"foo\"",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"foo/bar\"",
            "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"solo\"",
            "q11 OK List completed.",
        ],
    );
    // The plain form is unchanged (CHILDREN and SPECIAL-USE always).
    c.expect("p LIST \"\" Sent", &["* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"", "p OK List completed."]);
}

#[test]
fn list_status() {
    let (_w, mut c) = tree();
    c.expect(
        "q7 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))",
        &[
            "* LIST () \"/\" \"INBOX\"",
            "* STATUS \"INBOX\" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)",
            "* LIST () \"/\" \"Archive\"",
            "* STATUS \"Archive\" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)",
            "* LIST () \"/\" \"Sent\"",
            "* STATUS \"Sent\" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)",
            "* LIST (\\NonExistent) \"/\" \"Work\"",
            "* LIST (\\NonExistent) \"/\" \"foo\"",
            "* LIST () \"/\" \"solo\"",
            "* STATUS \"solo\" (MESSAGES 1 UNSEEN 1 UIDNEXT 2)",
            "q7 OK List completed.",
        ],
    );
    c.expect(
        "q10 LIST (SUBSCRIBED) \"\" * RETURN (STATUS (MESSAGES))",
        &[
            "* LIST (\\Subscribed) \"/\" \"Archive\"",
            "* STATUS \"Archive\" (MESSAGES 0)",
            "* LIST (\\Subscribed) \"/\" \"Archive/2024\"",
            "* STATUS \"Archive/2024\" (MESSAGES 0)",
            "* LIST (\\Subscribed) \"/\" \"Sent\"",
            "* STATUS \"Sent\" (MESSAGES 0)",
            "* LIST (\\Subscribed) \"/\" \"Work/Deep/x\"",
            "* STATUS \"Work/Deep/x\" (MESSAGES 0)",
            "* LIST (\\Subscribed) \"/\" \"foo/bar\"",
            "* STATUS \"foo/bar\" (MESSAGES 0)",
            "* LIST (\\Subscribed) \"/\" \"solo\"",
            "* STATUS \"solo\" (MESSAGES 1)",
            "q10 OK List completed.",
        ],
    );
    // HIGHESTMODSEQ enables CONDSTORE, as STATUS does.
    c.expect("h LIST \"\" solo RETURN (STATUS (HIGHESTMODSEQ))", &["* LIST () \"/\" \"solo\"", "* STATUS \"solo\" (HIGHESTMODSEQ {})", "h OK List completed."]);
    c.expect("u LIST \"\" % RETURN (STATUS (DELETED))", &["u BAD Unknown STATUS item DELETED in LIST RETURN."]);
}

#[test]
fn subscribed_names_without_a_mailbox_and_capability() {
    let (_w, mut c) = tree();
    // RFC 5258 §3: a subscribed name whose mailbox is gone is \NonExistent
    // (Dovecot 2.3 drops such subscriptions, so this one is RFC-only).
    c.expect("a SUBSCRIBE gone/child", &["a OK Subscribe completed."]);
    c.expect("b LIST (SUBSCRIBED) \"\" gone*", &["* LIST (\\Subscribed \\NonExistent) \"/\" \"gone/child\"", "b OK List completed."]);
    c.expect(
        "c LIST (SUBSCRIBED RECURSIVEMATCH) \"\" gone",
        &["* LIST (\\NonExistent) \"/\" \"gone\" (\"CHILDINFO\" (\"SUBSCRIBED\"))", "c OK List completed."],
    );
    c.expect("d LIST \"\" gone*", &["d OK List completed."]);
    let caps = c.send("e CAPABILITY");
    assert!(caps.contains(" LIST-EXTENDED LIST-STATUS"), "{caps}");
    // Before login the extended form is not parsed: BAD like any LIST.
    let w = World::new();
    let mut pre = w.client();
    pre.expect("f LIST (SUBSCRIBED) \"\" *", &["f BAD {}"]);
}

#[test]
fn plain_list_marks_parents_without_a_mailbox_noselect() {
    let (_w, mut c) = tree();
    // Dovecot 2.3: `* LIST (\Noselect \HasChildren) "/" Work/Deep`.
    c.expect("a LIST \"\" Work/%", &["* LIST (\\Noselect \\HasChildren) \"/\" \"Work/Deep\"", "a OK List completed."]);
    c.expect("b LIST \"\" foo*", &["* LIST (\\Noselect \\HasChildren) \"/\" \"foo\"", "* LIST (\\HasNoChildren) \"/\" \"foo/bar\"", "b OK List completed."]);
    c.expect("c SELECT foo", &["c NO [NONEXISTENT] {}"]);
}
