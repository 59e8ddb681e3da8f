//! MOVE's second half survives `kill -9`: once the copies are committed in
//! the destination (see `copy_txn`), the originals are expunged from the
//! source even if the moving process dies before it gets to it.
//!
//! Before the copy's commit point the mover writes, in the *source* mailbox
//! directory, a move record `dormouse-move.<pid>.<n>`:
//!
//! ```text
//! DMMV 1
//! .Dest
//! <source basename>\t<destination basename>
//! ```
//!
//! (the destination directory relative to the Maildir root, `.` for INBOX),
//! and removes it once the source messages are expunged. A record whose
//! process is dead is finished by the next locked load of the source
//! ([`recover`]): if any of its destination files exists (in `new/`,
//! `cur/`, or in the destination's unfinished copy intent), the copy was
//! committed and the source files are removed (the load then reports them
//! expunged); otherwise the copy never committed and the source is kept.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::durable;
use crate::mailbox_dir::MailboxDir;
use crate::StoreError;

/// File name prefix of move records in a source mailbox directory.
pub const RECORD_PREFIX: &str = "dormouse-move.";
const RECORD_HEADER: &str = "DMMV 1";

static RECORD_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes the move record for `pairs` (source basename, destination
/// basename) of a move from `source` into `dest` and makes it durable.
/// Returns its path, for [`done`].
///
/// # Errors
/// I/O errors (the record is not left behind).
pub fn write(source: &MailboxDir, dest: &MailboxDir, pairs: &[(String, String)]) -> Result<PathBuf, StoreError> {
    let rel = match dest.path.strip_prefix(&dest.root) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(_) => return Err(StoreError::NotAllowed("move target outside the user's Maildir".into())),
    };
    let mut text = format!("{RECORD_HEADER}\n{rel}\n");
    for (from, to) in pairs {
        text.push_str(&format!("{from}\t{to}\n"));
    }
    let name = format!("{RECORD_PREFIX}{}.{}", std::process::id(), RECORD_COUNTER.fetch_add(1, Ordering::Relaxed));
    let path = source.path.join(name);
    durable::replace_file(&path, text.as_bytes(), source.durability.data())?;
    if let Err(e) = source.durability.fsync_dir(&source.path) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Removes a move record once the source messages are expunged (or the
/// copy failed before its commit point). Errors are logged: a leftover
/// record is finished harmlessly by [`recover`].
pub fn done(record: &Path) {
    match std::fs::remove_file(record) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %record.display(), error = %e, "removing a move record failed"),
    }
}

/// Finishes the move records of dead processes in `dir` (the source).
/// Run under the source's lock, before its listing is read.
///
/// # Errors
/// I/O errors.
pub fn recover(dir: &MailboxDir) -> Result<(), StoreError> {
    let Ok(rd) = std::fs::read_dir(&dir.path) else { return Ok(()) };
    for entry in rd.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(RECORD_PREFIX)) else { continue };
        if rest.contains(".dormouse-tmp.") {
            continue; // a torn write, removed with the other temps
        }
        let Some(pid) = rest.split_once('.').and_then(|(p, _)| p.parse::<i32>().ok()) else { continue };
        if crate::dotlock::pid_alive(pid) {
            continue; // its mover is still at it (or is this process)
        }
        let Some(data) = durable::read_optional(&entry.path())? else { continue };
        finish(dir, &entry.path(), &String::from_utf8_lossy(&data))?;
    }
    Ok(())
}

fn finish(dir: &MailboxDir, record: &Path, text: &str) -> Result<(), StoreError> {
    let mut lines = text.lines();
    let (Some(RECORD_HEADER), Some(rel)) = (lines.next(), lines.next()) else {
        tracing::error!(path = %record.display(), "unreadable move record left alone");
        return Ok(());
    };
    let pairs: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once('\t'))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !a.contains('/') && !b.contains('/'))
        .collect();
    // Only a mailbox of this user: `.` or one `.Name` directory.
    let dest = match rel {
        "." => dir.root.clone(),
        r if r.starts_with('.') && !r.contains('/') && r != ".." => dir.root.join(r),
        _ => {
            tracing::error!(path = %record.display(), "move record names no mailbox of this user; left alone");
            return Ok(());
        }
    };
    if committed(&dest, &pairs) {
        let listing = dir.scan()?;
        let mut removed = 0usize;
        for (from, _) in &pairs {
            let Some(e) = listing.get(*from) else { continue };
            let path = dir.file_path(e.in_new, &e.file_name);
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(StoreError::io(path, err)),
            }
        }
        for sub in ["cur", "new"] {
            dir.durability.fsync_dir(&dir.path.join(sub))?;
        }
        tracing::warn!(mailbox = %dir.path.display(), removed, "finished a MOVE interrupted after its copy committed");
    } else {
        tracing::warn!(mailbox = %dir.path.display(), "a MOVE interrupted before its copy committed: the messages stay");
    }
    std::fs::remove_file(record).map_err(|e| StoreError::io(record, e))?;
    dir.durability.fsync_dir(&dir.path)
}

