//! One user's Maildir++ store: mailbox-level operations and delivery.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::append_queue::{self, Appended, PendingAppend};
use crate::dotlock::{DotLock, DotLockOptions};
use crate::durable::Durability;
use crate::event::{EventKind, MailboxEvent, MessageSummary};
use crate::locked_mailbox::{fresh_status, Committed, LockedMailbox, UIDLIST_FILE};
use crate::mailbox_dir::{to_crlf, MailboxDir};
use crate::incoming::IncomingMessage;
use crate::mailbox_name::MailboxName;
use crate::maildir_file::MaildirFileName;
use crate::message::{AppendKind, AppendOptions, AppendResult, MailboxInfo};
use crate::uidlist::UidList;
use crate::{durable, subscriptions, summary, uidvalidity, Flags, Hooks, Mailbox, MailboxStatus, StoreError, UidSet};

/// Lock serializing our own mailbox create/delete/rename at the root.
const LIST_LOCK_TARGET: &str = "dormouse-mailboxes";

/// A user's mail store rooted at their Maildir (INBOX at the root, folders
/// as `.Name` directories). Cheap to clone; holds no open files. Safe to use
/// from several processes at once: shared files are guarded by dot-locks.
#[derive(Debug, Clone)]
pub struct UserStore {
    user: String,
    root: PathBuf,
    hooks: Hooks,
    host: String,
    durability: Durability,
}

/// Refuses keywords that are not IMAP atoms (they would corrupt `dovecot-keywords`).
pub(crate) fn check_keywords(flags: &Flags) -> Result<(), StoreError> {
    if flags.keywords.iter().all(|k| crate::flags::is_valid_keyword(k)) {
        Ok(())
    } else {
        Err(StoreError::InvalidMessage("invalid keyword"))
    }
}

