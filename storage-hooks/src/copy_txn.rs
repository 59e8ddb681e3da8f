//! COPY / MOVE into a mailbox as one transaction that survives `kill -9`:
//! the destination ends up with all copies or none of them.
//!
//! Steps, all under the destination's `dovecot-uidlist.lock` (so at most one
//! transaction per mailbox is in progress, and anything found under the
//! lock belongs to a dead process):
//!
//! 1. every copy is hard-linked (or copied and fsynced) to
//!    `tmp/dormouse-copy.<pid>.<n>.<i>`; `tmp/` is fsynced;
//! 2. the intent record `dormouse-copy` (lines `<tmp name>\t<new/ name>`)
//!    is written atomically and fsynced with the mailbox directory: this is
//!    the commit point;
//! 3. every copy is renamed from `tmp/` into `new/`, `new/` is fsynced and the
//!    intent record removed;
//! 4. the copies get their UIDs in one uidlist write (`LockedMailbox`).
//!
//! Recovery ([`recover`], run by every locked load): an intent record left
//! behind means step 3 was interrupted, so it is finished (copies still in
//! `tmp/` are renamed into `new/`; they get UIDs like any new file). Copies in
//! `tmp/` without an intent record were never committed and are removed
//! ([`remove_uncommitted`], when a mailbox is opened and before every copy).
//! A crash after step 3 leaves every copy in `new/`: all of them get UIDs.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::durable;
use crate::mailbox_dir::MailboxDir;
use crate::maildir_file::MaildirFileName;
use crate::{StoreError, SystemFlags};

/// The intent record of a committed, unfinished copy in the destination
/// mailbox directory.
pub const INTENT_FILE: &str = "dormouse-copy";
/// Prefix of uncommitted copies in `tmp/`.
const TMP_PREFIX: &str = "dormouse-copy.";
const INTENT_HEADER: &str = "DMCP 1";

static TXN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One copy of a transaction, in `tmp/` until [`CopyTxn::commit`].
#[derive(Debug)]
struct Staged {
    tmp_name: String,
    name: MaildirFileName,
}

/// A copy transaction into one mailbox. The caller holds the mailbox lock
/// (from [`crate::locked_mailbox::LockedMailbox::lock`]) for its whole life.
/// Dropped without [`CopyTxn::commit`], it removes its staged copies.
#[derive(Debug)]
pub struct CopyTxn<'a> {
    dir: &'a MailboxDir,
    id: String,
    staged: Vec<Staged>,
    committed: bool,
}

impl<'a> CopyTxn<'a> {
    /// Starts a transaction into `dir` (whose lock the caller holds).
    pub fn new(dir: &'a MailboxDir) -> Self {
        let id = format!("{}.{}", std::process::id(), TXN_COUNTER.fetch_add(1, Ordering::Relaxed));
        CopyTxn { dir, id, staged: Vec::new(), committed: false }
    }

    /// Stages a copy of `source` (step 1): a hard link when possible
    /// (keeps the mtime, i.e. INTERNALDATE), else a copy with the data
    /// fsynced and the mtime carried over. Returns the file name it will
    /// have in `new/`.
    ///
    /// # Errors
    /// I/O errors (nothing of this copy is left behind).
    pub fn stage(&mut self, source: &Path, vsize: u64, system: SystemFlags) -> Result<&MaildirFileName, StoreError> {
        let tmp_name = format!("{TMP_PREFIX}{}.{}", self.id, self.staged.len());
        let tmp = self.dir.path.join("tmp").join(&tmp_name);
        let name = self.dir.link_or_copy_to(source, &tmp, vsize, system)?;
        self.staged.push(Staged { tmp_name, name });
        if self.staged.len() == 2 {
            crash_point("copy-staging");
        }
        Ok(&self.staged[self.staged.len() - 1].name)
    }

    /// Number of staged copies.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// True if nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Commits (steps 2 and 3): after it returns every copy is in `new/`
    /// (durably); the caller then gives them UIDs. Returns their basenames in
    /// staging order. A crash anywhere in here is finished by [`recover`].
    ///
    /// # Errors
    /// I/O errors before the commit point leave nothing behind; after it,
    /// the copies are moved into `new/` by the next locked load.
    pub fn commit(mut self) -> Result<Vec<String>, StoreError> {
        let durability = self.dir.durability;
        durability.fsync_dir(&self.dir.path.join("tmp"))?;
        let mut intent = format!("{INTENT_HEADER}\n");
        for s in &self.staged {
            intent.push_str(&format!("{}\t{}\n", s.tmp_name, s.name.file_name(false)));
        }
        crash_point("copy-staged");
        let intent_path = self.dir.path.join(INTENT_FILE);
        durable::replace_file(&intent_path, intent.as_bytes(), durability.data())?;
        if let Err(e) = durability.fsync_dir(&self.dir.path) {
            // Not known to be committed: take the record back.
            let _ = std::fs::remove_file(&intent_path);
            return Err(e);
        }
        self.committed = true;
        crash_point("copy-committed");
        finish(self.dir, &intent)?;
        Ok(self.staged.iter().map(|s| s.name.basename.clone()).collect())
    }
}

impl Drop for CopyTxn<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for s in &self.staged {
            let _ = std::fs::remove_file(self.dir.path.join("tmp").join(&s.tmp_name));
        }
    }
}

