//! Pre-login stage and malformed input, as byte scripts.
mod session_support;

use std::time::Duration;

use imap::session::{HandOver, Session, SessionEvent, SessionOptions};
use session_support::*;

#[test]
fn greeting_capability_noop_id_logout() {
    let w = World::new();
    let mut c = w.client();
    assert!(glob("* OK [CAPABILITY IMAP4rev1 {}AUTH=PLAIN{}] dormouse ready.\r\n", &c.greeting), "{}", c.greeting);
    c.expect("a CAPABILITY", &["* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN", "a OK Capability completed."]);
    c.expect("b NOOP", &["b OK NOOP completed."]);
    c.expect("c ID (\"name\" \"test\")", &["* ID (\"name\" \"dormouse\")", "c OK ID completed."]);
    c.expect("c2 ID NIL", &["* ID {}", "c2 OK ID completed."]);
    c.expect("d LOGOUT", &["* BYE Logging out.", "d OK Logout completed."]);
    assert!(c.closed);
}

#[test]
fn login_success_failure_and_lockout() {
    let w = World::new();
    let mut c = w.client();
    c.expect("a LOGIN alice wrong", &["a NO [AUTHENTICATIONFAILED] Authentication failed."]);
    c.expect("b LOGIN nobody secret", &["b NO [AUTHENTICATIONFAILED] Authentication failed."]);
    c.expect("c LOGIN \"alice\" {6+}\r\nsecret", &["c OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE QRESYNC ESEARCH SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES LIST-EXTENDED LIST-STATUS MULTIAPPEND NOTIFY COMPRESS=DEFLATE WITHIN CREATE-SPECIAL-USE SEARCHRES] Logged in"]);
    assert_eq!(c.s.user(), Some("alice"));
    c.expect("d LOGIN alice secret", &["d BAD Already logged in."]);
    // A limit refusal is not a failed attempt.
    let mut c = w.client();
    for t in ["p", "q", "r", "s"] {
        c.expect(&format!("{t} LOGIN busy secret"), &["{} NO [LIMIT] Too many sessions of this user (limit 2)."]);
    }
    assert!(!c.closed);
    let mut c = w.client();
    for t in ["x", "y"] {
        c.expect(&format!("{t} LOGIN alice bad"), &["{} NO [AUTHENTICATIONFAILED] Authentication failed."]);
    }
    c.expect("z LOGIN alice bad", &["z NO [AUTHENTICATIONFAILED] Authentication failed.", "* BYE Too many invalid authentication attempts."]);
    assert!(c.closed);
}

#[test]
fn logindisabled_without_tls_and_starttls() {
    let w = World::new();
    let opts = SessionOptions { starttls_available: true, ..SessionOptions::default() };
    let mut c = w.client_with(opts);
    assert!(c.greeting.contains("STARTTLS") && c.greeting.contains("LOGINDISABLED"));
    c.expect("a LOGIN alice secret", &["a NO [PRIVACYREQUIRED] {}"]);
    c.expect("a2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", &["a2 NO [PRIVACYREQUIRED] {}"]);
    // Pipelined command after STARTTLS must be dropped (injection defence).
    let out = c.raw(b"b STARTTLS\r\nc LOGIN alice secret\r\n");
    check(&out, &["b OK Begin TLS negotiation now."]);
    assert_eq!(c.events, vec![SessionEvent::StartTls]);
    c.s.tls_started();
    c.expect("d CAPABILITY", &["* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN", "d OK {}"]);
    c.expect("e STARTTLS", &["e BAD TLS is already active."]);
    c.expect("f LOGIN alice secret", &["f OK [CAPABILITY {}] Logged in"]);
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let w = World::new();
    let mut c = w.client();
    // "\0alice\0secret"
    c.expect("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", &["a OK [CAPABILITY {}] Logged in"]);
    let mut c = w.client();
    c.expect("b AUTHENTICATE PLAIN", &["+ "]);
    c.expect("YWxpY2UAYWxpY2UAc2VjcmV0", &["b OK [CAPABILITY {}] Logged in"]);
    let mut c = w.client();
    c.expect("c AUTHENTICATE PLAIN", &["+ "]);
    c.expect("*", &["c BAD Authentication aborted by client."]);
    c.expect("d AUTHENTICATE PLAIN", &["+ "]);
    c.expect("!!notbase64", &["d BAD Invalid base64 in SASL response."]);
    c.expect("e AUTHENTICATE PLAIN AGFsaWNlAHdyb25n", &["e NO [AUTHENTICATIONFAILED] {}"]);
    c.expect("f AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==", &["f NO [AUTHORIZATIONFAILED] {}"]);
    c.expect("g AUTHENTICATE CRAM-MD5", &["g NO Unsupported authentication mechanism."]);
    c.expect("h AUTHENTICATE PLAIN AGFsaWNl", &["h BAD Invalid SASL PLAIN response."]);
}

