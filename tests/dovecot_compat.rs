//! Cross-check against a real Dovecot 2.3 (apt `dovecot-imapd`) sharing the
//! same passwd file and Maildir: mail delivered by `dormouse deliver` has
//! the same UIDs, UIDVALIDITY and flags through Dovecot IMAP; flags set by
//! dormouse (system flags and keywords) show in Dovecot; mail delivered by
//! Dovecot's LDA and flags set through Dovecot IMAP show in dormouse; UIDs
//! keep counting up whichever side delivers. Folder names holding `.`
//! (`lists.debian.org`) are stored as Dovecot's listescape plugin stores
//! them: Dovecot with that plugin lists, selects and subscribes the same
//! names in both directions.
//!
//! Skipped (with a message) only if Dovecot is not installed. When run as
//! root the mail user is `nobody` (Dovecot refuses root mail access), and the
//! Maildir is handed to `nobody` after each dormouse write: on a real system
//! both programs run as the mail user.

mod dovecot_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use storage_hooks::{FlagOp, Flags, SystemFlags, UidSet};
use dovecot_support::{mail_ids, Dovecot, DOVECOT};
use support::TestEnv;

const LDA: &str = "/usr/lib/dovecot/dovecot-lda";

/// What only this test needs of Dovecot.
trait DovecotExt {
    fn lda(&self, user: &str, message: &[u8]);
    fn imap_view(&self, stores: &[(u32, &str)]) -> (u32, BTreeMap<u32, Vec<String>>);
}

impl DovecotExt for Dovecot {
    /// Delivers with dovecot-lda.
    fn lda(&self, user: &str, message: &[u8]) {
        let out = support::run_with_stdin(Command::new(LDA).arg("-c").arg(self.conf()).args(["-d", user]), message);
        assert!(out.status.success(), "dovecot-lda failed: {:?} {}", out.status, self.log());
    }

    /// Logs in over IMAP, runs `+FLAGS` stores (`(uid, "flags")`), and
    /// returns UIDVALIDITY and `uid -> sorted flags` (without `\Recent`).
    fn imap_view(&self, stores: &[(u32, &str)]) -> (u32, BTreeMap<u32, Vec<String>>) {
        const SCRIPT: &str = r#"
import imaplib, json, re, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login("u1", "pass")
typ, _ = c.select("INBOX")
assert typ == "OK"
uidvalidity = int(c.response("UIDVALIDITY")[1][0])
args = sys.argv[2:]
for uid, flags in zip(args[0::2], args[1::2]):
    typ, _ = c.uid("STORE", uid, "+FLAGS", "(" + flags + ")")
    assert typ == "OK"
typ, data = c.uid("FETCH", "1:*", "(UID FLAGS)")
assert typ == "OK"
msgs = {}
for item in data:
    if item is None:
        continue
    s = (item[0] if isinstance(item, tuple) else item).decode()
    uid = re.search(r"UID (\d+)", s)
    flags = re.search(r"FLAGS \(([^)]*)\)", s)
    if uid:
        msgs[uid.group(1)] = sorted(f for f in (flags.group(1).split() if flags else []) if f != "\\Recent")
c.logout()
print(json.dumps({"uidvalidity": uidvalidity, "messages": msgs}))
"#;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", SCRIPT, &self.port.to_string()]);
        for (uid, flags) in stores {
            cmd.arg(uid.to_string()).arg(flags);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "imaplib: {} / {}", String::from_utf8_lossy(&out.stderr), self.log());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let msgs = v["messages"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, f)| {
                let flags = f.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
                (k.parse().unwrap(), flags)
            })
            .collect();
        (v["uidvalidity"].as_u64().unwrap() as u32, msgs)
    }
}

/// Gives the Maildir to the mail user (only needed when the test runs as root).
fn hand_over(home: &Path) {
    if rustix::process::geteuid().is_root() {
        let status = Command::new("chown").args(["-R", "65534:65534"]).arg(home).status().unwrap();
        assert!(status.success());
    }
}

/// dormouse's view: UIDVALIDITY and `uid -> sorted IMAP flag names`.
fn dormouse_view(env: &TestEnv) -> (u32, BTreeMap<u32, Vec<String>>) {
    let mbox = env.store("u1").open_mailbox("INBOX").unwrap();
    let msgs = mbox
        .messages()
        .iter()
        .map(|m| {
            let mut names: Vec<String> =
                m.flags.to_imap_string().split_whitespace().map(str::to_string).collect();
            names.sort();
            (m.uid, names)
        })
        .collect();
    (mbox.uidvalidity(), msgs)
}

fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A test environment whose passwd file holds user `u1` (password `pass`,
/// the mail uid/gid Dovecot will run as), and u1's home, created.
fn env_with_user_u1() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new("", "");
    let (uid, gid) = mail_ids();
    let home = env.home("u1");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(&env.passwd, format!("u1:{{PLAIN}}pass:{uid}:{gid}::{}::\n", home.display())).unwrap();
    (env, home)
}

#[test]
fn dormouse_and_dovecot_agree_on_uids_and_flags() {
    if !Path::new(DOVECOT).exists() || !Path::new(LDA).exists() {
        println!("SKIPPED: Dovecot is not installed ({DOVECOT}, {LDA}); apt-get install dovecot-imapd");
        return;
    }
    let (env, home) = env_with_user_u1();

    // 1. dormouse delivers; Dovecot sees the same UIDs and UIDVALIDITY.
    for i in 1..=3 {
        let out = env.deliver(&["--user", "u1"], format!("Subject: dormouse {i}\n\nbody {i}\n").as_bytes());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    hand_over(&home);
    let dovecot_dir = env.dir.path().join("dovecot");
    let dovecot = Dovecot::start(&dovecot_dir, &env.passwd);
    let ours = dormouse_view(&env);
    assert_eq!(ours.1.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(dovecot.imap_view(&[]), ours, "Dovecot sees dormouse's deliveries as dormouse does");

    // 2. Flags set by dormouse (system flags and a keyword) show in Dovecot.
    {
        let mut mbox = env.store("u1").open_mailbox("INBOX").unwrap();
        mbox.store_flags(&UidSet::from_range(1, 1), FlagOp::Add, &Flags::system(SystemFlags::SEEN), None).unwrap();
        let flagged = Flags::from_imap_names(["\\Flagged", "$Important"]).unwrap();
        mbox.store_flags(&UidSet::from_range(2, 2), FlagOp::Add, &flagged, None).unwrap();
    }
    hand_over(&home);
    let theirs = dovecot.imap_view(&[]);
    assert_eq!(theirs.1[&1], names(&["\\Seen"]));
    assert_eq!(theirs.1[&2], names(&["\\Flagged", "$Important"]));
    assert_eq!(theirs.1[&3], Vec::<String>::new());

    // 3. Flags set through Dovecot IMAP show in dormouse.
    let theirs = dovecot.imap_view(&[(3, "\\Answered $Label1")]);
    assert_eq!(theirs.1[&3], names(&["\\Answered", "$Label1"]));
    assert_eq!(dormouse_view(&env), theirs);

    // 4. Dovecot's LDA delivers; dormouse sees the same UIDs.
    dovecot.lda("u1", b"Subject: dovecot-lda 1\n\nx\n");
    dovecot.lda("u1", b"Subject: dovecot-lda 2\n\ny\n");
    let theirs = dovecot.imap_view(&[]);
    assert_eq!(theirs.1.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(dormouse_view(&env), theirs, "dormouse sees Dovecot's deliveries as Dovecot does");

    // 5. dormouse delivers after Dovecot: UIDs continue, no collision.
    let out = env.deliver(&["--user", "u1"], b"Subject: dormouse again\n\nz\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    hand_over(&home);
    let theirs = dovecot.imap_view(&[]);
    assert_eq!(theirs.1.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(dormouse_view(&env), theirs);
    let errors: Vec<String> = dovecot.log().lines().filter(|l| l.contains("Error") || l.contains("Panic")).map(str::to_string).collect();
    assert!(errors.is_empty(), "Dovecot logged errors: {errors:#?}");
}

/// Dovecot's LIST and LSUB of every name, decoded from its quoting, and the
/// message count of each name in `select`.
fn dovecot_names(port: u16, commands: &[&str], select: &[&str]) -> serde_json::Value {
    const SCRIPT: &str = r#"
import imaplib, json, re, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login("u1", "pass")
def q(name):
    return '"' + name.replace('\\', '\\\\').replace('"', '\\"') + '"'
def names(typ, data):
    assert typ == "OK", data
    out = []
    for line in data:
        if line is None:
            continue
        s = line.decode()
        m = re.match(r'^\((.*?)\) "/" (.*)$', s)
        n = m.group(2)
        if n.startswith('"'):
            n = n[1:-1].replace('\\"', '"').replace('\\\\', '\\')
        out.append([n, m.group(1)])
    return sorted(out)
cmds, sel = json.loads(sys.argv[2]), json.loads(sys.argv[3])
for cmd in cmds:
    verb, *args = cmd.split(" ")
    typ, data = c._simple_command(verb, *[q(a) for a in args])
    assert typ == "OK", (cmd, data)
result = {"list": names(*c.list('""', "*")), "lsub": names(*c.lsub('""', "*")), "exists": {}}
for name in sel:
    typ, data = c.select(q(name))
    assert typ == "OK", (name, data)
    result["exists"][name] = int(data[0])
c.logout()
print(json.dumps(result))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &port.to_string(), &serde_json::to_string(commands).unwrap(), &serde_json::to_string(select).unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "imaplib: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dotted_folder_names_match_dovecot_listescape() {
    if !Path::new(DOVECOT).exists() || !Path::new("/usr/lib/dovecot/modules/lib20_listescape_plugin.so").exists() {
        println!("SKIPPED: Dovecot or its listescape plugin is not installed; apt-get install dovecot-imapd");
        return;
    }
    let (env, home) = env_with_user_u1();

    // 1. dormouse creates and subscribes; Dovecot lists the same names.
    let ours = ["lists.debian.org", "v1.2", "v1.2/rc.1", "a\\b", "~x.y", "Ünï.code"];
    {
        let store = env.store("u1");
        for name in ours {
            store.create_mailbox(name).unwrap();
        }
        store.subscribe("v1.2/rc.1").unwrap();
        store.subscribe("lists.debian.org").unwrap();
    }
    let out = env.deliver(&["--user", "u1", "--mailbox", "lists.debian.org"], b"Subject: deb\n\nx\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    hand_over(&home);
    let dovecot = Dovecot::start_listescape(&env.dir.path().join("dovecot"), &env.passwd);
    let theirs = dovecot_names(dovecot.port, &[], &["lists.debian.org", "v1.2/rc.1"]);
    let listed: Vec<&str> = theirs["list"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    let mut expected: Vec<String> = ours.iter().map(|n| storage_hooks_mutf7(n)).collect();
    expected.push("INBOX".into());
    expected.sort();
    assert_eq!(listed, expected, "Dovecot's LIST of dormouse's folders");
    let lsub: Vec<&str> = theirs["lsub"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(lsub, ["lists.debian.org", "v1.2/rc.1"]);
    assert_eq!(theirs["exists"]["lists.debian.org"], 1, "the delivered message");

    // 2. Dovecot creates, subscribes and renames; dormouse sees the same names.
    dovecot_names(
        dovecot.port,
        &["CREATE debian.user/x.y", "SUBSCRIBE debian.user/x.y", "CREATE old.name", "RENAME old.name new.name"],
        &[],
    );
    hand_over(&home);
    let store = env.store("u1");
    let boxes = store.list_mailboxes().unwrap();
    let mine: Vec<(&str, bool, bool)> = boxes.iter().map(|b| (b.name.as_str(), b.selectable, b.subscribed)).collect();
    for want in [("debian.user", false, false), ("debian.user/x.y", true, true), ("new.name", true, false), ("lists.debian.org", true, true)] {
        assert!(mine.contains(&want), "{want:?} missing from dormouse's list {mine:?}");
    }
    assert!(!mine.iter().any(|m| m.0 == "old.name"), "{mine:?}");
    assert!(home.join("Maildir/.debian\\2euser.x\\2ey").is_dir());
    // 3. dormouse writes into a folder Dovecot made; Dovecot counts it.
    let out = env.deliver(&["--user", "u1", "--mailbox", "debian.user/x.y"], b"Subject: deb2\n\nx\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    hand_over(&home);
    let theirs = dovecot_names(dovecot.port, &[], &["debian.user/x.y"]);
    assert_eq!(theirs["exists"]["debian.user/x.y"], 1);
    let errors: Vec<String> = dovecot.log().lines().filter(|l| l.contains("Error") || l.contains("Panic")).map(str::to_string).collect();
    assert!(errors.is_empty(), "Dovecot logged errors: {errors:#?}");
}

/// The modified UTF-7 form IMAP shows of a UTF-8 name (levels kept).
fn storage_hooks_mutf7(name: &str) -> String {
    name.split('/').map(storage_hooks::mutf7::encode).collect::<Vec<_>>().join("/")
}
