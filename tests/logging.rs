//! The log a redirected `serve` writes: plain text without ANSI colour codes
//! (stderr is a file here, not a terminal), addresses printed as addresses,
//! and one JSON object per line with `[log] format = "json"`.

mod imap_support;

use std::process::{Command, Stdio};

use imap_support::{dormouse, write_one_worker_config, Conn};

/// Starts serve with `format`, waits for its listener line, logs in once
/// (so session lines are written), stops it and returns its stderr.
fn serve_log(format: &str) -> (String, u16) {
    let dir = tempfile::tempdir().unwrap();
    let (config, imap) =
        write_one_worker_config(dir.path(), &format!("[log]\nlevel = \"info,imap=debug\"\nformat = \"{format}\""));
    let added = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "user", "add", "alice", "--password", "pw-a", "--scheme", "PLAIN"])
        .output()
        .unwrap();
    assert!(added.status.success(), "user add: {}", String::from_utf8_lossy(&added.stderr));
    let log = dir.path().join("serve.log");
    // No NO_COLOR here: the decision must come from stderr not being a terminal.
    let mut child = Command::new(dormouse())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut conn = Conn::greeted(imap, &log);
    let login = conn.cmd("a", "LOGIN alice pw-a");
    assert!(login.last().unwrap().starts_with("a OK"), "{login:?}");
    let select = conn.cmd("s", "SELECT nosuch");
    assert!(select.last().unwrap().starts_with("s NO [NONEXISTENT]"), "{select:?}");
    conn.cmd("b", "LOGOUT");
    drop(conn);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    (std::fs::read_to_string(&log).unwrap(), imap)
}

#[test]
fn redirected_text_log_has_no_colour_codes_and_plain_addresses() {
    let (text, port) = serve_log("text");
    assert!(text.contains("IMAP listener ready"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escape in a redirected log:\n{text}");
    assert!(text.contains(&format!("addr=127.0.0.1:{port}")), "listener address not printed as an address:\n{text}");
    assert!(!text.contains("Some("), "an Option leaked into the log:\n{text}");
    // The client's own mistake is not a server warning, and it names the session.
    let refused: Vec<&str> = text.lines().filter(|l| l.contains("mailbox does not exist")).collect();
    assert_eq!(refused.len(), 1, "{text}");
    assert!(refused[0].contains("DEBUG") && !refused[0].contains("WARN"), "{}", refused[0]);
    assert!(refused[0].contains("user=alice") && refused[0].contains("peer=127.0.0.1"), "{}", refused[0]);
    // Login and logout lines, like Dovecot's: who, from where, TLS or not,
    // the session id, and at logout how long it lasted.
    let line = |what: &str| text.lines().find(|l| l.contains(" INFO ") && l.contains(what)).unwrap_or_else(|| panic!("no {what} line:\n{text}")).to_string();
    for what in ["login", "logout"] {
        let l = line(&format!(": {what} "));
        for field in ["session=", "user=alice", "peer=127.0.0.1", "tls=false"] {
            assert!(l.contains(field), "{what} line lacks {field}: {l}");
        }
    }
    assert!(line(": logout ").contains("duration_secs=0"), "{}", line(": logout "));
}

#[test]
fn json_log_is_one_object_per_line() {
    let (text, port) = serve_log("json");
    let mut listener_lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nwhole log:\n{text}"));
        assert!(value.get("level").is_some() && value.get("timestamp").is_some(), "{line}");
        if value.get("message").and_then(|m| m.as_str()) == Some("IMAP listener ready")
            && value.get("addr").and_then(|a| a.as_str()) == Some(&format!("127.0.0.1:{port}"))
        {
            listener_lines += 1;
        }
    }
    assert_eq!(listener_lines, 1, "listener line with its address as a field:\n{text}");
}
