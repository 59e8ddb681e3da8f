//! Brings a cached load state (see `load_cache`) up to date with the disk
//! for [`crate::locked_mailbox::LockedMailbox::load`], reading as little as
//! possible:
//! - `dovecot-uidlist`: unchanged identity → nothing read; the same file
//!   grown (same inode, its old last bytes still in place) → only the
//!   appended records are read and parsed (Dovecot and we append new UIDs;
//!   a rewrite is a rename and gets a new inode); anything else → full read.
//! - `dormouse-index` and its log: snapshot unchanged and the log unchanged
//!   → nothing read; log grown → only its new records are read and replayed
//!   onto the cached state; snapshot changed (a compaction) → full read.
//! - `new/`, `cur/`: each directory whose listing is not trusted any more
//!   (see `load_cache::settled`) is listed again; names already known keep
//!   their parsed entries.

use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::index_file::{IndexRecord, INDEX_FILE};
use crate::index_log::INDEX_LOG_FILE;
use crate::load_cache::{dir_id, settled, Cached, CachedFile, DirState, FileId};
use crate::locked_mailbox::UIDLIST_FILE;
use crate::mailbox_dir::{Listing, MailboxDir};
use crate::uidlist::{UidList, UidListError};
use crate::StoreError;

/// What the uidlist read found.
#[derive(Debug)]
pub enum UidlistRead {
    /// No file.
    Missing,
    /// Parsed; `appendable` as in `UidList::parse_appendable`.
    Parsed {
        /// The list.
        list: UidList,
        /// Whether records can be appended to the file as it is.
        appendable: bool,
    },
    /// The header is unusable.
    Unreadable(UidListError),
}

/// Everything a load reads, current as of now.
#[derive(Debug)]
pub struct Inputs {
    /// The uidlist.
    pub uidlist: UidlistRead,
    /// Index snapshot plus replayed log (`None`: no usable snapshot).
    pub index: Option<IndexRecord>,
    /// Length of an intact log (0: none), `None` if damaged.
    pub index_log_len: Option<u64>,
    /// Files of `new/` and `cur/` by basename.
    pub listing: Listing,
    /// State of `new/` for `listing`.
    pub new_dir: DirState,
    /// State of `cur/` for `listing`.
    pub cur_dir: DirState,
    /// Both directories were brought up to date from their change logs
    /// (`dir_events`), not listed: a file missing from `listing` is gone
    /// (no readdir that could miss a file renamed meanwhile).
    pub exact: bool,
}

/// Reads what changed since `cached` (everything without it).
///
/// # Errors
/// I/O errors other than missing files.
/// With `watch`, `new/` and `cur/` are watched for the next load (see
/// `dir_events`; not for read-only loads, which leave no cache entry).
pub fn read(dir: &MailboxDir, cached: Option<Cached>, watch: bool) -> Result<Inputs, StoreError> {
    let (uidlist_cached, index_cached, listing_cached) = match cached {
        Some(c) => (
            Some((c.uidlist, c.uidlist_file, c.uidlist_appendable)),
            Some((c.index, c.index_file, c.index_log_file, c.index_log_len)),
            Some((c.listing, c.new_dir, c.cur_dir)),
        ),
        None => (None, None, None),
    };
    let uidlist = read_uidlist(&dir.path.join(UIDLIST_FILE), uidlist_cached)?;
    let (index, index_log_len) = read_index(&dir.path, index_cached)?;
    let (listing, new_dir, cur_dir, exact) = read_listing(dir, listing_cached, watch)?;
    Ok(Inputs { uidlist, index, index_log_len, listing, new_dir, cur_dir, exact })
}

/// Identity of the file at `path`; `None` if missing.
pub fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The bytes appended to `path` since it was `cached`: `Some` only if it is
/// the same file (inode) grown, with the bytes it ended in still in place.
///
/// # Errors
/// I/O errors other than a missing file.
pub fn appended(path: &Path, cached: &CachedFile) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(path, e))?;
    let old_len = cached.id.1;
    if meta.ino() != cached.id.0 || meta.size() <= old_len || (cached.tail.len() as u64) > old_len {
        return Ok(None);
    }
    let start = old_len - cached.tail.len() as u64;
    let mut bytes = vec![0; (meta.size() - start) as usize];
    file.read_exact_at(&mut bytes, start).map_err(|e| StoreError::io(path, e))?;
    if !bytes.starts_with(&cached.tail) {
        return Ok(None);
    }
    bytes.drain(..cached.tail.len());
    Ok(Some(bytes))
}

fn read_uidlist(path: &Path, cached: Option<(UidList, CachedFile, bool)>) -> Result<UidlistRead, StoreError> {
    if let Some((mut list, file, appendable)) = cached {
        match file_id(path) {
            None => return Ok(UidlistRead::Missing),
            Some(id) if id == file.id => return Ok(UidlistRead::Parsed { list, appendable }),
            Some(_) if appendable => {
                if let Some(bytes) = appended(path, &file)? {
                    if list.append_records(&String::from_utf8_lossy(&bytes)) {
                        return Ok(UidlistRead::Parsed { list, appendable: true });
                    }
                }
            }
            Some(_) => {}
        }
    }
    let Some(data) = crate::durable::read_optional(path)? else {
        return Ok(UidlistRead::Missing);
    };
    Ok(match UidList::parse_appendable(&String::from_utf8_lossy(&data)) {
        Ok((list, appendable)) => UidlistRead::Parsed { list, appendable },
        Err(e) => UidlistRead::Unreadable(e),
    })
}

