//! A message written to a mailbox's `tmp/` while it arrives (LMTP DATA,
//! IMAP APPEND literals), so that no body is ever held whole in memory.
//! [`crate::UserStore::append_incoming`] commits it through the same path
//! as [`crate::UserStore::append`] (UID, event, fsyncs, full-disk
//! handling); dropping an uncommitted message removes its file.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::durable::{self, Durability};
use crate::{StoreError, UserStore};

/// Bytes kept from the start of the message for the event summary (From,
/// Subject and the first text lines are near the top).
const SUMMARY_HEAD: usize = 32 * 1024;
/// Write buffer. With the summary head, what one message being received
/// holds in memory at most: 64 KiB, whatever its size.
const WRITE_BUFFER: usize = 32 * 1024;

static INCOMING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A message being received into `tmp/` of a user's mailbox. Bare LF line
/// endings are stored as CRLF, like [`UserStore::append`] does.
#[derive(Debug)]
pub struct IncomingMessage {
    tmp: PathBuf,
    root: PathBuf,
    file: Option<BufWriter<File>>,
    durability: Durability,
    size: u64,
    last_was_cr: bool,
    head: Vec<u8>,
    body_start: u64,
    body_blank: bool,
}

impl IncomingMessage {
    /// Creates an empty message file in `tmp/` of `mailbox` (which must exist).
    ///
    /// # Errors
    /// `NoSuchMailbox`, `InvalidMailboxName`, I/O.
    pub fn create(store: &UserStore, mailbox: &str) -> Result<Self, StoreError> {
        let dir = store.mailbox_dir(mailbox)?;
        dir.require()?;
        let n = INCOMING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.path.join("tmp").join(format!(
            "{}.incoming.P{}Q{n}R{:08x}",
            durable::now_ms() / 1000,
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = durable::create_new_private(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        Ok(IncomingMessage {
            tmp,
            root: store.root().to_path_buf(),
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            durability: store.durability(),
            size: 0,
            last_was_cr: false,
            head: Vec::new(),
            body_start: 0,
            body_blank: true,
        })
    }

    /// Appends message bytes (bare LF becomes CRLF).
    ///
    /// # Errors
    /// I/O errors (e.g. a full disk); the message should then be dropped.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::InvalidMessage("message already committed"));
        };
        let mut run_start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' && !(if i == 0 { self.last_was_cr } else { bytes[i - 1] == b'\r' }) {
                put(file, &mut self.head, &bytes[run_start..i], &self.tmp)?;
                put(file, &mut self.head, b"\r", &self.tmp)?;
                self.size += 1;
                run_start = i;
            }
        }
        put(file, &mut self.head, &bytes[run_start..], &self.tmp)?;
        self.size += bytes.len() as u64;
        if let Some(&last) = bytes.last() {
            self.last_was_cr = last == b'\r';
        }
        if self.body_blank {
            self.body_blank = bytes.iter().all(u8::is_ascii_whitespace);
        }
        Ok(())
    }

    /// Marks the end of headers the deliverer prepended: [`Self::body_size`]
    /// and [`Self::body_is_blank`] count from here.
    pub fn mark_body_start(&mut self) {
        self.body_start = self.size;
        self.body_blank = true;
    }

    /// Bytes written so far (after CRLF conversion).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written since [`Self::mark_body_start`].
    pub fn body_size(&self) -> u64 {
        self.size - self.body_start
    }

    /// True if everything since [`Self::mark_body_start`] is whitespace.
    pub fn body_is_blank(&self) -> bool {
        self.body_blank
    }

    /// The Maildir root of the store the message belongs to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes this message's body (from [`Self::mark_body_start`]) into
    /// `target`, reading it back from disk in small pieces.
    ///
    /// # Errors
    /// I/O errors reading this message or writing `target`.
    pub fn copy_body_to(&mut self, target: &mut IncomingMessage) -> Result<(), StoreError> {
        if let Some(file) = self.file.as_mut() {
            file.flush().map_err(|e| StoreError::io(&self.tmp, e))?;
        }
        let mut src = File::open(&self.tmp).map_err(|e| StoreError::io(&self.tmp, e))?;
        src.seek(SeekFrom::Start(self.body_start)).map_err(|e| StoreError::io(&self.tmp, e))?;
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = src.read(&mut buf).map_err(|e| StoreError::io(&self.tmp, e))?;
            if n == 0 {
                return Ok(());
            }
            target.write(&buf[..n])?;
        }
    }

    /// Flushes, sets the mtime (INTERNALDATE) if given and fsyncs the file;
    /// returns its path, the start of the message and its size. After this
    /// the message takes no more writes.
    pub(crate) fn finish(&mut self, internal_date: Option<i64>) -> Result<(&Path, &[u8], u64), StoreError> {
        let Some(writer) = self.file.take() else {
            return Err(StoreError::InvalidMessage("message already committed"));
        };
        let file = writer.into_inner().map_err(|e| StoreError::io(&self.tmp, e.into_error()))?;
        if let Some(t) = internal_date {
            crate::mailbox_dir::set_mtime(&file, t).map_err(|e| StoreError::io(&self.tmp, e))?;
        }
        self.durability.fsync_file(&file, &self.tmp)?;
        Ok((&self.tmp, &self.head, self.size))
    }

    /// The file was renamed into `new/`: nothing to clean up any more.
    pub(crate) fn committed(&mut self) {
        self.tmp = PathBuf::new();
    }
}

