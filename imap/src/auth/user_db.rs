//! The user database: a passwd file kept in memory, re-read when it changes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::passwd_file::{parse_passwd, PasswdEntry};
use super::{AuthError, MailLocation, StoredPassword};

/// What the rest of dormouse needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// System uid from the passwd file, if any.
    pub uid: Option<u32>,
    /// System gid from the passwd file, if any.
    pub gid: Option<u32>,
    /// Home directory (may be empty).
    pub home: String,
    /// The user's Maildir root (INBOX).
    pub maildir: PathBuf,
    /// Extra fields from the passwd file.
    pub extra: Vec<String>,
}

/// Identity of a file version: a change of any part means "re-read".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            size: meta.size(),
            inode: meta.ino(),
        }
    }
}

#[derive(Debug, Default)]
struct Loaded {
    stamp: Option<FileStamp>,
    users: HashMap<String, (UserRecord, Option<StoredPassword>)>,
}

/// Users from a Dovecot-format passwd file. Thread-safe; every lookup checks
/// the file's mtime/size/inode (one `stat`) and re-reads it when it changed,
/// so adding a user needs no restart. If a re-read fails, the previous
/// contents stay in use and a warning is logged.
#[derive(Debug)]
pub struct UserDb {
    path: PathBuf,
    location: MailLocation,
    loaded: Mutex<Loaded>,
}

impl UserDb {
    /// Loads the passwd file at `path`; Maildirs are placed by `location`.
    ///
    /// # Errors
    /// [`AuthError::Io`] if the file cannot be read.
    pub fn open(path: impl Into<PathBuf>, location: MailLocation) -> Result<Self, AuthError> {
        let db = UserDb { path: path.into(), location, loaded: Mutex::new(Loaded::default()) };
        {
            let mut loaded = db.lock();
            db.reload(&mut loaded)?;
        }
        Ok(db)
    }

    /// The passwd file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload(&self, loaded: &mut Loaded) -> Result<(), AuthError> {
        let io = |source| AuthError::Io { path: self.path.clone(), source };
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        let stamp = FileStamp::of(&meta);
        if loaded.stamp == Some(stamp) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(io)?;
        let (entries, errors) = parse_passwd(&text);
        for e in &errors {
            tracing::warn!(file = %self.path.display(), line = e.line, reason = e.reason, "skipping passwd line");
        }
        let mut users = HashMap::with_capacity(entries.len());
        for entry in entries {
            match self.record(&entry) {
                Ok(record) => {
                    users.entry(entry.name.clone()).or_insert((record, entry.password));
                }
                Err(e) => tracing::warn!(file = %self.path.display(), user = %entry.name, error = %e, "skipping user"),
            }
        }
        tracing::debug!(file = %self.path.display(), users = users.len(), "loaded passwd file");
        loaded.users = users;
        loaded.stamp = Some(stamp);
        Ok(())
    }

    fn record(&self, entry: &PasswdEntry) -> Result<UserRecord, AuthError> {
        let maildir = match entry.mail_override() {
            Some(template) => MailLocation::parse(template)?.expand(&entry.name, &entry.home)?,
            None => self.location.expand(&entry.name, &entry.home)?,
        };
        Ok(UserRecord {
            name: entry.name.clone(),
            uid: entry.uid,
            gid: entry.gid,
            home: entry.home.clone(),
            maildir,
            extra: entry.extra.clone(),
        })
    }

    fn refreshed(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut loaded = self.lock();
        if let Err(e) = self.reload(&mut loaded) {
            tracing::warn!(error = %e, "cannot re-read passwd file; keeping the users loaded before");
        }
        loaded
    }

    /// Finds a user by exact login name.
    pub fn lookup(&self, name: &str) -> Option<UserRecord> {
        self.refreshed().users.get(name).map(|(r, _)| r.clone())
    }

    /// All user names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.refreshed().users.keys().cloned().collect();
        names.sort();
        names
    }

    /// Checks a login. CPU-heavy for the crypt schemes: call it from a
    /// blocking thread. Never logs the password.
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`], [`AuthError::NoPassword`] (login disabled),
    /// [`AuthError::WrongPassword`].
    pub fn verify(&self, name: &str, password: &[u8]) -> Result<UserRecord, AuthError> {
        let Some((record, stored)) = self.refreshed().users.get(name).cloned() else {
            // Spend the time a real check would, so response times do not
            // tell which user names exist.
            let _ = dummy_password().verify(password);
            return Err(AuthError::UnknownUser(name.to_string()));
        };
        let stored = stored.ok_or_else(|| AuthError::NoPassword(name.to_string()))?;
        if stored.verify(password) {
            Ok(record)
        } else {
            Err(AuthError::WrongPassword(name.to_string()))
        }
    }
}

/// A fixed ARGON2ID hash (default parameters) checked for unknown users.
fn dummy_password() -> &'static StoredPassword {
    static DUMMY: std::sync::OnceLock<StoredPassword> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        StoredPassword::hash(super::PasswordScheme::Argon2id, "dormouse-dummy-password")
            .unwrap_or_else(|_| StoredPassword::parse("{PLAIN}-").expect("a valid PLAIN field"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn lookup_verify_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        write(&path, "alice:{PLAIN}a-pw:1:1::/h/alice::\nnopw::::::\nnohome:{PLAIN}x\n");
        let db = UserDb::open(&path, MailLocation::parse("%h/Maildir").unwrap()).unwrap();
        let alice = db.lookup("alice").unwrap();
        assert_eq!(alice.maildir, PathBuf::from("/h/alice/Maildir"));
        assert_eq!(db.verify("alice", b"a-pw").unwrap(), alice);
        assert!(matches!(db.verify("alice", b"nope"), Err(AuthError::WrongPassword(_))));
        assert!(matches!(db.verify("bob", b"x"), Err(AuthError::UnknownUser(_))));
        // no home and %h in the template: skipped, like an unknown user.
        assert!(db.lookup("nohome").is_none());
        assert!(db.lookup("nopw").is_none());
        assert!(db.lookup("ALICE").is_none());

        write(&path, "alice:{PLAIN}a-pw:1:1::/h/alice::\nbob:{PLAIN}b:::::: userdb_mail=/m/%n\n");
        assert_eq!(db.lookup("bob").unwrap().maildir, PathBuf::from("/m/bob"));
        assert!(db.verify("bob", b"b").is_ok());
        assert_eq!(db.names(), vec!["alice".to_string(), "bob".to_string()]);

        // A vanished file keeps the last good contents.
        std::fs::remove_file(&path).unwrap();
        assert!(db.lookup("bob").is_some());
    }

    #[test]
    fn disabled_login_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        assert!(matches!(
            UserDb::open(&path, MailLocation::parse("/m/%u").unwrap()),
            Err(AuthError::Io { .. })
        ));
        write(&path, "nopw::::::\n");
        let db = UserDb::open(&path, MailLocation::parse("/m/%u").unwrap()).unwrap();
        assert!(db.lookup("nopw").is_some());
        assert!(matches!(db.verify("nopw", b""), Err(AuthError::NoPassword(_))));
    }
}