type IndexCached = (Option<IndexRecord>, Option<FileId>, Option<CachedFile>, Option<u64>);

fn read_index(dir: &Path, cached: Option<IndexCached>) -> Result<(Option<IndexRecord>, Option<u64>), StoreError> {
    let log_path = dir.join(INDEX_LOG_FILE);
    if let Some((Some(mut index), Some(snapshot), log, log_len)) = cached {
        if file_id(&dir.join(INDEX_FILE)) == Some(snapshot) {
            let log_now = file_id(&log_path);
            match (log, log_now) {
                (None, None) => return Ok((Some(index), log_len)),
                (Some(f), Some(now)) if f.id == now => return Ok((Some(index), log_len)),
                // Grown: replay only the new records.
                (Some(f), Some(_)) if log_len == Some(f.id.1) => {
                    if let Some(bytes) = appended(&log_path, &f)? {
                        let parsed = crate::index_log::parse_records(&bytes);
                        crate::index_log::replay(&mut index, parsed.records);
                        return Ok((Some(index), parsed.intact.then_some(f.id.1 + bytes.len() as u64)));
                    }
                }
                // Started since: it is short, read it whole.
                (None, Some(_)) if log_len == Some(0) => {
                    if let Some(bytes) = crate::durable::read_optional(&log_path)? {
                        let parsed = crate::index_log::parse(&bytes);
                        crate::index_log::replay(&mut index, parsed.records);
                        return Ok((Some(index), parsed.intact.then_some(bytes.len() as u64)));
                    }
                }
                _ => {}
            }
        }
    }
    crate::index_log::load(dir)
}

type ListingCached = (Listing, DirState, DirState);

type ListingRead = (Listing, DirState, DirState, bool);

fn read_listing(dir: &MailboxDir, cached: Option<ListingCached>, watch: bool) -> Result<ListingRead, StoreError> {
    // Identities, time and change-log tokens before listing: a change
    // while listing moves the mtime past what is recorded here and is in
    // the log after the token, so the next load sees it.
    let now = crate::durable::now_ms();
    let (new_path, cur_path) = (dir.path.join("new"), dir.path.join("cur"));
    let new_id = dir_id(&new_path);
    let cur_id = dir_id(&cur_path);
    let (mut known, new_state, cur_state) = match cached {
        Some((listing, n, c)) => (listing, Some(n), Some(c)),
        None => (Listing::default(), None, None),
    };
    let catch_up = |path: &Path, state: Option<DirState>| {
        if watch {
            crate::dir_events::catch_up(path, state.and_then(|s| s.events))
        } else {
            (None, None)
        }
    };
    let (new_changes, new_token) = catch_up(&new_path, new_state);
    let (cur_changes, cur_token) = catch_up(&cur_path, cur_state);
    // Exact changes since the cached listing (inotify), else the mtime rules.
    let mut exact = |changes: Option<Vec<_>>, in_new: bool| match changes {
        Some(changes) => {
            crate::dir_events::apply(&mut known, in_new, &changes);
            true
        }
        None => false,
    };
    let new_exact = exact(new_changes, true);
    let cur_exact = exact(cur_changes, false);
    let new_ok = new_exact || new_state.is_some_and(|n| n.trusted && Some(n.id) == new_id);
    let cur_ok = cur_exact || cur_state.is_some_and(|c| c.trusted && Some(c.id) == cur_id);
    let listing = if new_ok && cur_ok { known } else { dir.rescan(known, !new_ok, !cur_ok)? };
    let state = |ok: bool, id: Option<crate::load_cache::DirId>, events| DirState {
        id: id.unwrap_or_default(),
        trusted: ok || id.is_some_and(|id| settled(id, now)),
        events,
    };
    Ok((listing, state(new_ok, new_id, new_token), state(cur_ok, cur_id, cur_token), new_exact && cur_exact))
}

/// Most re-scans of one load while files it expects keep turning up.
const MAX_RESCANS: usize = 6;

/// Completes `listing` (of `dir`, just taken or brought up to date) so that
/// files that are expected (uidlist records, the
/// caller's own new files) are not missed: readdir does not report a file
/// that another program renames within the directory while it is being read
/// (Dovecot changing flags in `cur/` without our lock), so expected files
/// missing from one scan are looked for in further scans, and what any scan
/// found is kept (a later scan may miss other files). Re-scans stop when two
/// in a row find none of the missing files (really gone: expunged by
/// another program) or after [`MAX_RESCANS`].
///
/// # Errors
/// I/O errors reading the directories.
pub(crate) fn scan_expected(
    dir: &MailboxDir,
    uidlist: &UidList,
    own: &[String],
    mut listing: Listing,
    is_dead: &dyn Fn(u32) -> bool,
) -> Result<Listing, StoreError> {
    let mut fruitless = 0;
    for _ in 0..MAX_RESCANS {
        let missing: Vec<&String> = uidlist
            .records
            .iter()
            .filter(|r| !is_dead(r.uid))
            .map(|r| &r.basename)
            .chain(own)
            .filter(|b| !listing.contains_key(b.as_str()))
            .collect();
        if missing.is_empty() || fruitless == 2 {
            break;
        }
        let mut again = dir.scan()?;
        let mut found = 0;
        for b in missing {
            if let Some(entry) = again.remove(b.as_str()) {
                listing.insert(b.clone(), entry);
                found += 1;
            }
        }
        fruitless = if found == 0 { fruitless + 1 } else { 0 };
        tracing::debug!(mailbox = %dir.path.display(), found, "re-scanned for files missed by a concurrent rename");
    }
    Ok(listing)
}
