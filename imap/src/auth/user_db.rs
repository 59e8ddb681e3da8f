//! The user database: a passwd file kept in memory, re-read when it changes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::passwd_file::{parse_passwd, PasswdEntry};
use super::verified_cache::VerifiedCache;
use super::{AuthError, CostKey, CostLimits, MailLocation, StoredPassword};

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
    /// The dearest work parameters among the file's (acceptable) hashes:
    /// what the dummy check for unknown users must cost, so that no
    /// account's failed login is slower than an unknown user's.
    dummy_cost: Option<CostKey>,
}

/// The work parameters used when the file has no usable hash: what
/// `dormouse user add` writes by default (Argon2id, the library defaults).
fn fallback_cost() -> CostKey {
    let params = argon2::Params::default();
    CostKey::Argon2 { id: true, m: params.m_cost(), t: params.t_cost(), p: params.p_cost() }
}

/// Users from a Dovecot-format passwd file. Thread-safe; every lookup checks
/// the file's mtime/size/inode (one `stat`) and re-reads it when it changed,
/// so adding a user needs no restart. If a re-read fails, the previous
/// contents stay in use and a warning is logged.
#[derive(Debug)]
pub struct UserDb {
    path: PathBuf,
    location: MailLocation,
    limits: CostLimits,
    loaded: Mutex<Loaded>,
    /// The dummy hash checked when the user is unknown (or has no usable
    /// hash), and after a wrong password for a cheaper hash; made for the
    /// file's dearest parameters, remade when they change.
    dummy: Mutex<Option<(CostKey, StoredPassword)>>,
    /// Logins verified within the last few minutes (off unless
    /// [`UserDb::with_verified_cache`] turned it on).
    verified: Option<VerifiedCache>,
}

impl UserDb {
    /// Loads the passwd file at `path`; Maildirs are placed by `location`.
    ///
    /// # Errors
    /// [`AuthError::Io`] if the file cannot be read.
    pub fn open(path: impl Into<PathBuf>, location: MailLocation) -> Result<Self, AuthError> {
        let db = UserDb {
            path: path.into(),
            location,
            limits: CostLimits::default(),
            loaded: Mutex::new(Loaded::default()),
            dummy: Mutex::new(None),
            verified: None,
        };
        {
            let mut loaded = db.lock();
            db.reload(&mut loaded)?;
        }
        Ok(db)
    }

    /// Uses `limits` for the hashes' cost parameters instead of the defaults.
    #[must_use]
    pub fn with_cost_limits(mut self, limits: CostLimits) -> Self {
        self.limits = limits;
        self.loaded.get_mut().unwrap_or_else(|e| e.into_inner()).stamp = None;
        {
            let mut loaded = self.lock();
            if let Err(e) = self.reload(&mut loaded) {
                tracing::warn!(error = %e, "cannot re-read passwd file");
            }
        }
        self
    }

    /// Remembers successful logins of hashes with a work factor for `ttl`
    /// (at most `max_users` users), so the same user and password log in
    /// again without a full verification; zero turns it off. See
    /// `verified_cache.rs` for what is kept (never the password).
    #[must_use]
    pub fn with_verified_cache(mut self, ttl: std::time::Duration, max_users: usize) -> Self {
        self.verified = VerifiedCache::new(ttl, max_users);
        self
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
        let costs: std::collections::HashSet<CostKey> = entries
            .iter()
            .filter_map(|e| e.password.as_ref())
            .filter(|p| p.check_cost(&self.limits).is_ok())
            .filter_map(StoredPassword::cost)
            .collect();
        // The dearest; ties broken by the key's text so every process picks the same.
        loaded.dummy_cost = costs
            .into_iter()
            .max_by(|a, b| a.work_estimate().cmp(&b.work_estimate()).then_with(|| format!("{a:?}").cmp(&format!("{b:?}"))));
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
        // One lock, one lookup, one hash check on every path: response
        // times must not tell which user names exist.
        let (found, dummy_cost) = {
            let loaded = self.refreshed();
            (loaded.users.get(name).cloned(), loaded.dummy_cost.unwrap_or_else(fallback_cost))
        };
        let dummy = self.dummy(dummy_cost);
        let Some((record, stored)) = found else {
            let _ = dummy.verify(password);
            return Err(AuthError::UnknownUser(name.to_string()));
        };
        let Some(stored) = stored else {
            let _ = dummy.verify(password);
            return Err(AuthError::NoPassword(name.to_string()));
        };
        if let Err(e) = stored.check_cost(&self.limits) {
            tracing::warn!(user = %name, error = %e, "refusing login: the stored password hash is over the configured cost limits ([auth] argon2_max_*, bcrypt_max_cost, sha_crypt_max_rounds)");
            let _ = dummy.verify(password);
            return Err(AuthError::CostExceeded(name.to_string()));
        }
        // Only hashes with a work factor are worth remembering.
        let cached = self.verified.as_ref().filter(|_| stored.cost().is_some());
        let now = std::time::Instant::now();
        if let Some(cache) = cached {
            if cache.holds(name, &stored.to_field(), password, now) {
                return Ok(record);
            }
        }
        if stored.verify(password) {
            if let Some(cache) = cached {
                cache.remember(name, &stored.to_field(), password, now);
            }
            Ok(record)
        } else {
            // A cheaper hash fails faster than an unknown user's dummy
            // check: pad with the dummy, so failures all take as long.
            if stored.cost() != Some(dummy_cost) {
                let _ = dummy.verify(password);
            }
            Err(AuthError::WrongPassword(name.to_string()))
        }
    }

