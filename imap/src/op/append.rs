//! APPEND with flags, INTERNALDATE and the UIDPLUS APPENDUID code, and
//! MULTIAPPEND (RFC 3502: several messages, all or none; see `multiappend`).
//!
//! A message literal normally arrives streamed: the session wrote it to
//! the user's INBOX `tmp/` while it came in (`Session::append_bodies`) and
//! the parsed command carries an empty literal; committing moves the file
//! into the target mailbox. A literal read into memory (empty, or not
//! logged in when it started) is appended from memory.

use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::Flag;
use imap_types::mailbox::Mailbox;
use storage_hooks::{AppendKind, AppendOptions, AppendResult, Flags, IncomingMessage, StoreError, UserStore};

use crate::session::Session;

/// One message of an APPEND, checked and ready to store.
pub(crate) struct PreparedMessage<'a> {
    opts: AppendOptions,
    raw: &'a [u8],
    streamed: Option<Result<IncomingMessage, StoreError>>,
}

impl PreparedMessage<'_> {
    /// Stores the message in `name`.
    fn store(mut self, store: &UserStore, name: &str) -> Result<AppendResult, StoreError> {
        match self.streamed.take() {
            Some(Ok(mut message)) => store.append_incoming(name, &mut message, &self.opts),
            Some(Err(e)) => Err(e),
            None => store.append(name, self.raw, &self.opts),
        }
    }
}

impl Session {
    /// APPEND mailbox [flags] [date] literal.
    pub(crate) fn op_append(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<&DateTime>,
        message: &LiteralOrLiteral8<'_>,
    ) {
        // Taken first, so that every refusal below drops (removes) the file.
        let streamed = std::mem::take(&mut self.append_bodies).into_iter().next().flatten();
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let Some(prepared) = self.prepare_append(tag, flags, date, message, streamed) else { return };
        let Some(store) = self.store.clone() else { return };
        match prepared.store(&store, &name) {
            Ok(r) => self.append_done(tag, &name, r.uidvalidity, &r.uid.to_string()),
            Err(e) => self.append_failed(tag, &e),
        }
    }

    /// Checks one message's flags and literal; a tagged BAD / NO written and
    /// `None` if they are refused.
    pub(crate) fn prepare_append<'a>(
        &mut self,
        tag: &str,
        flags: &[Flag<'_>],
        date: Option<&DateTime>,
        message: &'a LiteralOrLiteral8<'_>,
        streamed: Option<Result<IncomingMessage, StoreError>>,
    ) -> Option<PreparedMessage<'a>> {
        let names: Vec<String> = flags.iter().map(ToString::to_string).collect();
        let flags = match Flags::from_imap_names(names.iter().map(String::as_str)) {
            Ok(f) => f,
            Err(bad) => {
                self.bad(tag, &format!("Invalid flag {}.", crate::session::machine::sanitize(&bad)));
                return None;
            }
        };
        let raw: &[u8] = match message {
            LiteralOrLiteral8::Literal(l) => l.as_ref(),
            LiteralOrLiteral8::Literal8(_) => {
                self.no(tag, "[CANNOT] BINARY literals are not supported.");
                return None;
            }
        };
        let opts = AppendOptions {
            flags,
            internal_date: date.map(|d| d.as_ref().timestamp()),
            kind: AppendKind::Append,
        };
        Some(PreparedMessage { opts, raw, streamed })
    }

    /// Stores `messages` in `name` in order, all or none: if one fails, the
    /// ones stored before it are expunged again (their UIDs are not reused,
    /// so UIDNEXT has moved on; Dovecot's transaction leaves it as it was).
    /// Other sessions may see them come and go. The UIDs on success.
    pub(crate) fn store_all(&mut self, name: &str, messages: Vec<PreparedMessage<'_>>) -> Result<(u32, Vec<u32>), StoreError> {
        let Some(store) = self.store.clone() else { return Err(StoreError::NotAllowed("not logged in".into())) };
        let mut uids = Vec::with_capacity(messages.len());
        let mut uidvalidity = 0;
        for message in messages {
            match message.store(&store, name) {
                Ok(r) => {
                    uidvalidity = r.uidvalidity;
                    uids.push(r.uid);
                }
                Err(e) => {
                    if !uids.is_empty() {
                        if let Err(undo) = remove_appended(&store, name, &uids) {
                            tracing::warn!(mailbox = %name, error = %undo, stored = uids.len(), "MULTIAPPEND failed and could not remove the messages it stored");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok((uidvalidity, uids))
    }

    /// Tagged OK with APPENDUID, after syncing a selected target.
    pub(crate) fn append_done(&mut self, tag: &str, name: &str, uidvalidity: u32, uids: &str) {
        if self.selected_mailbox() == Some(name) {
            self.changes_pending = true;
            self.sync_selected(true);
        }
        self.ok(tag, &format!("[APPENDUID {uidvalidity} {uids}] Append completed."));
    }

    /// Tagged NO for a failed APPEND.
    pub(crate) fn append_failed(&mut self, tag: &str, err: &StoreError) {
        match err {
            StoreError::NoSuchMailbox(_) => self.no(tag, "[TRYCREATE] Mailbox does not exist."),
            StoreError::InvalidMessage(why) => self.no(tag, &format!("Invalid message: {why}.")),
            e => self.no_store(tag, e),
        }
    }
}

/// Expunges `uids` of `name` again (a MULTIAPPEND that failed midway).
fn remove_appended(store: &UserStore, name: &str, uids: &[u32]) -> Result<(), StoreError> {
    let mut mailbox = store.open_mailbox(name)?;
    let set: storage_hooks::UidSet = uids.iter().copied().collect();
    let deleted = Flags::system(storage_hooks::SystemFlags::DELETED);
    mailbox.store_flags(&set, storage_hooks::FlagOp::Add, &deleted, None)?;
    mailbox.expunge(Some(&set))?;
    Ok(())
}
