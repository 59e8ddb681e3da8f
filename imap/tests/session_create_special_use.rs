//! CREATE-SPECIAL-USE (RFC 6154 §3): the attribute given at CREATE is kept
//! with the mailbox and shown by LIST.
mod session_support;

use session_support::*;

#[test]
fn create_with_use_is_listed_and_kept() {
    let w = World::new();
    let mut c = w.alice();
    let caps = c.send("c CAPABILITY");
    assert!(caps.contains(" CREATE-SPECIAL-USE"), "{caps}");
    c.expect("c1 CREATE Outgoing (USE (\\Sent))", &["c1 OK Create completed."]);
    c.expect("l1 LIST \"\" Outgoing", &["* LIST (\\HasNoChildren \\Sent) \"/\" \"Outgoing\"", "l1 OK List completed."]);
    // Attribute names are case-insensitive; a literal name works too.
    c.expect("c2 CREATE {7+}\r\nOld/Bin (USE (\\trash))", &["c2 OK Create completed."]);
    c.expect(
        "l2 LIST (SPECIAL-USE) \"\" *",
        &["* LIST (\\Trash) \"/\" \"Old/Bin\"", "* LIST (\\Sent) \"/\" \"Outgoing\"", "l2 OK List completed."],
    );
    // The attribute follows a rename.
    c.expect("r RENAME Outgoing Posted", &["r OK {}"]);
    c.expect("l3 LIST \"\" Posted", &["* LIST (\\HasNoChildren \\Sent) \"/\" \"Posted\"", "l3 OK List completed."]);
    // An empty USE list is a plain CREATE.
    c.expect("c3 CREATE Plain (USE ())", &["c3 OK Create completed."]);
    c.expect("l4 LIST \"\" Plain", &["* LIST (\\HasNoChildren) \"/\" \"Plain\"", "l4 OK List completed."]);
    // Refusals: unknown attribute, several, existing mailbox, other parameters.
    c.expect("n1 CREATE X (USE (\\Bogus))", &["n1 NO [USEATTR] Unknown special-use attribute."]);
    c.expect("n2 CREATE X (USE (\\Sent \\Drafts))", &["n2 NO [USEATTR] Only one special-use attribute per mailbox."]);
    c.expect("n3 CREATE Posted (USE (\\Junk))", &["n3 NO [ALREADYEXISTS] {}"]);
    c.expect("n4 CREATE INBOX (USE (\\Junk))", &["n4 NO [ALREADYEXISTS] {}"]);
    c.expect("n5 LIST \"\" X", &["n5 OK List completed."]);
    c.expect("b1 CREATE X (BOGUS)", &["b1 BAD {}"]);
    c.expect("b2 CREATE (USE (\\Sent))", &["b2 BAD {}"]);
    // A new session sees the stored attributes.
    let mut c2 = w.alice();
    c2.expect("l5 LIST \"\" Posted", &["* LIST (\\HasNoChildren \\Sent) \"/\" \"Posted\"", "l5 OK List completed."]);
}

#[test]
fn create_with_use_needs_login() {
    let w = World::new();
    let mut c = w.client();
    c.expect("c CREATE X (USE (\\Sent))", &["c BAD Please log in first."]);
}
