//! The folders of one user as the watcher last saw them, and the mailbox
//! events (create, delete, rename) that a change of that set means.

use std::collections::BTreeMap;

use crate::event::{EventKind, MailboxEvent};
use crate::mailbox_name::MailboxName;
use crate::{durable, Flags, MailboxStatus, StoreError, UidSet, UserStore};

/// Folder name (UTF-8, `/`-separated) → UIDVALIDITY, for every folder
/// directory at the Maildir root (INBOX excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FolderSet {
    pub(crate) folders: BTreeMap<String, u32>,
}

/// How the folder set changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FolderChanges {
    /// Folders that appeared (not renames).
    pub(crate) created: Vec<String>,
    /// Folders that went away (not renames).
    pub(crate) deleted: Vec<String>,
    /// `(old, new)` pairs: same UIDVALIDITY under another name.
    pub(crate) renamed: Vec<(String, String)>,
}

impl FolderChanges {
    /// Names that now exist and were not known before (created or rename targets).
    pub(crate) fn appeared(&self) -> impl Iterator<Item = &str> {
        self.created.iter().map(String::as_str).chain(self.renamed.iter().map(|(_, n)| n.as_str()))
    }

    /// Names known before that no longer exist.
    pub(crate) fn vanished(&self) -> impl Iterator<Item = &str> {
        self.deleted.iter().map(String::as_str).chain(self.renamed.iter().map(|(o, _)| o.as_str()))
    }

    /// True if nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.created.is_empty() && self.deleted.is_empty() && self.renamed.is_empty()
    }
}

/// UIDVALIDITY from a folder's `dovecot-uidlist` header, 0 if unreadable.
fn uidvalidity_of(path: &std::path::Path) -> u32 {
    let Ok(text) = std::fs::read_to_string(path.join(crate::locked_mailbox::UIDLIST_FILE)) else { return 0 };
    let header = text.lines().next().unwrap_or("");
    header.split(' ').find_map(|f| f.strip_prefix('V')).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl FolderSet {
    /// Reads the folder directories of `store` now.
    ///
    /// # Errors
    /// I/O errors reading the root.
    pub(crate) fn read(store: &UserStore) -> Result<Self, StoreError> {
        let root = store.root();
        let rd = std::fs::read_dir(root).map_err(|e| StoreError::io(root, e))?;
        let mut folders = BTreeMap::new();
        for entry in rd.flatten() {
            let Some(dir_name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Some(name) = MailboxName::from_dir_name(&dir_name) else { continue };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.insert(name.to_string(), uidvalidity_of(&entry.path()));
            }
        }
        Ok(FolderSet { folders })
    }

    /// Re-reads the UIDVALIDITY of `name` (after its uidlist was written).
    pub(crate) fn refresh(&mut self, store: &UserStore, name: &str) {
        if let (Some(uv), Ok(path)) = (self.folders.get_mut(name), store.mailbox_path(name)) {
            *uv = uidvalidity_of(&path);
        }
    }

    /// What changed from `self` to `now`. A folder that disappeared and one
    /// that appeared with the same (known, non-zero) UIDVALIDITY are a rename.
    pub(crate) fn diff(&self, now: &FolderSet) -> FolderChanges {
        let mut changes = FolderChanges::default();
        let mut gone: Vec<(&String, u32)> =
            self.folders.iter().filter(|(n, _)| !now.folders.contains_key(*n)).map(|(n, v)| (n, *v)).collect();
        for (name, &uv) in now.folders.iter().filter(|(n, _)| !self.folders.contains_key(*n)) {
            match gone.iter().position(|(_, v)| uv != 0 && *v == uv) {
                Some(i) => {
                    let (old, _) = gone.remove(i);
                    changes.renamed.push((old.clone(), name.clone()));
                }
                None => changes.created.push(name.clone()),
            }
        }
        changes.deleted = gone.into_iter().map(|(n, _)| n.clone()).collect();
        changes
    }
}

/// Emits the mailbox events for `changes` (leading to `new_set`) through
/// the store's hooks; returns how many.
pub(crate) fn emit_folder_events(store: &UserStore, new_set: &FolderSet, changes: &FolderChanges) -> usize {
    let event = |kind: EventKind, mailbox: &str, old: Option<&str>, status: MailboxStatus| MailboxEvent {
        kind,
        user: store.user().to_string(),
        mailbox: mailbox.to_string(),
        old_mailbox: old.map(str::to_string),
        uidvalidity: status.uidvalidity,
        uids: UidSet::new(),
        flags: Flags::default(),
        status,
        modseq_before: 0,
        modseq_after: status.highestmodseq,
        summary: None,
        timestamp_ms: durable::now_ms(),
    };
    let status_of = |name: &str| store.status(name).unwrap_or_default();
    let mut events = Vec::new();
    for name in &changes.created {
        // Not `status()`: its locked load would number messages already in
        // the folder silently; the reconcile after this event publishes them.
        let status = MailboxStatus { uidvalidity: new_set.folders.get(name).copied().unwrap_or(0), ..Default::default() };
        events.push(event(EventKind::MailboxCreate, name, None, status));
    }
    for (old, new) in &changes.renamed {
        events.push(event(EventKind::MailboxRename, new, Some(old), status_of(new)));
    }
    for name in &changes.deleted {
        events.push(event(EventKind::MailboxDelete, name, None, MailboxStatus::default()));
    }
    for ev in &events {
        store.hooks().emit(ev);
    }
    events.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> FolderSet {
        FolderSet { folders: items.iter().map(|(n, v)| (n.to_string(), *v)).collect() }
    }

    #[test]
    fn pairs_renames_by_uidvalidity() {
        let before = set(&[("A", 1), ("A/x", 2), ("B", 3)]);
        let after = set(&[("C", 1), ("C/x", 2), ("D", 4)]);
        let c = before.diff(&after);
        assert_eq!(c.renamed, [("A".to_string(), "C".to_string()), ("A/x".to_string(), "C/x".to_string())]);
        assert_eq!(c.created, ["D"]);
        assert_eq!(c.deleted, ["B"]);
        assert!(before.diff(&before).is_empty());
        // Unknown UIDVALIDITY never pairs.
        let c = set(&[("A", 0)]).diff(&set(&[("B", 0)]));
        assert_eq!((c.created.len(), c.deleted.len(), c.renamed.len()), (1, 1, 0));
    }
}
