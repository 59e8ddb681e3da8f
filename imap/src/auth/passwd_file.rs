//! Dovecot's passwd-file format: `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`.
//!
//! Blank lines and lines starting with `#` are ignored. Only `user` is
//! required; an empty password field means the user can receive mail but
//! cannot log in. Extra fields are space-separated `key=value` pairs;
//! `userdb_mail=` (or `mail=`) overrides the Maildir location for that user.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{AuthError, StoredPassword};

/// One user line of a passwd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name (may contain `@domain`).
    pub name: String,
    /// Stored password; `None` when the field is empty or its scheme unknown.
    pub password: Option<StoredPassword>,
    /// System uid, if given.
    pub uid: Option<u32>,
    /// System gid, if given.
    pub gid: Option<u32>,
    /// Home directory (may be empty).
    pub home: String,
    /// Extra fields, as written (`key=value` or bare keys).
    pub extra: Vec<String>,
}

/// Why a line of the passwd file was skipped. Never holds the line's text,
/// which may contain a clear-text password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("passwd file line {line}: {reason}")]
pub struct PasswdLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Characters a user name may not contain. A leading `#` would turn the
/// line into a comment for the reader, so it is refused too.
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.starts_with('#')
        && name.chars().all(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, ':' | '/' | '\\'))
}

/// Why a [`PasswdEntry`] cannot be written as a passwd-file line. Never holds
/// the offending value (it may be a clear-text password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {field} field cannot be stored in a passwd file: {reason}")]
pub struct UnrepresentableField {
    /// Which field (`name`, `password`, `home`, `extra`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The passwd-file format has no escaping: `:` separates fields, a line ends
/// at LF, and a trailing CR is dropped. A field holding any of them (or any
/// other control character, which no tool shows honestly) would be read back
/// as something else, e.g. a second user line.
fn check_plain_field(field: &'static str, value: &str) -> Result<(), UnrepresentableField> {
    if value.contains(':') {
        return Err(UnrepresentableField { field, reason: "contains ':'" });
    }
    if value.chars().any(char::is_control) {
        return Err(UnrepresentableField { field, reason: "contains a control character (CR, LF, NUL, ...)" });
    }
    Ok(())
}

impl PasswdEntry {
    /// The per-user mail location override (`userdb_mail=` or `mail=` extra field).
    pub fn mail_override(&self) -> Option<&str> {
        self.extra
            .iter()
            .find_map(|f| f.strip_prefix("userdb_mail=").or_else(|| f.strip_prefix("mail=")))
    }

    /// Formats the entry as one passwd-file line (without newline). The
    /// line is guaranteed to parse back ([`parse_passwd`]) to an entry equal
    /// to `self`; anything that could not is refused.
    ///
    /// # Errors
    /// [`UnrepresentableField`] naming the first field that cannot be written.
    pub fn to_line(&self) -> Result<String, UnrepresentableField> {
        self.check_representable()?;
        let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        Ok(format!(
            "{}:{}:{}:{}::{}::{}",
            self.name,
            self.password.as_ref().map(StoredPassword::to_field).unwrap_or_default(),
            opt(self.uid),
            opt(self.gid),
            self.home,
            self.extra.join(" ")
        ))
    }

    /// Checks every field against the format (see [`PasswdEntry::to_line`]).
    ///
    /// # Errors
    /// [`UnrepresentableField`] naming the first bad field.
    pub fn check_representable(&self) -> Result<(), UnrepresentableField> {
        if !valid_user_name(&self.name) {
            return Err(UnrepresentableField {
                field: "name",
                reason: "empty, too long, starts with '.' or '#', or contains ':', '/', '\\', white space or a control character",
            });
        }
        if let Some(password) = &self.password {
            let field = password.to_field();
            check_plain_field("password", &field)?;
            if StoredPassword::parse(&field).as_ref() != Some(password) {
                return Err(UnrepresentableField { field: "password", reason: "would be read back differently" });
            }
        }
        check_plain_field("home", &self.home)?;
        for extra in &self.extra {
            if extra.is_empty() || extra.chars().any(char::is_whitespace) {
                return Err(UnrepresentableField { field: "extra", reason: "empty or contains white space" });
            }
            if extra.chars().any(char::is_control) {
                return Err(UnrepresentableField { field: "extra", reason: "contains a control character (CR, LF, NUL, ...)" });
            }
        }
        Ok(())
    }

