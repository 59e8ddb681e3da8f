//! In-process group commit of appends to one mailbox.
//!
//! Every append writes and fsyncs its message file on its own thread, then
//! queues for a UID. The first queued thread becomes the *leader*: it takes
//! the mailbox lock once for everything queued so far, commits (one uidlist
//! and index write, one round of fsyncs), emits one event per message and
//! hands each waiting thread its result. Concurrent deliveries to one user
//! (LMTP with many connections) thus share lock holds and fsyncs instead of
//! queueing on the dot-lock one by one. A single append pays nothing extra.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use crate::locked_mailbox::{Committed, LockedMailbox};
use crate::mailbox_dir::MailboxDir;
use crate::{Flags, MailboxStatus, StoreError};

/// Emits the event of one committed append through the requester's hooks.
pub type EmitFn = Box<dyn Fn(&Appended) + Send>;

/// Publishes the outside changes the batch's load found, through the
/// requester's store (see `UserStore::publish_outside_changes`).
pub type PublishOutsideFn = Box<dyn Fn(&Committed) + Send>;

/// One message waiting for its UID.
pub struct PendingAppend {
    /// Basename of the file already in `new/`.
    pub basename: String,
    /// Its flags (keywords are applied under the lock).
    pub flags: Flags,
    /// Called by the batch leader once the batch is durable: the
    /// requester's own hooks, user and mailbox name travel with it.
    pub emit: EmitFn,
    /// Called by the batch leader (for the first append of the batch only)
    /// once the batch is durable, before any `emit`.
    pub publish_outside: PublishOutsideFn,
}

impl std::fmt::Debug for PendingAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAppend").field("basename", &self.basename).field("flags", &self.flags).finish()
    }
}

/// What a committed append reports back: UIDVALIDITY, UID, HIGHESTMODSEQ
/// before and status after the batch.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// The message's UID.
    pub uid: u32,
    /// HIGHESTMODSEQ before the batch.
    pub modseq_before: u64,
    /// Status after the batch.
    pub status: MailboxStatus,
}

#[derive(Default)]
struct Queue {
    /// Basenames of files this process is putting into `new/` for an
    /// append that has not been committed yet: loads leave them alone (they
    /// are not foreign deliveries), so the owning batch gives them their UID
    /// and MODSEQ and the event chain of this process stays unbroken.
    in_flight: HashSet<String>,
    next_ticket: u64,
    pending: Vec<(u64, PendingAppend)>,
    done: HashMap<u64, Result<Appended, StoreError>>,
    leader: bool,
}

struct Registry {
    queues: Mutex<HashMap<PathBuf, Queue>>,
    changed: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry { queues: Mutex::new(HashMap::new()), changed: Condvar::new() })
}

fn lock_queues() -> MutexGuard<'static, HashMap<PathBuf, Queue>> {
    registry().queues.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks `basename` as being written for an append into `mailbox_dir`.
pub fn register_in_flight(mailbox_dir: &std::path::Path, basename: &str) {
    lock_queues().entry(mailbox_dir.to_path_buf()).or_default().in_flight.insert(basename.to_string());
}

/// Drops the mark of [`register_in_flight`] (after a failed write).
pub fn unregister_in_flight(mailbox_dir: &std::path::Path, basename: &str) {
    let mut queues = lock_queues();
    if let Some(q) = queues.get_mut(mailbox_dir) {
        q.in_flight.remove(basename);
        if q.in_flight.is_empty() && q.pending.is_empty() && q.done.is_empty() && !q.leader {
            queues.remove(mailbox_dir);
        }
    }
}

/// Basenames in flight for `mailbox_dir` in this process.
pub fn in_flight(mailbox_dir: &std::path::Path) -> HashSet<String> {
    lock_queues().get(mailbox_dir).map(|q| q.in_flight.clone()).unwrap_or_default()
}

/// A copy of an error for the other members of a failed batch
/// (`StoreError` is not `Clone`: I/O sources are rebuilt from kind and text).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { path, source } => {
            StoreError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        StoreError::NoSuchMailbox(m) => StoreError::NoSuchMailbox(m.clone()),
        StoreError::MailboxExists(m) => StoreError::MailboxExists(m.clone()),
        StoreError::InvalidMailboxName { name, reason } => StoreError::InvalidMailboxName { name: name.clone(), reason },
        StoreError::NotAllowed(m) => StoreError::NotAllowed(m.clone()),
        StoreError::LockTimeout(p) => StoreError::LockTimeout(p.clone()),
        StoreError::Corrupt { path, reason } => StoreError::Corrupt { path: path.clone(), reason: reason.clone() },
        StoreError::InvalidMessage(m) => StoreError::InvalidMessage(m),
        StoreError::NoSuchMessage(u) => StoreError::NoSuchMessage(*u),
    }
}