/// True if any destination file of `pairs` is in `dest` (in `new/`, `cur/`
/// or its unfinished copy intent).
fn committed(dest: &Path, pairs: &[(&str, &str)]) -> bool {
    let intent = std::fs::read_to_string(dest.join(crate::copy_txn::INTENT_FILE)).unwrap_or_default();
    if pairs.iter().any(|(_, to)| intent.contains(to)) {
        return true;
    }
    let wanted: std::collections::HashSet<&str> = pairs.iter().map(|(_, to)| *to).collect();
    ["new", "cur"].iter().any(|sub| {
        std::fs::read_dir(dest.join(sub)).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_str().and_then(crate::maildir_file::MaildirFileName::basename_of).is_some_and(|b| wanted.contains(b))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::Durability;
    use crate::mailbox_name::MailboxName;

    fn mailbox(root: &Path, name: &str) -> MailboxDir {
        let name = if name == "INBOX" { MailboxName::inbox() } else { MailboxName::parse(name).unwrap() };
        let dir = MailboxDir::new(root, name, "host", Durability::NoFsync);
        std::fs::create_dir_all(&dir.path).unwrap();
        dir.require().unwrap();
        dir
    }

    /// A record as a dead process would have left it (pid 0 never names one).
    fn dead_record(source: &MailboxDir, rel: &str, pairs: &[(&str, &str)]) -> PathBuf {
        let mut text = format!("{RECORD_HEADER}\n{rel}\n");
        for (a, b) in pairs {
            text.push_str(&format!("{a}\t{b}\n"));
        }
        let path = source.path.join(format!("{RECORD_PREFIX}999999999.0"));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn committed_moves_lose_their_source_uncommitted_ones_keep_it() {
        let root = tempfile::tempdir().unwrap();
        let inbox = mailbox(root.path(), "INBOX");
        let dest = mailbox(root.path(), "Dest");
        std::fs::write(inbox.path.join("cur/src1:2,S"), b"x").unwrap();
        std::fs::write(inbox.path.join("new/src2"), b"y").unwrap();
        // Committed: a destination file is there (renamed into cur/ since).
        std::fs::write(dest.path.join("cur/dst1:2,S"), b"x").unwrap();
        let record = dead_record(&inbox, ".Dest", &[("src1", "dst1"), ("src2", "dst2")]);
        recover(&inbox).unwrap();
        assert!(!record.exists());
        assert!(!inbox.path.join("cur/src1:2,S").exists() && !inbox.path.join("new/src2").exists());

        // Not committed: nothing in the destination, the source stays.
        std::fs::write(inbox.path.join("cur/src3:2,"), b"z").unwrap();
        let record = dead_record(&inbox, ".Dest", &[("src3", "dst3")]);
        recover(&inbox).unwrap();
        assert!(!record.exists());
        assert!(inbox.path.join("cur/src3:2,").exists());

        // Committed but unfinished: only the destination's intent names it.
        std::fs::write(dest.path.join(crate::copy_txn::INTENT_FILE), "DMCP 1\ndormouse-copy.1.0.0\tdst3\n").unwrap();
        dead_record(&inbox, ".Dest", &[("src3", "dst3")]);
        recover(&inbox).unwrap();
        assert!(!inbox.path.join("cur/src3:2,").exists());

        // A live mover's record (this process) is left alone; so is one
        // naming a directory outside the user's Maildir.
        std::fs::write(inbox.path.join("cur/src4:2,"), b"w").unwrap();
        let live = write(&inbox, &dest, &[("src4".into(), "dst1".into())]).unwrap();
        let outside = dead_record(&inbox, "../../etc", &[("src4", "dst1")]);
        recover(&inbox).unwrap();
        assert!(live.exists() && outside.exists());
        assert!(inbox.path.join("cur/src4:2,").exists());
        done(&live);
        assert!(!live.exists());
    }
}
