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

#[test]
fn dormouse_answers_like_dovecot() {
    if !Path::new(DOVECOT).exists() {
        eprintln!("SKIPPED: {DOVECOT} is not installed (apt-get install dovecot-imapd)");
        return;
    }
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
        ..ServerOptions::default()
    });
    for message in MESSAGES {
        server.deliver("u1", message.as_bytes());
    }
    // Identical starting point: copy the Maildir (with dormouse's
    // dovecot-uidlist) for Dovecot, keeping mtimes.
    std::fs::create_dir_all(dc_home.parent().unwrap()).unwrap();
    let status = Command::new("cp").arg("-a").arg(&dm_home).arg(&dc_home).status().unwrap();
    assert!(status.success());
    if is_root() {
        let status = Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path().join("dc-home")).status().unwrap();
        assert!(status.success());
    }
    let dovecot = Dovecot::start(&dir.path().join("dovecot"), &dc_passwd);

    let msg = dir.path().join("append.eml");
    std::fs::write(&msg, "From: appender@example.org\r\nSubject: appended\r\n\r\nappended body\r\n").unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(&script, SCRIPT.replace("@MSG", &format!("@{}", msg.display()))).unwrap();

    let ours = transcript(server.imap, &script);
    let theirs = transcript(dovecot.port, &script);
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
