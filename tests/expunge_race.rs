//! FETCH, COPY and MOVE over messages another session expunged meanwhile
//! (#13), against a real `dormouse serve`, answered the way Dovecot 2.3
//! answers them (checked with `/usr/sbin/dovecot`):
//! - FETCH sends every message it still has, a FETCH with NIL data for each
//!   vanished one, and `OK [EXPUNGEISSUED] Some messages were already expunged.`;
//! - COPY / MOVE copy nothing, report the expunges and answer
//!   `NO [EXPUNGEISSUED] Some of the requested messages no longer exist.`;
//!   the client's retry then succeeds.
//!
//! Never a plain NO, BAD or a server error in the log.

mod imap_support;

use std::time::{Duration, Instant};

use imap_support::{tail, Conn, Server, ServerOptions};

fn login(server: &Server) -> Conn {
    let mut c = Conn::open(server.imap);
    let r = c.cmd("l", "LOGIN alice secret-a");
    assert!(r.last().unwrap().starts_with("l OK"), "{r:?}");
    c
}

fn append(c: &mut Conn, n: u32) {
    let msg = format!("Message-ID: <m{n}@example.org>\r\nSubject: m{n}\r\n\r\nbody of message {n}\r\n");
    c.send(format!("a APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(format!("{msg}\r\n").as_bytes());
    let r = c.until_tagged("a");
    assert!(r.last().unwrap().starts_with("a OK"), "{r:?}");
}

fn last(r: &[String]) -> &str {
    r.last().map(String::as_str).unwrap_or("")
}

fn count_fetches_with_body(r: &[String]) -> usize {
    r.iter().filter(|l| l.starts_with("* ") && l.contains(" FETCH (") && l.contains("BODY[] {")).count()
}

fn messages(c: &mut Conn, mailbox: &str) -> u32 {
    let r = c.cmd("st", &format!("STATUS {mailbox} (MESSAGES)"));
    let line = r.iter().find(|l| l.starts_with("* STATUS")).unwrap();
    line.split("MESSAGES ").nth(1).unwrap().trim_end_matches(|ch: char| !ch.is_ascii_digit()).parse().unwrap()
}

/// Expunges message `seq` of INBOX in session `b`.
fn expunge_seq(b: &mut Conn, seq: u32) {
    let r = b.cmd("d", &format!("STORE {seq} +FLAGS.SILENT (\\Deleted)"));
    assert!(last(&r).starts_with("d OK"), "{r:?}");
    let r = b.cmd("e", "EXPUNGE");
    assert!(last(&r).starts_with("e OK"), "{r:?}");
}

#[test]
fn fetch_copy_move_over_messages_expunged_by_another_session() {
    let server = Server::start(ServerOptions::default());
    let mut a = login(&server);
    let mut b = login(&server);
    for n in 0..6 {
        append(&mut b, n);
    }
    assert!(last(&a.cmd("c1", "CREATE Copies")).starts_with("c1 OK"));
    assert!(last(&a.cmd("c2", "CREATE Moved")).starts_with("c2 OK"));
    assert!(last(&a.cmd("s", "SELECT INBOX")).starts_with("s OK"));
    assert!(last(&b.cmd("s", "SELECT INBOX")).starts_with("s OK"));

    // FETCH: message 3 is gone; the other five arrive, 3 as NIL, OK [EXPUNGEISSUED].
    expunge_seq(&mut b, 3);
    let r = a.cmd("f", "FETCH 1:* (UID BODY[])");
    assert!(last(&r).starts_with("f OK [EXPUNGEISSUED]"), "{r:?}");
    assert_eq!(count_fetches_with_body(&r), 5, "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("* 3 FETCH (UID 3 BODY[] NIL)")), "{r:?}");
    assert!(!r.iter().any(|l| l.ends_with(" EXPUNGE\r\n")), "no EXPUNGE during FETCH: {r:?}");
    let r = a.cmd("n", "NOOP");
    assert!(r.iter().any(|l| l == "* 3 EXPUNGE\r\n"), "{r:?}");

    // COPY: nothing copied, the expunge is reported, NO [EXPUNGEISSUED]; the retry copies the rest.
    expunge_seq(&mut b, 2);
    let r = a.cmd("c", "UID COPY 1:* Copies");
    assert!(last(&r).starts_with("c NO [EXPUNGEISSUED]"), "{r:?}");
    assert!(r.iter().any(|l| l == "* 2 EXPUNGE\r\n"), "{r:?}");
    assert_eq!(messages(&mut a, "Copies"), 0, "a refused COPY copies nothing");
    let r = a.cmd("c", "UID COPY 1:* Copies");
    assert!(last(&r).starts_with("c OK [COPYUID "), "{r:?}");
    assert_eq!(messages(&mut a, "Copies"), 4);

    // Non-UID COPY: the same (EXPUNGE may be sent during COPY).
    expunge_seq(&mut b, 4);
    let r = a.cmd("c", "COPY 1:* Copies");
    assert!(last(&r).starts_with("c NO [EXPUNGEISSUED]"), "{r:?}");
    assert!(r.iter().any(|l| l == "* 4 EXPUNGE\r\n"), "{r:?}");
    assert_eq!(messages(&mut a, "Copies"), 4);

    // MOVE: nothing moved, NO [EXPUNGEISSUED]; the retry moves the rest.
    append(&mut b, 100);
    a.cmd("n", "NOOP");
    expunge_seq(&mut b, 1);
    let r = a.cmd("m", "UID MOVE 1:* Moved");
    assert!(last(&r).starts_with("m NO [EXPUNGEISSUED]"), "{r:?}");
    assert_eq!(messages(&mut a, "Moved"), 0, "a refused MOVE moves nothing");
    let left = messages(&mut a, "INBOX");
    let r = a.cmd("m", "UID MOVE 1:* Moved");
    assert!(last(&r).starts_with("m OK"), "{r:?}");
    assert_eq!(messages(&mut a, "Moved"), left);
    assert_eq!(messages(&mut a, "INBOX"), 0);

    let log = server.log_text();
    assert!(!log.contains(" ERROR ") && !log.contains(" WARN "), "{}", tail(&log, 30));
}

/// One session FETCHes `1:* BODY[]` in a loop while another expunges and
/// appends: every FETCH answers OK (with or without [EXPUNGEISSUED]).
#[test]
fn fetch_loop_while_another_session_expunges_never_fails() {
    let server = Server::start(ServerOptions::default());
    let mut a = login(&server);
    let mut b = login(&server);
    for n in 0..30 {
        append(&mut b, n);
    }
    assert!(last(&a.cmd("s", "SELECT INBOX")).starts_with("s OK"));
    assert!(last(&b.cmd("s", "SELECT INBOX")).starts_with("s OK"));
    let expunger = std::thread::spawn(move || {
        for n in 0..40u32 {
            expunge_seq(&mut b, 1 + n % 5);
            append(&mut b, 1000 + n);
        }
    });
    let (mut rounds, mut issued) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expunger.is_finished() && Instant::now() < deadline {
        let r = a.cmd("f", "FETCH 1:* BODY[]");
        let t = last(&r);
        assert!(t.starts_with("f OK"), "{t}");
        if t.starts_with("f OK [EXPUNGEISSUED]") {
            issued += 1;
        }
        let r = a.cmd("n", "NOOP");
        assert!(last(&r).starts_with("n OK"), "{r:?}");
        rounds += 1;
    }
    expunger.join().unwrap();
    println!("{rounds} FETCH rounds, {issued} with EXPUNGEISSUED");
    assert!(rounds > 0);
    let log = server.log_text();
    assert!(!log.contains(" ERROR ") && !log.contains(" WARN "), "{}", tail(&log, 30));
}
