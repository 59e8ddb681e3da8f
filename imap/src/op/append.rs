//! APPEND with flags, INTERNALDATE and the UIDPLUS APPENDUID code.
//!
//! The message literal normally arrives streamed: the session wrote it to
//! the user's INBOX `tmp/` while it came in (`Session::append_body`) and
//! the parsed command carries an empty literal; committing moves the file
//! into the target mailbox. A literal read into memory (not logged in when
//! it started, say) is appended from memory as before.

use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::Flag;
use imap_types::mailbox::Mailbox;
use storage_hooks::{AppendKind, AppendOptions, Flags, StoreError};

use crate::session::Session;

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
        let streamed = self.append_body.take();
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let names: Vec<String> = flags.iter().map(ToString::to_string).collect();
        let flags = match Flags::from_imap_names(names.iter().map(String::as_str)) {
            Ok(f) => f,
            Err(bad) => return self.bad(tag, &format!("Invalid flag {}.", crate::session::machine::sanitize(&bad))),
        };
        let raw: &[u8] = match message {
            LiteralOrLiteral8::Literal(l) => l.as_ref(),
            LiteralOrLiteral8::Literal8(_) => return self.no(tag, "[CANNOT] BINARY literals are not supported."),
        };
        let opts = AppendOptions {
            flags,
            internal_date: date.map(|d| d.as_ref().timestamp()),
            kind: AppendKind::Append,
        };
        let Some(store) = self.store.clone() else { return };
        let result = match streamed {
            Some(Ok(mut message)) => store.append_incoming(&name, &mut message, &opts),
            Some(Err(e)) => Err(e),
            None => store.append(&name, raw, &opts),
        };
        match result {
            Ok(r) => {
                if self.selected_mailbox() == Some(name.as_str()) {
                    self.changes_pending = true;
                    self.sync_selected(true);
                }
                self.ok(tag, &format!("[APPENDUID {} {}] Append completed.", r.uidvalidity, r.uid));
            }
            Err(StoreError::NoSuchMailbox(_)) => self.no(tag, "[TRYCREATE] Mailbox does not exist."),
            Err(StoreError::InvalidMessage(why)) => self.no(tag, &format!("Invalid message: {why}.")),
            Err(e) => self.no_store(tag, &e),
        }
    }
}