/// Resets leadership if the leader unwinds (a panicking hook), so that
/// waiters are not stranded; their requests get an error.
struct LeaderGuard<'a> {
    key: &'a PathBuf,
    tickets: Vec<u64>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut queues = lock_queues();
        if let Some(q) = queues.get_mut(self.key) {
            q.leader = false;
            for t in &self.tickets {
                q.done.entry(*t).or_insert_with(|| {
                    Err(StoreError::Corrupt { path: self.key.clone(), reason: "append batch was abandoned".into() })
                });
            }
        }
        registry().changed.notify_all();
    }
}

/// Queues `request` for `dir` and returns its result once committed; its
/// `emit` is called (by whichever thread leads the batch) after the batch
/// is durable.
///
/// # Errors
/// The batch's error (`LockTimeout`, I/O), or `Corrupt` if the file vanished.
pub fn append(dir: &MailboxDir, request: PendingAppend) -> Result<Appended, StoreError> {
    let key = dir.path.clone();
    let ticket = {
        let mut queues = lock_queues();
        let q = queues.entry(key.clone()).or_default();
        let t = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push((t, request));
        t
    };
    let mut queues = lock_queues();
    loop {
        let q = queues.get_mut(&key).expect("queue exists while a ticket is outstanding");
        if let Some(result) = q.done.remove(&ticket) {
            if q.pending.is_empty() && q.done.is_empty() && !q.leader && q.in_flight.is_empty() {
                queues.remove(&key);
            }
            return result;
        }
        if !q.leader {
            q.leader = true;
            let batch = std::mem::take(&mut q.pending);
            drop(queues);
            let mut guard = LeaderGuard { key: &key, tickets: batch.iter().map(|(t, _)| *t).collect() };
            let results = commit_batch(dir, &batch);
            queues = lock_queues();
            let q = queues.get_mut(&key).expect("queue exists while its leader runs");
            q.done.extend(results);
            guard.tickets.clear();
            drop(queues);
            drop(guard); // leader = false, wake everyone
            queues = lock_queues();
            continue;
        }
        queues = registry().changed.wait(queues).unwrap_or_else(|e| e.into_inner());
    }
}

/// Commits one batch under the mailbox lock and emits its events.
fn commit_batch(dir: &MailboxDir, batch: &[(u64, PendingAppend)]) -> Vec<(u64, Result<Appended, StoreError>)> {
    let basenames: Vec<String> = batch.iter().map(|(_, p)| p.basename.clone()).collect();
    let loaded = LockedMailbox::load(dir, &basenames);
    {
        // Loaded (or failed): no longer hidden from loads.
        let mut queues = lock_queues();
        if let Some(q) = queues.get_mut(&dir.path) {
            for b in &basenames {
                q.in_flight.remove(b);
            }
        }
    }
    let mut locked = match loaded {
        Ok(l) => l,
        Err(e) => return batch.iter().map(|(t, _)| (*t, Err(duplicate(&e)))).collect(),
    };
    let before = locked.base_modseq;
    let wanted: HashSet<&str> = basenames.iter().map(String::as_str).collect();
    let positions: HashMap<String, usize> = locked
        .messages()
        .iter()
        .enumerate()
        .filter(|(_, m)| wanted.contains(m.basename.as_str()))
        .map(|(i, m)| (m.basename.clone(), i))
        .collect();
    let mut uids: Vec<Result<u32, StoreError>> = Vec::with_capacity(batch.len());
    for (_, p) in batch {
        let uid = match positions.get(&p.basename) {
            None => match locked.vanished_own_uid(&p.basename) {
                Some(uid) => {
                    tracing::info!(mailbox = %dir.path.display(), uid, "appended message was expunged by another program at once");
                    Ok(uid)
                }
                None => Err(StoreError::Corrupt {
                    path: dir.path.join("new").join(&p.basename),
                    reason: "a message written just now vanished before it got a UID".into(),
                }),
            },
            Some(&idx) if locked.messages()[idx].flags != p.flags => match locked.set_flags(idx, &p.flags) {
                Ok(_) => Ok(locked.messages()[idx].uid),
                Err(e) => Err(e),
            },
            Some(&idx) => Ok(locked.messages()[idx].uid),
        };
        uids.push(uid);
    }
    let status = match locked.commit() {
        Ok(c) => {
            if let Some((_, first)) = batch.first() {
                (first.publish_outside)(&c);
            }
            c.status
        }
        Err(e) => return batch.iter().map(|(t, _)| (*t, Err(duplicate(&e)))).collect(),
    };
    let mut modseq_before = before;
    batch
        .iter()
        .zip(uids)
        .map(|((t, p), uid)| {
            let result = uid.map(|uid| {
                let appended = Appended { uidvalidity: status.uidvalidity, uid, modseq_before, status };
                (p.emit)(&appended);
                // One MODSEQ for the whole batch: later events start where the first ended.
                modseq_before = status.highestmodseq;
                appended
            });
            (*t, result)
        })
        .collect()
}
