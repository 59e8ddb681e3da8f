//! UNAUTHENTICATE (RFC 8437): back to the not-authenticated state, then a
//! login as another user sees only that user's mail.
mod session_support;

use imap::session::SessionOptions;
use session_support::*;

fn options() -> SessionOptions {
    SessionOptions { allow_unauthenticate: true, ..World::options() }
}

#[test]
fn unauthenticate_then_login_as_another_user() {
    let w = World::new();
    w.deliver("alice", "INBOX", &simple_message("for-alice"));
    let mut c = w.client_with(options());
    assert!(!c.greeting.contains("UNAUTHENTICATE"), "{}", c.greeting);
    c.expect("u0 UNAUTHENTICATE", &["u0 BAD Please log in first."]);
    c.expect("l LOGIN alice secret", &["l OK [CAPABILITY {} UNAUTHENTICATE{}] Logged in"]);
    c.expect("e ENABLE CONDSTORE", &["* ENABLED CONDSTORE", "e OK {}"]);
    c.expect(
        "s SELECT INBOX",
        &["* FLAGS {}", "* OK {}", "* 1 EXISTS", "* 1 RECENT", "* OK {}", "* OK {}", "* OK {}", "* OK [HIGHESTMODSEQ {}", "s OK [READ-WRITE] {}"],
    );
    c.expect("u1 UNAUTHENTICATE", &["u1 OK Unauthenticate completed."]);
    // Nothing of alice's session is left: no mailbox, no login.
    c.expect("f FETCH 1 FLAGS", &["f BAD Please log in first."]);
    c.expect("x SELECT INBOX", &["x BAD Please log in first."]);
    let caps = c.send("c CAPABILITY");
    assert!(caps.contains("AUTH=PLAIN") && !caps.contains("UNAUTHENTICATE"), "{caps}");
    c.expect("l2 LOGIN bob secret", &["l2 OK [CAPABILITY {}] Logged in"]);
    // bob's INBOX (empty), and CONDSTORE (enabled by alice) is off again:
    // MODSEQ enables it implicitly, which announces HIGHESTMODSEQ.
    c.expect(
        "s2 SELECT INBOX",
        &["* FLAGS {}", "* OK {}", "* 0 EXISTS", "* 0 RECENT", "* OK {}", "* OK {}", "* OK {}", "s2 OK [READ-WRITE] {}"],
    );
    c.expect("f2 FETCH 1:* (UID MODSEQ)", &["* OK [HIGHESTMODSEQ 1] Highest", "f2 BAD {}"]);
    c.expect("u2 UNAUTHENTICATE", &["u2 OK Unauthenticate completed."]);
    c.expect("l3 LOGIN alice secret", &["l3 OK {}"]);
    c.expect("st STATUS INBOX (MESSAGES)", &["* STATUS \"INBOX\" (MESSAGES 1)", "st OK {}"]);
}

#[test]
fn not_offered_unless_enabled() {
    let w = World::new();
    let mut c = w.alice();
    let caps = c.send("c CAPABILITY");
    assert!(!caps.contains("UNAUTHENTICATE"), "{caps}");
    c.expect("u UNAUTHENTICATE", &["u BAD Unknown command."]);
    c.expect("n NOOP", &["n OK {}"]);
}