/// Writes `bytes` to the file and keeps the first [`SUMMARY_HEAD`] bytes.
fn put(file: &mut BufWriter<File>, head: &mut Vec<u8>, bytes: &[u8], path: &Path) -> Result<(), StoreError> {
    if head.len() < SUMMARY_HEAD {
        head.extend_from_slice(&bytes[..bytes.len().min(SUMMARY_HEAD - head.len())]);
    }
    file.write_all(bytes).map_err(|e| StoreError::io(path, e))
}

impl Drop for IncomingMessage {
    fn drop(&mut self) {
        if self.tmp.as_os_str().is_empty() {
            return;
        }
        if let Some(writer) = self.file.take() {
            // Drop the buffer instead of flushing it into a file about to go.
            let _ = writer.into_parts();
        }
        if let Err(e) = std::fs::remove_file(&self.tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.tmp.display(), error = %e, "removing an unfinished incoming message failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppendKind, AppendOptions, CollectingHook, EventKind, Hooks};

    fn tmp_files(root: &Path, sub: &str) -> usize {
        std::fs::read_dir(root.join(sub).join("tmp")).unwrap().count()
    }

    #[test]
    fn streamed_message_is_committed_like_append() {
        let dir = tempfile::tempdir().unwrap();
        let hook = CollectingHook::new();
        let store = UserStore::open("u", dir.path(), Hooks::new().with(hook.clone())).unwrap();
        store.create_mailbox("Folder").unwrap();
        hook.take();
        let mut m = IncomingMessage::create(&store, "INBOX").unwrap();
        m.write(b"X-Trace: 1\n").unwrap();
        m.mark_body_start();
        // A CRLF split across writes stays one CRLF; bare LF becomes CRLF.
        for chunk in [&b"Subject: hi\r"[..], b"\n\n", b"body\nend\r", b"\n"] {
            m.write(chunk).unwrap();
        }
        assert_eq!((m.body_size(), m.body_is_blank()), (26, false));
        assert_eq!(tmp_files(dir.path(), ""), 1);
        let opts = AppendOptions { kind: AppendKind::Delivery, ..AppendOptions::default() };
        // Committed into another mailbox of the same store: moved there.
        let r = store.append_incoming("Folder", &mut m, &opts).unwrap();
        drop(m);
        assert_eq!(tmp_files(dir.path(), ""), 0);
        let raw = store.open_mailbox("Folder").unwrap().read_message(r.uid).unwrap();
        assert_eq!(raw, b"X-Trace: 1\r\nSubject: hi\r\n\r\nbody\r\nend\r\n");
        let events = hook.take();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].kind, events[0].mailbox.as_str()), (EventKind::MessageNew, "Folder"));
        assert_eq!(events[0].summary.as_ref().unwrap().subject, "hi");
        assert!(events[0].uids.contains(r.uid));
    }

    #[test]
    fn dropped_or_refused_messages_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let hook = CollectingHook::new();
        let store = UserStore::open("u", dir.path(), Hooks::new().with(hook.clone())).unwrap();
        let mut m = IncomingMessage::create(&store, "INBOX").unwrap();
        m.write(b"half a message").unwrap();
        drop(m);
        assert_eq!(tmp_files(dir.path(), ""), 0);
        // No such mailbox: untouched, and can go elsewhere.
        let mut m = IncomingMessage::create(&store, "INBOX").unwrap();
        m.write(b" \r\n").unwrap();
        assert!(m.body_is_blank());
        let opts = AppendOptions::default();
        assert!(matches!(store.append_incoming("Nope", &mut m, &opts), Err(StoreError::NoSuchMailbox(_))));
        assert_eq!(tmp_files(dir.path(), ""), 1);
        let mut empty = IncomingMessage::create(&store, "INBOX").unwrap();
        assert!(matches!(store.append_incoming("INBOX", &mut empty, &opts), Err(StoreError::InvalidMessage(_))));
        drop(empty);
        // Another store's message is refused.
        let other_dir = tempfile::tempdir().unwrap();
        let other = UserStore::open("v", other_dir.path(), Hooks::new()).unwrap();
        assert!(matches!(other.append_incoming("INBOX", &mut m, &opts), Err(StoreError::InvalidMessage(_))));
        assert!(store.append_incoming("INBOX", &mut m, &opts).is_ok());
        assert!(store.append_incoming("INBOX", &mut m, &opts).is_err(), "a message commits once");
        assert_eq!(hook.take().len(), 1);
    }

    #[test]
    fn body_copies_to_another_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open("u", dir.path(), Hooks::new()).unwrap();
        let mut first = IncomingMessage::create(&store, "INBOX").unwrap();
        first.write(b"Delivered-To: a\r\n").unwrap();
        first.mark_body_start();
        let body: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i}\r\n").into_bytes()).collect();
        first.write(&body).unwrap();
        let mut second = IncomingMessage::create(&store, "INBOX").unwrap();
        second.write(b"Delivered-To: b\r\n").unwrap();
        second.mark_body_start();
        first.copy_body_to(&mut second).unwrap();
        assert_eq!(second.body_size(), body.len() as u64);
        let r = store.append_incoming("INBOX", &mut second, &AppendOptions::default()).unwrap();
        let raw = store.open_mailbox("INBOX").unwrap().read_message(r.uid).unwrap();
        assert_eq!(&raw[..17], b"Delivered-To: b\r\n");
        assert!(raw[17..] == body[..]);
    }
}