fn create_dir_if_missing(path: &Path) -> Result<(), StoreError> {
    match durable::create_dir_private(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

impl UserStore {
    /// Opens (creating `cur/ new/ tmp/` if missing) the Maildir at `root` for `user`.
    ///
    /// # Errors
    /// I/O errors creating the directories.
    pub fn open(user: &str, root: impl Into<PathBuf>, hooks: Hooks) -> Result<Self, StoreError> {
        let root = root.into();
        durable::create_dir_all_private(&root).map_err(|e| StoreError::io(&root, e))?;
        for sub in ["cur", "new", "tmp"] {
            create_dir_if_missing(&root.join(sub))?;
        }
        Ok(UserStore { user: user.to_string(), root, hooks, host: crate::dotlock::hostname(), durability: Durability::Fsync })
    }

    /// The same store with another fsync policy (default: [`Durability::Fsync`]).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The fsync policy.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The user's login name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The Maildir root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The hooks this store calls.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The directory of mailbox `name` (validated; may not exist).
    pub(crate) fn mailbox_dir(&self, name: &str) -> Result<MailboxDir, StoreError> {
        Ok(MailboxDir::new(&self.root, MailboxName::parse(name)?, &self.host, self.durability))
    }

    /// The directory holding mailbox `name` on disk (the root for INBOX),
    /// e.g. for a filesystem watcher.
    ///
    /// # Errors
    /// `InvalidMailboxName`.
    pub fn mailbox_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        Ok(self.mailbox_dir(name)?.path)
    }

    /// True if mailbox `name` exists.
    pub fn mailbox_exists(&self, name: &str) -> bool {
        self.mailbox_dir(name).is_ok_and(|d| d.exists())
    }

    fn event(&self, kind: EventKind, mailbox: &str, status: MailboxStatus, modseq_before: u64) -> MailboxEvent {
        MailboxEvent {
            kind,
            user: self.user.clone(),
            mailbox: mailbox.to_string(),
            old_mailbox: None,
            uidvalidity: status.uidvalidity,
            uids: UidSet::new(),
            flags: Flags::default(),
            status,
            modseq_before,
            modseq_after: status.highestmodseq,
            summary: None,
            timestamp_ms: durable::now_ms(),
        }
    }

    fn list_lock(&self) -> Result<DotLock, StoreError> {
        DotLock::acquire(&self.root.join(LIST_LOCK_TARGET), DotLockOptions::default())
    }

    /// Names of all existing folders (not INBOX), from the root's `.Name` directories.
    fn folder_names(&self) -> Result<Vec<MailboxName>, StoreError> {
        let rd = std::fs::read_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StoreError::io(&self.root, e))?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Some(name) = MailboxName::from_dir_name(&file_name) else { continue };
            if entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Lists all mailboxes (INBOX first), with subscription state.
    ///
    /// A folder whose parent was deleted (Maildir++ keeps `.a.b` when `.a`
    /// is deleted, as Dovecot does) is listed, and so is its missing parent,
    /// with `selectable: false`.
    ///
    /// # Errors
    /// I/O errors reading the Maildir root.
    pub fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>, StoreError> {
        let subscribed: std::collections::HashSet<String> = subscriptions::read(&self.root)?.into_iter().collect();
        let folders = self.folder_names()?;
        let existing: HashSet<&MailboxName> = folders.iter().collect();
        // Parents without a directory of their own, listed as not selectable.
        let mut missing: Vec<MailboxName> = folders
            .iter()
            .flat_map(|n| n.ancestors())
            .filter(|a| !a.is_inbox() && !existing.contains(a))
            .collect();
        missing.sort();
        missing.dedup();
        let mut names: Vec<(MailboxName, bool)> = folders.iter().cloned().map(|n| (n, true)).collect();
        names.extend(missing.into_iter().map(|n| (n, false)));
        names.sort();
        names.insert(0, (MailboxName::inbox(), true));
        Ok(names
            .iter()
            .map(|(n, selectable)| MailboxInfo {
                name: n.to_string(),
                special_use: crate::special_use::stored(&self.root.join(n.dir_name()))
                    .or_else(|| n.special_use()),
                has_children: names.iter().any(|(c, _)| c.is_descendant_of(n)),
                subscribed: subscribed.contains(n.as_str()),
                selectable: *selectable,
            })
            .collect())
    }

    /// Creates one folder directory atomically (built under a temp name,
    /// then renamed into place without replacing anything).
    fn create_folder(&self, dir: &MailboxDir) -> Result<MailboxStatus, StoreError> {
        let tmp = self.root.join(format!("..dormouse-new.{}.{:08x}", std::process::id(), rand::random::<u32>()));
        let build = || -> Result<(), StoreError> {
            durable::create_dir_private(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
            for sub in ["cur", "new", "tmp"] {
                durable::create_dir_private(&tmp.join(sub)).map_err(|e| StoreError::io(tmp.join(sub), e))?;
            }
            durable::replace_file(&tmp.join("maildirfolder"), b"", durable::Sync::Data)?;
            let uidlist = UidList::new(uidvalidity::allocate(&self.root)?);
            durable::replace_file(&tmp.join(UIDLIST_FILE), uidlist.serialize().as_bytes(), durable::Sync::Data)?;
            durable::fsync_dir(&tmp)?;
            durable::rename_dir_noreplace(&tmp, &dir.path).map_err(|e| match e {
                rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY => StoreError::MailboxExists(dir.name.to_string()),
                e => StoreError::io(&dir.path, e.into()),
            })
        };
        if let Err(e) = build() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        durable::fsync_dir(&self.root)?;
        Ok(LockedMailbox::load(dir, &[])?.commit()?.status)
    }

    /// Creates missing ancestors of `name` (each emitting `MailboxCreate`).
    fn create_ancestors(&self, name: &MailboxName) -> Result<(), StoreError> {
        for parent in name.ancestors() {
            let dir = MailboxDir::new(&self.root, parent, &self.host, self.durability);
            if dir.name.is_inbox() || dir.exists() {
                continue;
            }
            match self.create_folder(&dir) {
                Ok(status) => self.hooks.emit(&self.event(EventKind::MailboxCreate, dir.name.as_str(), status, 0)),
                Err(StoreError::MailboxExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates a mailbox (and missing parents). Emits `MailboxCreate`.
    ///
    /// # Errors
    /// `MailboxExists`, `InvalidMailboxName`, I/O.
    pub fn create_mailbox(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.mailbox_dir(name)?;
        if dir.name.is_inbox() || dir.exists() {
            return Err(StoreError::MailboxExists(dir.name.to_string()));
        }
        let _lock = self.list_lock()?;
        self.create_ancestors(&dir.name)?;
        let status = self.create_folder(&dir)?;
        self.hooks.emit(&self.event(EventKind::MailboxCreate, dir.name.as_str(), status, 0));
        Ok(())
    }

    /// Deletes a mailbox and its messages. Emits `MailboxDelete`.
    ///
    /// Like Dovecot's Maildir++ layout, children are not touched: `.a.b`
    /// stays when `a` is deleted.
    ///
    /// # Errors
    /// `NoSuchMailbox`, `NotAllowed` for INBOX, I/O.
    pub fn delete_mailbox(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.mailbox_dir(name)?;
        if dir.name.is_inbox() {
            return Err(StoreError::NotAllowed("INBOX cannot be deleted".into()));
        }
        let _lock = self.list_lock()?;
        if !dir.exists() {
            return Err(StoreError::NoSuchMailbox(dir.name.to_string()));
        }
        let last_status = fresh_status(&dir).unwrap_or_default();
        let uidvalidity = durable::read_optional(&dir.path.join(UIDLIST_FILE))?
            .and_then(|d| UidList::parse(&String::from_utf8_lossy(&d)).ok())
            .map_or(last_status.uidvalidity, |l| l.uidvalidity);
        // Rename out of sight first (atomic for readers), then remove.
        let trash = self.root.join(format!("..dormouse-deleted.{}.{:08x}", std::process::id(), rand::random::<u32>()));
        std::fs::rename(&dir.path, &trash).map_err(|e| StoreError::io(&dir.path, e))?;
        durable::fsync_dir(&self.root)?;
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "removing deleted mailbox directory failed");
        }
        let status = MailboxStatus { uidvalidity, highestmodseq: last_status.highestmodseq, ..Default::default() };
        self.hooks.emit(&self.event(EventKind::MailboxDelete, dir.name.as_str(), status, last_status.highestmodseq));
        Ok(())
    }

    /// Renames a mailbox and its children. Emits `MailboxRename`.
    /// Renaming INBOX moves its messages to a new mailbox, per RFC 3501.
    ///
    /// Renamed folders keep their UIDVALIDITY and UIDs (the directory moves
    /// with its uidlist). Renaming INBOX creates `to` with a new UIDVALIDITY,
    /// moves every message into it (UIDs in the old order) and leaves INBOX
    /// empty; it emits `MailboxRename` (old `INBOX`) and `MessageExpunge` on INBOX.
    ///
    /// # Errors
    /// `NoSuchMailbox`, `MailboxExists`, `InvalidMailboxName`, I/O.
    pub fn rename_mailbox(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let from_dir = self.mailbox_dir(from)?;
        let to_dir = self.mailbox_dir(to)?;
        if to_dir.name.is_inbox() || to_dir.exists() || from_dir.name == to_dir.name {
            return Err(StoreError::MailboxExists(to_dir.name.to_string()));
        }
        if to_dir.name.is_descendant_of(&from_dir.name) {
            return Err(StoreError::NotAllowed(format!("cannot move {} below itself", from_dir.name)));
        }
        let _lock = self.list_lock()?;
        if !from_dir.exists() {
            return Err(StoreError::NoSuchMailbox(from_dir.name.to_string()));
        }
        if from_dir.name.is_inbox() {
            return self.rename_inbox(&from_dir, &to_dir);
        }
        let children: Vec<(MailboxName, MailboxName)> = self
            .folder_names()?
            .into_iter()
            .filter_map(|c| c.reparent(&from_dir.name, &to_dir.name).map(|n| (c, n)))
            .collect();
        for (_, new) in &children {
            if MailboxDir::new(&self.root, new.clone(), &self.host, self.durability).exists() {
                return Err(StoreError::MailboxExists(new.to_string()));
            }
        }
        self.create_ancestors(&to_dir.name)?;
        let mut renamed = vec![(from_dir.name.clone(), to_dir.name.clone())];
        renamed.extend(children);
        for (old, new) in &renamed {
            let old_path = MailboxDir::new(&self.root, old.clone(), &self.host, self.durability).path;
            let new_path = MailboxDir::new(&self.root, new.clone(), &self.host, self.durability).path;
            durable::rename_dir_noreplace(&old_path, &new_path)
                .map_err(|e| match e {
                    rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY => StoreError::MailboxExists(new.to_string()),
                    e => StoreError::io(&old_path, e.into()),
                })?;
        }
        durable::fsync_dir(&self.root)?;
        for (old, new) in &renamed {
            let status = self.status(new.as_str()).unwrap_or_default();
            let mut ev = self.event(EventKind::MailboxRename, new.as_str(), status, status.highestmodseq);
            ev.old_mailbox = Some(old.to_string());
            self.hooks.emit(&ev);
        }
        Ok(())
    }

    fn rename_inbox(&self, inbox: &MailboxDir, to_dir: &MailboxDir) -> Result<(), StoreError> {
        self.create_ancestors(&to_dir.name)?;
        self.create_folder(to_dir)?;
        // The target must map keyword letters like INBOX does.
        if let Some(kw) = durable::read_optional(&inbox.path.join(crate::locked_mailbox::KEYWORDS_FILE))? {
            durable::replace_file(&to_dir.path.join(crate::locked_mailbox::KEYWORDS_FILE), &kw, self.durability.data())?;
            self.durability.fsync_dir(&to_dir.path)?;
        }
        let mut locked = LockedMailbox::load(inbox, &[])?;
        let before = locked.base_modseq;
        let mut moved = Vec::new();
        let mut moved_uids = UidSet::new();
        for msg in locked.messages() {
            let from = inbox.file_path(msg.entry.in_new, &msg.entry.file_name);
            let to = to_dir.file_path(msg.entry.in_new, &msg.entry.file_name);
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    moved.push((msg.basename.clone(), msg.flags.clone()));
                    moved_uids.insert(msg.uid);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(from, e)),
            }
        }
        self.durability.fsync_dir(&to_dir.path.join("new"))?;
        self.durability.fsync_dir(&to_dir.path.join("cur"))?;
        // The files are gone from INBOX: the expunge drops their records.
        locked.expunge(&moved_uids)?;
        let committed = locked.commit()?;
        self.publish_outside_changes(inbox, &committed);
        let inbox_status = committed.status;
        let (_, _, status) = self.add_files_quiet(to_dir, &moved, None)?;
        let mut ev = self.event(EventKind::MailboxRename, to_dir.name.as_str(), status, 0);
        ev.old_mailbox = Some("INBOX".into());
        self.hooks.emit(&ev);
        if !moved_uids.is_empty() {
            let mut ev = self.event(EventKind::MessageExpunge, "INBOX", inbox_status, before);
            ev.uids = moved_uids;
            self.hooks.emit(&ev);
        }
        Ok(())
    }

    /// Every subscribed name (UTF-8, `/`-separated) in subscription order,
    /// also those of mailboxes that do not exist (any more).
    ///
    /// # Errors
    /// I/O reading the `subscriptions` file.
    pub fn subscribed_names(&self) -> Result<Vec<String>, StoreError> {
        subscriptions::read(&self.root)
    }

    /// Subscribes a mailbox (Dovecot's `subscriptions` file). Emits `MailboxSubscribe`.
    ///
    /// # Errors
    /// `InvalidMailboxName`, I/O.
    pub fn subscribe(&self, name: &str) -> Result<(), StoreError> {
        self.set_subscribed(name, true)
    }

    /// Unsubscribes a mailbox. Emits `MailboxUnsubscribe`.
    ///
    /// # Errors
    /// I/O.
    pub fn unsubscribe(&self, name: &str) -> Result<(), StoreError> {
        self.set_subscribed(name, false)
    }

    fn set_subscribed(&self, name: &str, subscribe: bool) -> Result<(), StoreError> {
        let name = MailboxName::parse(name)?;
        if !subscriptions::update(&self.root, name.as_str(), subscribe)? {
            return Ok(());
        }
        let status = if self.mailbox_exists(name.as_str()) { self.status(name.as_str())? } else { MailboxStatus::default() };
        let kind = if subscribe { EventKind::MailboxSubscribe } else { EventKind::MailboxUnsubscribe };
        self.hooks.emit(&self.event(kind, name.as_str(), status, status.highestmodseq));
        Ok(())
    }

    /// The mailbox's status record, read without scanning the Maildir
    /// (rebuilt by a scan only if the record is missing or stale).
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O.
    pub fn status(&self, mailbox: &str) -> Result<MailboxStatus, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        if let Some(status) = fresh_status(&dir) {
            return Ok(status);
        }
        let committed = crate::locked_mailbox::read_current(&dir, false)?;
        self.publish_outside_changes(&dir, &committed);
        Ok(committed.status)
    }

    /// Opens a mailbox: syncs the Maildir with the uidlist (new files get
    /// UIDs) and returns a snapshot. Emits nothing (our own index writes).
    ///
    /// # Errors
    /// `NoSuchMailbox`, I/O, `LockTimeout`.
    pub fn open_mailbox(&self, name: &str) -> Result<Mailbox, StoreError> {
        let dir = self.mailbox_dir(name)?;
        Mailbox::open(self.clone(), dir)
    }

    /// Adds a message durably (tmp/, fsync, rename, dir fsync, uidlist) and
    /// emits `MessageNew` or `MessageAppend` per `opts.kind`. Bare LF line
    /// endings are stored as CRLF.
    ///
    /// Concurrent appends to one mailbox from threads of this process are
    /// group-committed (one lock hold and one round of fsyncs for all that
    /// queued meanwhile; see `append_queue`); each still gets its own event.
    /// Messages of one batch share one new MODSEQ.
    ///
    /// # Errors
    /// `NoSuchMailbox`, `InvalidMessage` (empty), I/O, `LockTimeout`.
    pub fn append(&self, mailbox: &str, raw: &[u8], opts: &AppendOptions) -> Result<AppendResult, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        dir.require()?;
        if raw.is_empty() {
            return Err(StoreError::InvalidMessage("empty message"));
        }
        check_keywords(&opts.flags)?;
        let mut flags = opts.flags.clone();
        flags.normalize();
        let data = to_crlf(raw.to_vec());
        let summary = summary::summarize(&data);
        let basename = dir.new_message_basename(data.len() as u64);
        append_queue::register_in_flight(&dir.path, &basename);
        let name = match dir.write_message(basename.clone(), &data, flags.system, opts.internal_date) {
            Ok(name) => name,
            Err(e) => {
                append_queue::unregister_in_flight(&dir.path, &basename);
                return Err(e);
            }
        };
        self.commit_new_file(&dir, name, flags, opts.kind, summary)
    }

    /// Commits an [`IncomingMessage`] (written to `tmp/` while it arrived)
    /// into `mailbox` exactly like [`UserStore::append`]: the file is
    /// fsynced and renamed into `new/`, then gets its UID through the same
    /// group commit, and the same event is emitted. The message may have
    /// been created in another mailbox of this store (e.g. INBOX for an
    /// APPEND to a folder); it is moved, not copied.
    ///
    /// On `NoSuchMailbox` / `InvalidMailboxName` the message is untouched
    /// and can be committed elsewhere; after any other outcome its file is
    /// gone from `tmp/` (committed, or removed).
    ///
    /// # Errors
    /// `NoSuchMailbox`, `InvalidMessage` (empty, other store), I/O, `LockTimeout`.
    pub fn append_incoming(
        &self,
        mailbox: &str,
        message: &mut IncomingMessage,
        opts: &AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        let dir = self.mailbox_dir(mailbox)?;
        dir.require()?;
        if message.root() != self.root {
            return Err(StoreError::InvalidMessage("message was received for another store"));
        }
        if message.size() == 0 {
            return Err(StoreError::InvalidMessage("empty message"));
        }
        check_keywords(&opts.flags)?;
        let mut flags = opts.flags.clone();
        flags.normalize();
        let (tmp, head, size) = message.finish(opts.internal_date)?;
        let summary = summary::summarize(head);
        let basename = dir.new_message_basename(size);
        let name = MaildirFileName { basename, system: flags.system, keyword_indexes: Vec::new() };
        let target = dir.file_path(true, &name.file_name(false));
        append_queue::register_in_flight(&dir.path, &name.basename);
        // Our own arrival: this process's watcher leaves it to the commit.
        crate::own_changes::record(&target, crate::own_changes::Change::Arrived);
        if let Err(e) = std::fs::rename(tmp, &target) {
            append_queue::unregister_in_flight(&dir.path, &name.basename);
            return Err(StoreError::io(target, e));
        }
        message.committed();
        self.commit_new_file(&dir, name, flags, opts.kind, summary)
    }

    /// Gives a message file just renamed into `new/` (registered in flight)
    /// its UID through the group commit and emits its event; removes the
    /// file if the commit is refused.
    fn commit_new_file(
        &self,
        dir: &MailboxDir,
        name: MaildirFileName,
        flags: Flags,
        kind: AppendKind,
        summary: MessageSummary,
    ) -> Result<AppendResult, StoreError> {
        let kind = match kind {
            AppendKind::Delivery => EventKind::MessageNew,
            AppendKind::Append => EventKind::MessageAppend,
        };
        // The event is built by whichever thread commits the batch, through
        // this store's hooks.
        let (store, mailbox, event_flags) = (self.clone(), dir.name.to_string(), flags.clone());
        let emit = Box::new(move |a: &Appended| {
            let mut ev = store.event(kind, &mailbox, a.status, a.modseq_before);
            ev.uids = UidSet::from_range(a.uid, a.uid);
            ev.flags = event_flags.clone();
            ev.summary = Some(summary.clone());
            store.hooks.emit(&ev);
        });
        let (store, outside_dir) = (self.clone(), dir.clone());
        let publish_outside = Box::new(move |committed: &Committed| {
            store.publish_outside_changes(&outside_dir, committed);
        });
        let file_name = name.file_name(false);
        let pending = PendingAppend { basename: name.basename, flags, emit, publish_outside };
        let appended = append_queue::append(dir, pending).inspect_err(|_| {
            // Refused (NO / 4xx): the sender retries, so the file must not
            // stay and get a UID later (a failed commit already removed it).
            let path = dir.file_path(true, &file_name);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed the file of a refused append"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(path = %path.display(), error = %e, "removing the file of a refused append"),
            }
        })?;
        Ok(AppendResult { uidvalidity: appended.uidvalidity, uid: appended.uid })
    }

    /// Assigns UIDs to files this process just put into `dir/new/`, gives
    /// them their keywords, commits, and emits one `kind` event.
    pub(crate) fn add_files(
        &self,
        dir: &MailboxDir,
        own: &[(String, Flags)],
        kind: EventKind,
        summary: Option<MessageSummary>,
        lock: Option<DotLock>,
    ) -> Result<(u32, Vec<u32>), StoreError> {
        let (before, uids, status) = self.add_files_quiet(dir, own, lock)?;
        let mut ev = self.event(kind, dir.name.as_str(), status, before);
        ev.uids = uids.iter().copied().collect();
        ev.flags = own.iter().fold(Flags::default(), |acc, (_, f)| acc.union(f));
        ev.summary = summary;
        self.hooks.emit(&ev);
        Ok((status.uidvalidity, uids))
    }

    /// [`UserStore::add_files`] without the event; returns HIGHESTMODSEQ
    /// before, the UIDs and the status after. `lock` is the mailbox lock if
    /// the caller already holds it.
    fn add_files_quiet(
        &self,
        dir: &MailboxDir,
        own: &[(String, Flags)],
        lock: Option<DotLock>,
    ) -> Result<(u64, Vec<u32>, MailboxStatus), StoreError> {
        let basenames: Vec<String> = own.iter().map(|(b, _)| b.clone()).collect();
        let mut locked = match lock {
            Some(lock) => LockedMailbox::load_locked(dir, &basenames, lock)?,
            None => LockedMailbox::load(dir, &basenames)?,
        };
        let before = locked.base_modseq;
        let wanted: HashSet<&str> = basenames.iter().map(String::as_str).collect();
        let positions: HashMap<&str, usize> = locked
            .messages()
            .iter()
            .enumerate()
            .filter(|(_, m)| wanted.contains(m.basename.as_str()))
            .map(|(i, m)| (m.basename.as_str(), i))
            .collect();
        let positions: HashMap<String, usize> = positions.into_iter().map(|(b, i)| (b.to_string(), i)).collect();
        let mut uids = Vec::with_capacity(own.len());
        for (basename, flags) in own {
            let Some(&idx) = positions.get(basename) else {
                // Numbered by another process and expunged again already:
                // it was stored, under that UID.
                let uid = locked.vanished_own_uid(basename).ok_or_else(|| StoreError::Corrupt {
                    path: dir.path.join("new").join(basename),
                    reason: "a message written just now vanished before it got a UID".into(),
                })?;
                uids.push(uid);
                continue;
            };
            if locked.messages()[idx].flags != *flags {
                locked.set_flags(idx, flags)?;
            }
            uids.push(locked.messages()[idx].uid);
        }
        let committed = locked.commit()?;
        self.publish_outside_changes(dir, &committed);
        Ok((before, uids, committed.status))
    }
}
