//! WITHIN (RFC 5032): SEARCH YOUNGER / OLDER by internal date, relative to
//! the session's clock.
mod session_support;

use std::time::Duration;

use session_support::*;

/// An APPEND with the internal date `age` before the wall clock.
fn append_aged(c: &mut Client, tag: &str, subject: &str, age: Duration) {
    let date = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap();
    let date = date.format("%d-%b-%Y %H:%M:%S +0000");
    let m = simple_message(subject);
    let mut cmd = format!("{tag} APPEND INBOX \"{date}\" {{{}+}}\r\n", m.len()).into_bytes();
    cmd.extend_from_slice(&m);
    cmd.extend_from_slice(b"\r\n");
    check(&c.raw(&cmd), &[&format!("{tag} OK [APPENDUID {{}}] {{}}")]);
}

#[test]
fn younger_and_older_follow_the_session_clock() {
    let w = World::new();
    let mut c = w.alice();
    let hour = Duration::from_secs(3600);
    append_aged(&mut c, "a1", "three-days", 72 * hour);
    append_aged(&mut c, "a2", "two-hours", 2 * hour);
    append_aged(&mut c, "a3", "ten-minutes", Duration::from_secs(600));
    let caps = c.send("c CAPABILITY");
    assert!(caps.contains(" WITHIN"), "{caps}");
    c.send("s SELECT INBOX");
    c.expect("y1 SEARCH YOUNGER 3600", &["* SEARCH 3", "y1 OK Search completed."]);
    c.expect("y2 SEARCH YOUNGER 86400", &["* SEARCH 2 3", "y2 OK Search completed."]);
    c.expect("o1 SEARCH OLDER 3600", &["* SEARCH 1 2", "o1 OK Search completed."]);
    c.expect("o2 UID SEARCH OLDER 86400", &["* SEARCH 1", "o2 OK Search completed."]);
    c.expect("o3 SEARCH OLDER 604800", &["* SEARCH", "o3 OK Search completed."]);
    c.expect("n1 SEARCH NOT OLDER 86400 YOUNGER 5400", &["* SEARCH 3", "n1 OK Search completed."]);
    c.expect("e1 SEARCH RETURN (COUNT) YOUNGER 86400", &["* ESEARCH (TAG \"e1\") COUNT 2", "e1 OK Search completed."]);
    c.expect("y3 SEARCH YOUNGER 1200", &["* SEARCH 3", "y3 OK Search completed."]);
    // 20 minutes later on the session's clock (within the autologout), the
    // ten-minute-old message is half an hour old.
    c.advance(Duration::from_secs(1200));
    c.expect("y4 SEARCH YOUNGER 1200", &["* SEARCH", "y4 OK Search completed."]);
    c.expect("o4 SEARCH OLDER 1500", &["* SEARCH 1 2 3", "o4 OK Search completed."]);
    // The interval is a non-zero number (RFC 5032: nz-number).
    c.expect("b1 SEARCH YOUNGER 0", &["b1 BAD {}"]);
    c.expect("b2 SEARCH OLDER soon", &["b2 BAD {}"]);
}