#[test]
fn commands_in_wrong_state() {
    let w = World::new();
    let mut c = w.client();
    c.expect("a SELECT INBOX", &["a BAD Please log in first."]);
    c.expect("b FETCH 1 FLAGS", &["b BAD Please log in first."]);
    c.expect("b2 IDLE", &["b2 BAD Please log in first."]);
    let mut c = w.alice();
    c.expect("c FETCH 1 FLAGS", &["c BAD FETCH needs a selected mailbox."]);
    c.expect("d EXPUNGE", &["d BAD EXPUNGE needs a selected mailbox."]);
    c.expect("e CLOSE", &["e BAD CLOSE needs a selected mailbox."]);
    c.expect("f STARTTLS", &["f BAD STARTTLS is only allowed before login."]);
}

#[test]
fn malformed_input_never_breaks_the_session() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a FOO bar", &["a BAD Unknown command."]);
    c.expect("b FETCH", &["b BAD Error in IMAP command FETCH: invalid arguments."]);
    c.expect("c SELECT (INBOX", &["c BAD Error in IMAP command SELECT: invalid arguments."]);
    c.expect("d LIST \"\" ((", &["d BAD {}"]);
    c.expect("e STATUS INBOX (MESSAGES", &["e BAD {}"]);
    c.expect("*", &["* BAD Invalid tag or command syntax."]);
    c.expect("+ NOOP", &["* BAD Invalid tag or command syntax."]);
    c.expect("tagonly", &["* BAD Invalid tag or command syntax."]);
    c.expect("f", &["* BAD {}"]);
    check(&c.raw(b"g SELECT \xff\xfe\r\n"), &["g {} {}"]);
    check(&c.raw(b"h NOOP\x00\r\n"), &["h BAD {}"]);
    check(&c.raw(b"i LOGIN a\x00b c\r\n"), &["i BAD {}"]);
    c.expect("j FETCH 99999999999999999999 FLAGS", &["j BAD {}"]);
    c.expect("k SELECT INBOX", &["* FLAGS {}", "* OK [PERMANENTFLAGS {}", "* 0 EXISTS", "* 0 RECENT", "* OK [UIDVALIDITY {}", "* OK [UIDNEXT 1] {}", "* OK [HIGHESTMODSEQ {}", "k OK [READ-WRITE] Select completed."]);
    c.expect("l FETCH 4294967295 FLAGS", &["l BAD Invalid message sequence number."]);
    c.expect("m FETCH 1:* FLAGS", &["m BAD Invalid message sequence number."]);
    c.expect("n UID FETCH 1:* FLAGS", &["n OK Fetch completed."]);
    c.expect("o STORE 1 +FLAGS (\\Recent)", &["o BAD {}"]);
    c.expect("   ", &[]);
    c.expect("p NOOP", &["p OK NOOP completed."]);
}

#[test]
fn overlong_lines_and_literals() {
    let w = World::new();
    let mut opts = World::options();
    opts.limits.max_line = 100;
    opts.limits.max_other_literal = 10;
    opts.limits.max_append_literal = 50;
    let mut c = w.client_with(opts);
    c.expect("l LOGIN alice secret", &["l OK {}"]);
    let long = format!("a NOOP {}", "x".repeat(300));
    c.expect(&long, &["a BAD Command line too long (max 100 bytes)."]);
    c.expect("b NOOP", &["b OK NOOP completed."]);
    // Synchronizing literal over the limit: refused before the data.
    c.expect("c LOGIN {11}", &["c BAD Literal too large (max 10 bytes)."]);
    c.expect("d APPEND INBOX {51}", &["d NO [TOOBIG] Message too large (max 50 bytes)."]);
    // Non-synchronizing literal over the limit: data is skipped.
    let out = c.raw(b"e APPEND INBOX {60+}\r\n012345678901234567890123456789012345678901234567890123456789\r\nf NOOP\r\n");
    check(&out, &["e NO [TOOBIG] Message too large (max 50 bytes).", "f OK NOOP completed."]);
    // Synchronizing literal within limits gets a continuation.
    c.expect("g APPEND INBOX {13}", &["+ OK"]);
    c.expect("Subject: x\r\n", &["g OK [APPENDUID {} 1] Append completed."]);
}