    /// Checks that `name` is usable as a login name in a passwd file.
    ///
    /// # Errors
    /// [`AuthError::InvalidUserName`].
    pub fn check_name(name: &str) -> Result<(), AuthError> {
        if valid_user_name(name) {
            Ok(())
        } else {
            Err(AuthError::InvalidUserName(name.to_string()))
        }
    }
}

fn parse_line(line: &str, number: usize) -> Result<PasswdEntry, PasswdLineError> {
    let err = |reason| PasswdLineError { line: number, reason };
    let fields: Vec<&str> = line.split(':').collect();
    let name = fields[0];
    if !valid_user_name(name) {
        return Err(err("invalid user name"));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    let number_field = |i: usize, what| -> Result<Option<u32>, PasswdLineError> {
        let v = field(i);
        if v.is_empty() {
            Ok(None)
        } else {
            v.parse().map(Some).map_err(|_| err(what))
        }
    };
    let password_field = field(1);
    let password = if password_field.is_empty() {
        None
    } else {
        Some(StoredPassword::parse(password_field).ok_or_else(|| err("unknown password scheme"))?)
    };
    Ok(PasswdEntry {
        name: name.to_string(),
        password,
        uid: number_field(2, "uid is not a number")?,
        gid: number_field(3, "gid is not a number")?,
        home: field(5).to_string(),
        extra: if fields.len() > 7 {
            fields[7..].join(":").split_whitespace().map(str::to_string).collect()
        } else {
            Vec::new()
        },
    })
}

/// Parses a whole passwd file. Bad lines are skipped and reported.
pub fn parse_passwd(text: &str) -> (Vec<PasswdEntry>, Vec<PasswdLineError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match parse_line(line, i + 1) {
            Ok(e) => entries.push(e),
            Err(e) => errors.push(e),
        }
    }
    (entries, errors)
}

/// Adds `entry` to the passwd file at `path` (creating it with mode 0600),
/// by writing a new file and renaming it over the old one, so readers see
/// either the old or the new file, never half a line.
///
/// # Errors
/// [`AuthError::UserExists`] if the name is taken, [`AuthError::Unrepresentable`]
/// if a field cannot be written in the format, [`AuthError::Io`] otherwise.
pub fn add_user(path: &Path, entry: &PasswdEntry) -> Result<(), AuthError> {
    PasswdEntry::check_name(&entry.name)?;
    let line = entry.to_line()?;
    let io = |source| AuthError::Io { path: path.to_path_buf(), source };
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let (entries, _) = parse_passwd(&old);
    if entries.iter().any(|e| e.name == entry.name) {
        return Err(AuthError::UserExists(entry.name.clone()));
    }
    let mut text = old;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Private like every directory dormouse creates, whatever the umask.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordScheme;

    #[test]
    fn parses_dovecot_lines() {
        let text = "# comment\n\nu1:{PLAIN}pass:65534:65534::/home/u1::\r\n\
                    u2:{CRYPT}$2y$05$EFYJHMDrFJWogJlXBEMqY.Q8YbOdPS.ZcOzGDMfFSRFdjAzUH9/he\n\
                    u3::::::: userdb_mail=maildir:/m/u3 quota=1G\n\
                    bad name:x\nu4:{MD5}abc\nu5:{PLAIN}x:notanumber\n";
        let (entries, errors) = parse_passwd(text);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(entries[0].name, "u1");
        assert_eq!(entries[0].uid, Some(65534));
        assert_eq!(entries[0].home, "/home/u1");
        assert!(entries[0].password.as_ref().unwrap().verify(b"pass"));
        assert_eq!(entries[1].password.as_ref().unwrap().scheme(), PasswordScheme::BlfCrypt);
        assert!(entries[1].password.as_ref().unwrap().verify(b"pass"));
        assert_eq!(entries[2].password, None);
        assert_eq!(entries[2].mail_override(), Some("maildir:/m/u3"));
        assert_eq!(entries[2].extra, vec!["userdb_mail=maildir:/m/u3", "quota=1G"]);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![6, 7, 8]);
        assert!(!errors.iter().any(|e| e.to_string().contains("abc")));
    }

    #[test]
    fn add_user_round_trips_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/passwd");
        let entry = PasswdEntry {
            name: "alice".into(),
            password: Some(StoredPassword::hash(PasswordScheme::Plain, "pw").unwrap()),
            uid: Some(1000),
            gid: Some(100),
            home: "/h/alice".into(),
            extra: vec![],
        };
        add_user(&path, &entry).unwrap();
        assert!(matches!(add_user(&path, &entry), Err(AuthError::UserExists(_))));
        let bob = PasswdEntry { name: "bob".into(), password: None, ..entry.clone() };
        add_user(&path, &bob).unwrap();
        let (entries, errors) = parse_passwd(&std::fs::read_to_string(&path).unwrap());
        assert!(errors.is_empty());
        assert_eq!(entries, vec![entry, bob]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let bad = PasswdEntry { name: "a:b".into(), password: None, uid: None, gid: None, home: String::new(), extra: vec![] };
        assert!(matches!(add_user(&path, &bad), Err(AuthError::InvalidUserName(_))));
    }

