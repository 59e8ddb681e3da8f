//! The same IMAP command script against Dovecot 2.3 (apt `dovecot-imapd`)
//! and dormouse, each on an identical copy of one Maildir: the answers must
//! agree wherever RFC 3501 leaves no choice (EXISTS/EXPUNGE, UIDs, FLAGS,
//! RFC822.SIZE, BODY[] bytes, header fields, partials, ENVELOPE, BODY,
//! SEARCH results, STATUS counters, UIDVALIDITY/UIDNEXT, APPENDUID/COPYUID,
//! tagged OK/NO/BAD). Texts, capability order and `\Recent` are normalized
//! away by tests/py/imap_transcript.py.
//!
//! As root, Dovecot's copy is owned by `nobody` (Dovecot refuses root mail access).

mod dovecot_support;
mod imap_support;

use std::path::Path;
use std::process::Command;

use dovecot_support::{is_root, mail_ids, Dovecot, DOVECOT};
use imap_support::{Server, ServerOptions, PYTHON};

const MESSAGES: &[&str] = &[
    "From: Alice Example <alice@example.org>\r\nTo: u1@example.org\r\nSubject: hello there\r\n\
     Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\nFirst body line.\r\nSecond line.\r\n",
    "From: \"Bob, Jr.\" <bob@example.net>\r\nTo: u1@example.org, Carol <carol@example.com>\r\nCc: team@example.org\r\n\
     Subject: =?UTF-8?Q?quarterly_report_=E2=9C=93?=\r\nDate: Tue, 03 Mar 2026 11:30:00 +0100\r\nIn-Reply-To: <m1@example.org>\r\n\
     MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\n\
     Content-Type: text/plain; charset=utf-8\r\n\r\nReport attached.\r\n--b1\r\nContent-Type: text/csv; name=\"q.csv\"\r\n\
     Content-Transfer-Encoding: base64\r\n\r\nYSxiLGMKMSwyLDMK\r\n--b1--\r\n",
    "From: alice@example.org\r\nSubject: no date header\r\n\r\nshort\r\n",
    "From: Dave <dave@example.com>\r\nReply-To: list@example.com\r\nSender: bounce@example.com\r\nSubject: large one\r\n\
     Date: Wed, 04 Mar 2026 09:15:00 -0500\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n<p>big</p>\r\n",
    "Subject: empty body\r\n\r\n",
];

const SCRIPT: &str = "\
SELECT INBOX
FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)
FETCH 1:* (BODY.PEEK[])
FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE)])
FETCH 1:* (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])
FETCH 1:* (BODY.PEEK[HEADER] BODY.PEEK[TEXT])
FETCH 2 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[1]<2.5>)
FETCH 1 (BODY.PEEK[]<0.16> BODY.PEEK[TEXT]<100.10>)
FETCH 1:* (ENVELOPE)
FETCH 1:* (BODY)
UID FETCH 1:* (FLAGS RFC822.SIZE)
SEARCH ALL
SEARCH UNSEEN
SEARCH FROM \"alice\"
SEARCH SUBJECT \"large\"
SEARCH LARGER 200
SEARCH SMALLER 100
SEARCH HEADER Message-ID \"m1@example.org\"
SEARCH BODY \"attached\"
SEARCH TEXT \"short\"
SEARCH OR FROM dave SUBJECT hello
SEARCH NOT FROM alice
SEARCH 2:4 UNDELETED
STORE 1 +FLAGS (\\Flagged $Label1)
STORE 2 +FLAGS (\\Seen \\Answered)
STORE 2 -FLAGS (\\Answered)
STORE 4 FLAGS (\\Draft)
FETCH 1:* (FLAGS)
FETCH 3 (BODY[TEXT])
FETCH 3 (FLAGS)
SEARCH FLAGGED
SEARCH KEYWORD $Label1
SEARCH SEEN
SEARCH ANSWERED
SEARCH DRAFT
UID SEARCH FLAGGED
CREATE Archive
COPY 1:2 Archive
UID COPY 5 Archive
STATUS Archive (MESSAGES UIDNEXT UNSEEN)
STATUS INBOX (MESSAGES UIDNEXT UNSEEN)
STORE 3 +FLAGS.SILENT (\\Deleted)
EXPUNGE
SEARCH ALL
UID SEARCH ALL
APPEND INBOX (\\Seen $Appended) @MSG
NOOP
FETCH 1:* (UID FLAGS RFC822.SIZE)
UID FETCH 1:* (FLAGS)
UID STORE 1 +FLAGS.SILENT (\\Deleted)
UID EXPUNGE 1
FETCH 1:* (UID)
EXAMINE Archive
FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[])
SELECT Archive
UID MOVE 1 INBOX
STATUS INBOX (MESSAGES UIDNEXT UNSEEN)
CLOSE
SELECT nosuchbox
FETCH 1 (FLAGS)
";