#[test]
fn idle_requires_done_and_times_out() {
    let w = World::new();
    let mut c = w.alice();
    c.expect("a IDLE", &["+ idling"]);
    assert!(c.s.is_idle());
    c.expect("DONE", &["a OK Idle completed."]);
    c.expect("b IDLE", &["+ idling"]);
    c.expect("NOOP", &["b BAD Expected DONE."]);
    c.expect("c IDLE", &["+ idling"]);
    c.advance(Duration::from_secs(31 * 60));
    check(&c.run(), &["* BYE Disconnected for inactivity."]);
    assert!(c.closed);
}

#[test]
fn preauth_timeout() {
    let w = World::new();
    let mut c = w.client();
    c.advance(Duration::from_secs(61));
    check(&c.run(), &["* BYE Disconnected for inactivity."]);
    assert!(c.closed);
}

#[test]
fn master_mode_hands_over_with_pipelined_input() {
    let w = World::new();
    let opts = SessionOptions { hand_over_on_auth: true, ..World::options() };
    let mut c = w.client_with(opts);
    let out = c.raw(b"a ENABLE QRESYNC\r\n");
    check(&out, &["a BAD Please log in first."]);
    let out = c.raw(b"b LOGIN alice secret\r\nc SELECT INBOX\r\n");
    check(&out, &["b OK [CAPABILITY {}] Logged in"]);
    assert!(c.closed, "master session ends after the hand-over");
    let Some(SessionEvent::Authenticated(h)) = c.events.pop() else { panic!("no hand-over: {:?}", c.events) };
    assert_eq!(h.user, "alice");
    assert_eq!(h.pending_input, b"c SELECT INBOX\r\n");
    let bytes = h.encode();
    let h = HandOver::decode(&bytes).unwrap();
    let s = Session::resume(World::options(), h, w.auth.clone(), w.hooks(), w.start).unwrap();
    let mut worker = Client { s, now: w.start, greeting: String::new(), closed: false, events: Vec::new() };
    let out = worker.run();
    assert!(glob("{}c OK [READ-WRITE] Select completed.\r\n", &out), "{out}");
    assert_eq!(worker.s.selected_mailbox(), Some("INBOX"));
}

#[test]
fn pipelined_commands_answer_in_order() {
    let w = World::new();
    let mut c = w.client();
    let out = c.raw(b"a NOOP\r\nb LOGIN alice secret\r\nc NAMESPACE\r\n");
    check(&out, &["a OK NOOP completed.", "b OK {}", "* NAMESPACE ((\"\" \"/\")) NIL NIL", "c OK Namespace completed."]);
    // Bytes split at every position still frame correctly.
    let mut c = w.client();
    let mut out = String::new();
    for b in b"d LOGIN {5}\r\nalice secret\r\n" {
        out.push_str(&c.raw(&[*b]));
    }
    check(&out, &["+ OK", "d OK {}"]);
}

/// Master mode with deferred checks: the session asks the driver to verify,
/// processes no input meanwhile, then finishes the command with the answer.
#[test]
fn deferred_login_waits_for_the_driver() {
    use imap::session::{AuthFailure, AuthenticatedUser};
    let w = World::new();
    let opts = SessionOptions { hand_over_on_auth: true, defer_auth: true, ..World::options() };
    let mut c = w.client_with(opts);
    let out = c.raw(b"a LOGIN alice wrong\r\nb NOOP\r\n");
    assert_eq!(out, "", "nothing answered before the check");
    let Some(SessionEvent::VerifyLogin(req)) = c.events.pop() else { panic!("no request: {:?}", c.events) };
    assert_eq!((req.user.as_str(), req.password.as_str()), ("alice", "wrong"));
    assert!(!format!("{req:?}").contains("wrong"), "Debug hides the password");
    c.s.login_verified(Err(AuthFailure::InvalidCredentials));
    let out = c.run();
    check(&out, &["a NO [AUTHENTICATIONFAILED] Authentication failed.", "b OK NOOP completed."]);
    c.raw(b"d LOGIN alice secret\r\ne SELECT INBOX\r\n");
    assert!(matches!(c.events.pop(), Some(SessionEvent::VerifyLogin(_))));
    c.s.login_verified(Ok(AuthenticatedUser { name: "alice".into(), maildir: "/nonexistent".into() }));
    let out = c.run();
    check(&out, &["d OK [CAPABILITY {}] Logged in"]);
    let Some(SessionEvent::Authenticated(h)) = c.events.pop() else { panic!("no hand-over: {:?}", c.events) };
    assert_eq!(h.pending_input, b"e SELECT INBOX\r\n");
}