    /// The dummy hash for `key`, made on first use (one hash's worth of CPU).
    fn dummy(&self, key: CostKey) -> StoredPassword {
        let guard = self.dummy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, d)) = guard.as_ref() {
            if *k == key {
                return d.clone();
            }
        }
        drop(guard);
        let made = StoredPassword::dummy_for(key)
            .or_else(|| StoredPassword::dummy_for(fallback_cost()))
            .unwrap_or_else(|| StoredPassword::parse("{PLAIN}-").expect("a valid PLAIN field"));
        *self.dummy.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, made.clone()));
        made
    }
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
    fn verified_cache_remembers_successes_only_and_forgets_a_changed_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let first = StoredPassword::hash(super::super::PasswordScheme::Sha512Crypt, "one").unwrap().to_field();
        write(&path, &format!("alice:{first}:1:1::/h/alice::\n"));
        let db = UserDb::open(&path, MailLocation::parse("%h/Maildir").unwrap())
            .unwrap()
            .with_verified_cache(std::time::Duration::from_secs(300), 100);
        assert!(matches!(db.verify("alice", b"two"), Err(AuthError::WrongPassword(_))));
        assert!(db.verified.as_ref().unwrap().is_empty(), "a failure is never remembered");
        db.verify("alice", b"one").unwrap();
        assert_eq!(db.verified.as_ref().unwrap().len(), 1);
        db.verify("alice", b"one").unwrap();
        assert!(matches!(db.verify("alice", b"two"), Err(AuthError::WrongPassword(_))));
        // `user passwd`: the remembered login no longer matches.
        let second = StoredPassword::hash(super::super::PasswordScheme::Sha512Crypt, "two").unwrap().to_field();
        write(&path, &format!("alice:{second}:1:1::/h/alice::\n"));
        assert!(matches!(db.verify("alice", b"one"), Err(AuthError::WrongPassword(_))));
        db.verify("alice", b"two").unwrap();
        // A deleted user is unknown, remembered or not.
        write(&path, "bob:{PLAIN}x:1:1::/h/bob::\n");
        assert!(matches!(db.verify("alice", b"two"), Err(AuthError::UnknownUser(_))));
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

    #[test]
    fn empty_plain_and_over_limit_hashes_never_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        write(
            &path,
            "empty:{PLAIN}:::::\nbig:{ARGON2ID}$argon2id$v=19$m=1048576,t=3,p=1$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4:::::\n\
             ok:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$uDc+6bJ9UTsDgdNNiCvE9g$za6gCLTRrcbMEf62QV0CjpAhy13EYx3WZl7kTjMM1z4:::::\n",
        );
        let db = UserDb::open(&path, MailLocation::parse("/m/%u").unwrap()).unwrap();
        assert!(db.verify("empty", b"").is_err());
        // Right password, but verifying would allocate 1 GiB: refused unverified.
        assert!(matches!(db.verify("big", b"pass"), Err(AuthError::CostExceeded(_))));
        assert!(db.verify("ok", b"pass").is_ok());
        let db = db.with_cost_limits(CostLimits { argon2_max_memory_kib: 1024, ..CostLimits::default() });
        assert!(matches!(db.verify("ok", b"pass"), Err(AuthError::CostExceeded(_))));
    }

    #[test]
    fn dummy_costs_as_much_as_the_files_dearest_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let sha = |pw| StoredPassword::hash(crate::auth::PasswordScheme::Sha512Crypt, pw).unwrap().to_field();
        // Mostly PLAIN: the one SHA512-CRYPT account still sets the dummy's cost.
        write(&path, &format!("a:{{PLAIN}}1:::::\nb:{}:::::\nc:{{PLAIN}}x:::::\n", sha("2")));
        let db = UserDb::open(&path, MailLocation::parse("/m/%u").unwrap()).unwrap();
        assert!(matches!(db.verify("nobody", b"x"), Err(AuthError::UnknownUser(_))));
        let dearest = db.lock().dummy_cost;
        assert_eq!(dearest, Some(CostKey::ShaCrypt { sha512: true, rounds: 5000 }));
        let dummy = db.dummy.lock().unwrap().clone().unwrap();
        assert_eq!(dummy.0, dearest.unwrap());
        assert_eq!(dummy.1.cost(), dearest);
        assert!(matches!(db.verify("a", b"wrong"), Err(AuthError::WrongPassword(_))));
        assert!(db.verify("a", b"1").is_ok());
    }

    #[test]
    fn work_estimates_order_the_schemes() {
        let sha512 = CostKey::ShaCrypt { sha512: true, rounds: 5000 };
        let argon = fallback_cost();
        assert!(CostKey::Plain.work_estimate() < sha512.work_estimate());
        assert!(CostKey::ShaCrypt { sha512: false, rounds: 5000 }.work_estimate() < sha512.work_estimate());
        assert!(sha512.work_estimate() < CostKey::Bcrypt(10).work_estimate());
        assert!(sha512.work_estimate() < argon.work_estimate());
    }
}