fn transcript(port: u16, script: &Path) -> serde_json::Value {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/imap_transcript.py");
    let out = Command::new(PYTHON)
        .arg(py)
        .args(["127.0.0.1", &port.to_string(), "u1", "pass"])
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "transcript failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `script` against dormouse and a Dovecot started by `dovecot`, each
/// on a copy of one Maildir holding `messages`, and fails on every command
/// whose facts differ. `@NAME` in the script stands for a file holding the
/// matching `files` entry. `setup` adds to dormouse's `[imap]` section and
/// `prepare` may change the Maildir before it is copied.
struct Setup {
    imap_extra: &'static str,
    prepare: fn(&Path),
    dovecot: fn(&Path, &Path) -> Dovecot,
}

fn compare_with_dovecot(messages: &[&str], script: &str, files: &[(&str, &str)], setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let (uid, gid) = mail_ids();
    let dm_home = dir.path().join("dm-home/u1");
    let dc_home = dir.path().join("dc-home/u1");
    std::fs::create_dir_all(&dm_home).unwrap();
    let dm_passwd = dir.path().join("dm-passwd");
    let dc_passwd = dir.path().join("dc-passwd");
    std::fs::write(&dm_passwd, format!("u1:{{PLAIN}}pass:{uid}:{gid}::{}::\n", dm_home.display())).unwrap();
    std::fs::write(&dc_passwd, format!("u1:{{PLAIN}}pass:{uid}:{gid}::{}::\n", dc_home.display())).unwrap();

    let server = Server::start(ServerOptions {
        users: Vec::new(),
        sections_extra: format!("[users]\npasswd_file = {:?}\n", dm_passwd),
        imap_extra: format!("{}{}", ServerOptions::default().imap_extra, setup.imap_extra),
        ..ServerOptions::default()
    });
    for message in messages {
        server.deliver("u1", message.as_bytes());
    }
    (setup.prepare)(&dm_home.join("Maildir"));
    // Identical starting point: copy the Maildir (with dormouse's
    // dovecot-uidlist) for Dovecot, keeping mtimes.
    std::fs::create_dir_all(dc_home.parent().unwrap()).unwrap();
    let status = Command::new("cp").arg("-a").arg(&dm_home).arg(&dc_home).status().unwrap();
    assert!(status.success());
    if is_root() {
        let status = Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path().join("dc-home")).status().unwrap();
        assert!(status.success());
    }
    let dovecot = (setup.dovecot)(&dir.path().join("dovecot"), &dc_passwd);

    let mut script = script.to_string();
    for (name, content) in files {
        let path = dir.path().join(format!("{name}.eml"));
        std::fs::write(&path, content).unwrap();
        script = script.replace(&format!("@{name}"), &format!("@{}", path.display()));
    }
    let script_path = dir.path().join("script.txt");
    std::fs::write(&script_path, script).unwrap();

    let ours = transcript(server.imap, &script_path);
    let theirs = transcript(dovecot.port, &script_path);
    let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), theirs.len());
    let mut mismatches = Vec::new();
    for (a, b) in ours.iter().zip(theirs) {
        if a["facts"] != b["facts"] {
            mismatches.push(format!(
                "{}\n  dormouse: {}\n  dovecot:  {}",
                a["command"],
                serde_json::to_string(&a["facts"]).unwrap(),
                serde_json::to_string(&b["facts"]).unwrap()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{} of {} commands differ:\n{}", mismatches.len(), ours.len(), mismatches.join("\n"));
}

#[test]
fn dormouse_answers_like_dovecot() {
    if !Path::new(DOVECOT).exists() {
        eprintln!("SKIPPED: {DOVECOT} is not installed (apt-get install dovecot-imapd)");
        return;
    }
    let appended = "From: appender@example.org\r\nSubject: appended\r\n\r\nappended body\r\n";
    let setup = Setup { imap_extra: "", prepare: |_| {}, dovecot: Dovecot::start };
    compare_with_dovecot(MESSAGES, SCRIPT, &[("MSG", appended)], setup);
}

/// LIST-EXTENDED, LIST-STATUS and MULTIAPPEND on a tree with parents that
/// have no mailbox of their own (Dovecot with `/` as separator, listescape
/// and the special-use folders our names imply; no auto mailboxes).
const LIST_SCRIPT: &str = "\
SUBSCRIBE Archive/2024
SUBSCRIBE foo/bar
SUBSCRIBE solo
SUBSCRIBE Work/Deep/x
SUBSCRIBE Sent
SUBSCRIBE Archive
SUBSCRIBE lists.debian.org
MULTIAPPEND solo (\\Seen) @A () @B
LIST (SUBSCRIBED) \"\" %
LIST (SUBSCRIBED) \"\" *
LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (CHILDREN)
LIST \"\" % RETURN (SUBSCRIBED)
LIST \"\" (solo foo/* Sent) RETURN (CHILDREN)
LIST (SPECIAL-USE) \"\" *
LIST \"\" * RETURN (SPECIAL-USE)
LIST (REMOTE) \"\" %
LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))
LIST () \"\" Work/*
LIST (SUBSCRIBED RECURSIVEMATCH) \"\" Work/% RETURN (CHILDREN)
LIST (SUBSCRIBED) \"\" * RETURN (STATUS (MESSAGES))
LIST \"\" * RETURN (SUBSCRIBED CHILDREN SPECIAL-USE STATUS (MESSAGES))
LIST (SPECIAL-USE SUBSCRIBED) \"\" *
LIST \"\" *
LIST \"\" Work/%
LIST (RECURSIVEMATCH) \"\" %
LIST (BOGUS) \"\" %
LIST \"\" % RETURN (BOGUS)
MULTIAPPEND solo () @A () @EMPTY () @B
STATUS solo (MESSAGES UNSEEN)
MULTIAPPEND Nope () @A () @B
MULTIAPPEND Archive () @A (\\Flagged) @B () @A
SELECT Archive
FETCH 1:* (UID FLAGS RFC822.SIZE)
";

#[test]
fn list_extended_and_multiappend_answer_like_dovecot() {
    if !Path::new(DOVECOT).exists() {
        eprintln!("SKIPPED: {DOVECOT} is not installed (apt-get install dovecot-imapd)");
        return;
    }
    fn dovecot(dir: &Path, passwd: &Path) -> Dovecot {
        let special = "  separator = /\n  mailbox Sent {\n    special_use = \\Sent\n  }\n  mailbox Archive {\n    special_use = \\Archive\n  }\n";
        Dovecot::start_with(dir, passwd, "mail_plugins = $mail_plugins listescape\n", special)
    }
    /// The folders, made on disk as Dovecot's Maildir++ keeps them: `foo`,
    /// `Work` and `Work/Deep` exist only as parents of their children.
    fn tree(maildir: &Path) {
        for dir in [".Archive", ".Archive.2024", ".Sent", ".foo.bar", ".Work.Deep.x", ".solo", ".lists\\2edebian\\2eorg"] {
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(maildir.join(dir).join(sub)).unwrap();
            }
            std::fs::write(maildir.join(dir).join("maildirfolder"), b"").unwrap();
        }
    }
    let setup = Setup { imap_extra: "auto_mailboxes = []\n", prepare: tree, dovecot };
    let files = [("A", "Subject: a\r\n\r\nfirst\r\n"), ("B", "Subject: b\r\n\r\nsecond\r\n"), ("EMPTY", "")];
    compare_with_dovecot(MESSAGES, LIST_SCRIPT, &files, setup);
}
