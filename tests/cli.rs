//! The small subcommands: `config --example | check | show`, `user hash | add | passwd | del | list`.

mod support;

use imap::auth::{PasswordScheme, StoredPassword};
use support::TestEnv;

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn with_config(path: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(support::BIN);
    c.arg("--config").arg(path).env_remove("DORMOUSE_CONFIG");
    c
}

#[test]
fn config_example_check_and_show() {
    let env = TestEnv::new("", "");
    let example = stdout(&env.command().args(["config", "--example"]).output().unwrap());
    assert_eq!(example, include_str!("../examples/dormouse.toml"));
    let path = env.dir.path().join("example.toml");
    std::fs::write(&path, &example).unwrap();
    let check = with_config(&path).args(["config", "check"]).output().unwrap();
    assert!(stdout(&check).starts_with("configuration OK: "));
    // The effective configuration round-trips through `config show`.
    let shown = stdout(&env.command().args(["config", "show"]).output().unwrap());
    std::fs::write(&path, &shown).unwrap();
    let again = stdout(&with_config(&path).args(["config", "show"]).output().unwrap());
    assert_eq!(shown, again);
    assert!(shown.contains("max_message_size = 52428800"), "{shown}");

    std::fs::write(&path, "[lmtp]\nmax_recipients = 0\n").unwrap();
    let bad = with_config(&path).args(["config", "check"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lmtp.max_recipients"));
    // DORMOUSE_CONFIG is the fallback for --config.
    let via_env = std::process::Command::new(support::BIN)
        .args(["config", "check"])
        .env("DORMOUSE_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(via_env.status.code(), Some(78));
}

#[test]
fn user_hash_add_and_list() {
    let env = TestEnv::new("", "");
    for scheme in ["ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT", "PLAIN"] {
        let field = stdout(&env.command().args(["user", "hash", "--scheme", scheme, "s3cret"]).output().unwrap());
        let stored = StoredPassword::parse(field.trim()).unwrap();
        assert_eq!(stored.scheme(), PasswordScheme::parse(scheme).unwrap());
        assert!(stored.verify(b"s3cret") && !stored.verify(b"s3cre"), "{scheme}");
    }
    let from_stdin = support::run_with_stdin(env.command().args(["user", "hash"]), b"piped pw\n");
    let stored = StoredPassword::parse(stdout(&from_stdin).trim()).unwrap();
    assert_eq!(stored.scheme(), PasswordScheme::Argon2id, "default scheme");
    assert!(stored.verify(b"piped pw"));

    let added = stdout(&env.command().args(["user", "add", "zoe"]).output().unwrap());
    let password = added.lines().find_map(|l| l.strip_prefix("password: ")).expect("random password printed");
    let db = imap::auth::UserDb::open(&env.passwd, imap::auth::MailLocation::parse("%h/Maildir").unwrap()).unwrap();
    assert!(db.verify("zoe", password.as_bytes()).is_ok());
    stdout(&env.command().args(["user", "add", "amy", "--password", "x"]).output().unwrap());
    let dup = env.command().args(["user", "add", "amy", "--password", "y"]).output().unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let list = stdout(&env.command().args(["user", "list"]).output().unwrap());
    let names: Vec<&str> = list.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(names, ["amy", "zoe"]);
    assert!(list.contains("/home/zoe/Maildir"), "{list}");
}

/// `--password` with a line break used to write a second passwd line: a
/// user `evil` with uid 0 and bob's home.
#[test]
fn user_add_refuses_a_password_plain_cannot_store() {
    let env = TestEnv::new("", "");
    let hostile = "p\nevil:{PLAIN}evilpw:0:0::/home/bob::";
    let out = env.command().args(["user", "add", "bob", "--scheme", "PLAIN", "--password", hostile]).output().unwrap();
    assert!(!out.status.success(), "accepted a PLAIN password with a newline");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PLAIN password cannot"), "{stderr}");
    assert!(!stderr.contains("evilpw"), "the password must not be echoed: {stderr}");
    for bad in ["a:b", "a\rb", ""] {
        let out = env.command().args(["user", "add", "carl", "--scheme", "PLAIN", "--password", bad]).output().unwrap();
        assert!(!out.status.success(), "{bad:?}");
    }
    let passwd = std::fs::read_to_string(&env.passwd).unwrap_or_default();
    assert!(!passwd.contains("evil"), "{passwd}");
    // A hashing scheme stores the same password, and it verifies.
    stdout(&env.command().args(["user", "add", "bob", "--scheme", "SHA512-CRYPT", "--password", hostile]).output().unwrap());
    let db = imap::auth::UserDb::open(&env.passwd, imap::auth::MailLocation::parse("%h/Maildir").unwrap()).unwrap();
    assert!(db.verify("bob", hostile.as_bytes()).is_ok());
    assert_eq!(db.names(), ["bob"]);
}

#[test]
fn user_passwd_and_del_and_concurrent_adds_from_many_processes() {
    let env = TestEnv::new("", "");
    stdout(&env.command().args(["user", "add", "amy", "--scheme", "PLAIN", "--password", "old"]).output().unwrap());
    let db = || imap::auth::UserDb::open(&env.passwd, imap::auth::MailLocation::parse("%h/Maildir").unwrap()).unwrap();
    stdout(&env.command().args(["user", "passwd", "amy", "--password", "new", "--scheme", "SHA512-CRYPT"]).output().unwrap());
    assert!(db().verify("amy", b"new").is_ok() && db().verify("amy", b"old").is_err());
    let generated = stdout(&env.command().args(["user", "passwd", "amy"]).output().unwrap());
    let password = generated.lines().find_map(|l| l.strip_prefix("password: ")).expect("random password printed");
    assert!(db().verify("amy", password.as_bytes()).is_ok());
    let unknown = env.command().args(["user", "passwd", "nobody", "--password", "x"]).output().unwrap();
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("unknown user nobody"));

    // Twelve `user add` processes at once: every one of them lands.
    let children: Vec<_> = (0..12)
        .map(|i| {
            env.command()
                .args(["user", "add", &format!("u{i}"), "--scheme", "PLAIN", "--password", "pw"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(db().names().len(), 13);

    let removed = stdout(&env.command().args(["user", "del", "amy"]).output().unwrap());
    assert!(removed.contains("removed user amy") && removed.contains("mail is kept in"), "{removed}");
    assert!(!db().names().contains(&"amy".to_string()));
    let again = env.command().args(["user", "del", "amy"]).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("unknown user amy"));
}