    /// The attack from the issue: a password carrying a second user line.
    #[test]
    fn plain_password_with_newline_cannot_add_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let hostile = "p\nevil:{PLAIN}evilpw:0:0::/home/bob::";
        assert!(matches!(
            StoredPassword::hash(PasswordScheme::Plain, hostile),
            Err(crate::auth::HashError::Unrepresentable { .. })
        ));
        // Even a StoredPassword made some other way is refused at write time.
        let smuggled = StoredPassword::parse(&format!("{{PLAIN}}{hostile}")).unwrap();
        let entry = PasswdEntry {
            name: "bob".into(),
            password: Some(smuggled),
            uid: None,
            gid: None,
            home: "/home/bob".into(),
            extra: vec![],
        };
        assert!(matches!(add_user(&path, &entry), Err(AuthError::Unrepresentable(_))));
        assert!(!path.exists());
        // A hashing scheme stores the same password safely.
        let hashed = PasswdEntry { password: Some(StoredPassword::hash(PasswordScheme::Sha512Crypt, hostile).unwrap()), ..entry };
        add_user(&path, &hashed).unwrap();
        let (entries, errors) = parse_passwd(&std::fs::read_to_string(&path).unwrap());
        assert!(errors.is_empty());
        assert_eq!(entries.len(), 1);
        assert!(entries[0].password.as_ref().unwrap().verify(hostile.as_bytes()));
    }

    /// Property-style: for many random entries built from hostile characters,
    /// either the entry is refused or its line parses back to the same entry
    /// (and to exactly one entry).
    #[test]
    fn written_lines_parse_back_identically() {
        use rand::{Rng, SeedableRng};
        const BENIGN: &[char] = &['a', 'b', 'Z', '0', '9', '.', '=', '@', 'é', '-', '_'];
        const HOSTILE: &[char] = &[
            ':', '\n', '\r', '\0', '\t', ' ', '#', '{', '}', '$', '/', '\\', '\u{85}', '\u{2028}', '\u{a0}', '\u{7f}', '\u{1b}',
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let text = |rng: &mut rand::rngs::StdRng, max: usize| -> String {
            let n = rng.gen_range(0..=max);
            (0..n)
                .map(|_| {
                    if rng.gen_bool(0.06) {
                        HOSTILE[rng.gen_range(0..HOSTILE.len())]
                    } else {
                        BENIGN[rng.gen_range(0..BENIGN.len())]
                    }
                })
                .collect()
        };
        let (mut written, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let plain = text(&mut rng, 8);
            let password = match rng.gen_range(0..4) {
                0 => None,
                1 => StoredPassword::hash(PasswordScheme::Plain, &plain).ok(),
                // Bypasses the hashing checks, as a hand-made value would.
                2 => StoredPassword::parse(&format!("{{PLAIN}}{plain}")),
                _ => StoredPassword::parse(&format!("{{SHA512-CRYPT}}$6${plain}")),
            };
            let entry = PasswdEntry {
                name: text(&mut rng, 6),
                password,
                uid: rng.gen_bool(0.5).then(|| rng.gen()),
                gid: rng.gen_bool(0.5).then(|| rng.gen()),
                home: text(&mut rng, 6),
                extra: (0..rng.gen_range(0..3)).map(|_| text(&mut rng, 5)).collect(),
            };
            match entry.to_line() {
                Ok(line) => {
                    written += 1;
                    let (entries, errors) = parse_passwd(&format!("{line}\n"));
                    assert!(errors.is_empty(), "{line:?}");
                    assert_eq!(entries, vec![entry], "{line:?}");
                }
                Err(_) => refused += 1,
            }
        }
        assert!(written > 1000 && refused > 1000, "written {written}, refused {refused}");
    }

    #[test]
    fn hash_refuses_what_plain_cannot_store() {
        for bad in ["", "a:b", "a\rb", "a\0b", "tab\there", "\u{85}"] {
            assert!(StoredPassword::hash(PasswordScheme::Plain, bad).is_err(), "{bad:?}");
            if !bad.is_empty() {
                assert!(StoredPassword::hash(PasswordScheme::Sha512Crypt, bad).unwrap().verify(bad.as_bytes()));
            }
        }
        assert!(StoredPassword::hash(PasswordScheme::Plain, "ok pw ü{}").is_ok());
        let hash_name = PasswdEntry { name: "#root".into(), password: None, uid: None, gid: None, home: String::new(), extra: vec![] };
        assert!(hash_name.to_line().is_err(), "a '#' name would be read as a comment");
    }
}