/// Step 3 for the intent `text`: renames what is still in `tmp/` into
/// `new/`, fsyncs `new/`, removes the intent record.
fn finish(dir: &MailboxDir, text: &str) -> Result<(), StoreError> {
    let mut lines = text.lines();
    if lines.next() != Some(INTENT_HEADER) {
        return Err(StoreError::Corrupt { path: dir.path.join(INTENT_FILE), reason: "unknown copy intent format".into() });
    }
    let mut count = 0usize;
    for line in lines {
        let Some((tmp_name, final_name)) = line.split_once('\t') else { continue };
        // Only names we write: never a path out of the mailbox.
        if !tmp_name.starts_with(TMP_PREFIX) || tmp_name.contains('/') || final_name.contains('/') || final_name.is_empty() {
            continue;
        }
        let from = dir.path.join("tmp").join(tmp_name);
        let to: PathBuf = dir.path.join("new").join(final_name);
        crate::own_changes::record(&to, crate::own_changes::Change::Arrived);
        match std::fs::rename(&from, &to) {
            Ok(()) => count += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {} // moved before the crash
            Err(e) => return Err(StoreError::io(from, e)),
        }
        if count == 1 {
            crash_point("copy-first-renamed");
        }
    }
    dir.durability.fsync_dir(&dir.path.join("new"))?;
    crash_point("copy-renamed");
    let intent_path = dir.path.join(INTENT_FILE);
    match std::fs::remove_file(&intent_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(intent_path, e)),
    }
}

/// Finishes a copy whose process died after its commit point. Run under
/// the mailbox lock.
///
/// # Errors
/// I/O errors.
pub fn recover(dir: &MailboxDir) -> Result<(), StoreError> {
    let Some(data) = durable::read_optional(&dir.path.join(INTENT_FILE))? else { return Ok(()) };
    let text = String::from_utf8_lossy(&data);
    tracing::warn!(mailbox = %dir.path.display(), "finishing a COPY/MOVE interrupted after its commit point");
    finish(dir, &text)
}

/// Removes copies in `tmp/` of transactions that never reached their commit
/// point (their process died). Run under the mailbox lock, after
/// [`recover`]. Errors are logged.
pub fn remove_uncommitted(dir: &MailboxDir) {
    let tmp = dir.path.join("tmp");
    let Ok(rd) = std::fs::read_dir(&tmp) else { return };
    let mut removed = 0usize;
    for entry in rd.flatten() {
        if !entry.file_name().to_str().is_some_and(|n| n.starts_with(TMP_PREFIX)) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "removing an uncommitted copy failed"),
        }
    }
    if removed > 0 {
        tracing::warn!(mailbox = %dir.path.display(), removed, "removed copies of a COPY/MOVE that never committed");
    }
}

/// Test builds stop the process dead (no destructors, lock left behind, like
/// `kill -9`) at the step named by `DORMOUSE_TEST_CRASH_AT`.
#[cfg(test)]
pub(crate) fn crash_point(step: &str) {
    if std::env::var("DORMOUSE_TEST_CRASH_AT").is_ok_and(|s| s == step) {
        std::process::abort();
    }
}

/// No crash points outside tests.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn crash_point(_step: &str) {}

/// Writes the intent record text for `pairs` (for tests of recovery).
#[cfg(test)]
fn write_intent(dir: &MailboxDir, pairs: &[(String, String)]) {
    let mut text = format!("{INTENT_HEADER}\n");
    for (a, b) in pairs {
        text.push_str(&format!("{a}\t{b}\n"));
    }
    durable::replace_file(&dir.path.join(INTENT_FILE), text.as_bytes(), durable::Sync::Cache).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppendOptions, Hooks, UserStore};

    fn store_with_dest() -> (tempfile::TempDir, UserStore, MailboxDir) {
        let d = tempfile::tempdir().unwrap();
        let store = UserStore::open("u", d.path(), Hooks::new()).unwrap();
        store.create_mailbox("Dest").unwrap();
        let dir = store.mailbox_dir("Dest").unwrap();
        (d, store, dir)
    }

    #[test]
    fn committed_intent_is_finished_and_uncommitted_copies_removed() {
        let (d, store, dir) = store_with_dest();
        let src = d.path().join("src");
        std::fs::write(&src, b"Subject: a\r\n\r\nx\r\n").unwrap();
        // Crash after the commit point, one of two copies already renamed.
        let names: Vec<String> = (0..2).map(|i| format!("{i}.M1P1.host,S=17,W=17")).collect();
        std::fs::hard_link(&src, dir.path.join("tmp/dormouse-copy.1.0.0")).unwrap();
        std::fs::hard_link(&src, dir.path.join("new").join(&names[1])).unwrap();
        write_intent(&dir, &[("dormouse-copy.1.0.0".into(), names[0].clone()), ("dormouse-copy.1.0.1".into(), names[1].clone())]);
        assert_eq!(store.open_mailbox("Dest").unwrap().messages().len(), 2);
        assert!(!dir.path.join(INTENT_FILE).exists());
        // Crash before the commit point: staged copies without intent go.
        std::fs::hard_link(&src, dir.path.join("tmp/dormouse-copy.2.0.0")).unwrap();
        assert_eq!(store.open_mailbox("Dest").unwrap().messages().len(), 2);
        assert!(std::fs::read_dir(dir.path.join("tmp")).unwrap().next().is_none());
        // A normal copy still works and lands complete.
        store.append("INBOX", b"Subject: b\r\n\r\ny\r\n", &AppendOptions::default()).unwrap();
        let inbox = store.open_mailbox("INBOX").unwrap();
        let r = inbox.copy_to(&crate::UidSet::from_range(1, 1), "Dest").unwrap();
        assert_eq!(r.target_uids, vec![3]);
        assert!(std::fs::read_dir(dir.path.join("tmp")).unwrap().next().is_none());
    }
}
