//! Changing the passwd file while servers read it and other `dormouse user`
//! commands change it too.
//!
//! Every edit is read-modify-write under an exclusive `flock` on a lock file
//! beside the passwd file (`<passwd>.lock`), so two edits at once cannot lose
//! each other's lines, and ends with a rename of a fully written temporary
//! file, so a reader sees the old or the new file, never half a line. Lines
//! the edit does not touch (comments, lines of other users, lines we cannot
//! parse) are kept byte for byte.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::passwd_file::{parse_line, PasswdEntry};
use super::{AuthError, StoredPassword};

/// Runs `edit` on the lines of the passwd file at `path` (empty if it does
/// not exist) under the edit lock and writes the result back if `edit`
/// returns `Ok`.
fn edit_passwd(path: &Path, edit: impl FnOnce(&mut Vec<String>) -> Result<(), AuthError>) -> Result<(), AuthError> {
    let io = |source| AuthError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Private like every directory dormouse creates, whatever the umask.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir).map_err(io)?;
    }
    let lock_path = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| AuthError::Io { path: lock_path.clone(), source })?;
    // Released when `lock` is closed, also if this process dies.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| AuthError::Io { path: lock_path.clone(), source: e.into() })?;
    let (old, mode) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
            (text, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o600),
        Err(e) => return Err(io(e)),
    };
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    edit(&mut lines)?;
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        // Keep a mode the admin chose (e.g. 0640 for a group-readable file);
        // `mode()` above is filtered by the umask, this is not.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// The index of `name`'s line, if a parseable line for it exists.
fn find_user(lines: &[String], name: &str) -> Option<(usize, PasswdEntry)> {
    lines.iter().enumerate().find_map(|(i, line)| {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            return None;
        }
        parse_line(line, i + 1).ok().filter(|e| e.name == name).map(|e| (i, e))
    })
}

/// Adds `entry` to the passwd file at `path` (creating it with mode 0600).
///
/// # Errors
/// [`AuthError::UserExists`] if the name is taken, [`AuthError::InvalidUserName`]
/// or [`AuthError::Unrepresentable`] if a field cannot be written in the
/// format, [`AuthError::Io`] otherwise.
pub fn add_user(path: &Path, entry: &PasswdEntry) -> Result<(), AuthError> {
    PasswdEntry::check_name(&entry.name)?;
    let line = entry.to_line()?;
    edit_passwd(path, |lines| {
        if find_user(lines, &entry.name).is_some() {
            return Err(AuthError::UserExists(entry.name.clone()));
        }
        lines.push(line);
        Ok(())
    })
}

/// Removes `name`'s line from the passwd file at `path`; returns the removed
/// entry (its home tells where the mail is, which stays).
///
/// # Errors
/// [`AuthError::UnknownUser`] if there is no such user, [`AuthError::Io`] if
/// the file cannot be read or written.
pub fn remove_user(path: &Path, name: &str) -> Result<PasswdEntry, AuthError> {
    let mut removed = None;
    edit_passwd(path, |lines| {
        let (i, entry) = find_user(lines, name).ok_or_else(|| AuthError::UnknownUser(name.to_string()))?;
        lines.remove(i);
        removed = Some(entry);
        Ok(())
    })?;
    Ok(removed.expect("set by the edit"))
}

/// Replaces `name`'s password in the passwd file at `path`, keeping every
/// other field of the line.
///
/// # Errors
/// [`AuthError::UnknownUser`] if there is no such user,
/// [`AuthError::Unrepresentable`] if the line cannot be written back
/// faithfully, [`AuthError::Io`] if the file cannot be read or written.
pub fn set_password(path: &Path, name: &str, password: StoredPassword) -> Result<(), AuthError> {
    edit_passwd(path, |lines| {
        let (i, entry) = find_user(lines, name).ok_or_else(|| AuthError::UnknownUser(name.to_string()))?;
        lines[i] = PasswdEntry { password: Some(password), ..entry }.to_line()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{parse_passwd, PasswordScheme};

    fn entry(name: &str) -> PasswdEntry {
        PasswdEntry {
            name: name.into(),
            password: Some(StoredPassword::hash(PasswordScheme::Plain, "pw").unwrap()),
            uid: Some(1000),
            gid: Some(100),
            home: format!("/h/{name}"),
            extra: vec!["quota=1G".into()],
        }
    }

    #[test]
    fn remove_and_set_password_keep_every_other_line_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let foreign = "# admin's comment\ncarol:{CRYPT}$2y$05$EFYJHMDrFJWogJlXBEMqY.Q8YbOdPS.ZcOzGDMfFSRFdjAzUH9/he:::x:/h/c::\nnot a user line";
        std::fs::write(&path, format!("{foreign}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        add_user(&path, &entry("alice")).unwrap();
        add_user(&path, &entry("bob")).unwrap();
        set_password(&path, "alice", StoredPassword::hash(PasswordScheme::Sha512Crypt, "new").unwrap()).unwrap();
        let removed = remove_user(&path, "bob").unwrap();
        assert_eq!(removed.home, "/h/bob");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{foreign}\nalice:{{SHA512-CRYPT}}")), "{text}");
        let (entries, _) = parse_passwd(&text);
        let alice = entries.iter().find(|e| e.name == "alice").unwrap();
        assert!(alice.password.as_ref().unwrap().verify(b"new"));
        assert_eq!((alice.uid, alice.gid, alice.home.as_str(), alice.extra.clone()), (Some(1000), Some(100), "/h/alice", vec!["quota=1G".to_string()]));
        assert!(!entries.iter().any(|e| e.name == "bob"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(matches!(remove_user(&path, "bob"), Err(AuthError::UnknownUser(_))));
        assert!(matches!(set_password(&path, "nobody", alice.password.clone().unwrap()), Err(AuthError::UnknownUser(_))));
    }

    /// Without the lock, each writer read the same old file and the last
    /// rename won: most entries were lost.
    #[test]
    fn concurrent_adds_from_many_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::thread::scope(|s| {
            for t in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..25 {
                        add_user(path, &entry(&format!("u{t}-{i}"))).unwrap();
                    }
                });
            }
        });
        let (entries, errors) = parse_passwd(&std::fs::read_to_string(&path).unwrap());
        assert!(errors.is_empty());
        assert_eq!(entries.len(), 200);
    }
}
