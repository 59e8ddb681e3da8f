//! STATUS (with HIGHESTMODSEQ; answered from the store's status record).

use imap_types::mailbox::Mailbox;
use imap_types::status::StatusDataItemName;

use crate::session::{mutf7, response, Session};

/// Why a STATUS response could not be made.
pub(crate) enum StatusError {
    /// The store failed (no such mailbox, I/O).
    Store(storage_hooks::StoreError),
    /// An item we do not answer (DELETED, DELETED-STORAGE).
    Unsupported,
}

impl Session {
    /// The `* STATUS name (...)` line of mailbox `name` (UTF-8), for STATUS
    /// and LIST-STATUS. HIGHESTMODSEQ enables CONDSTORE (RFC 7162 §3.1).
    pub(crate) fn status_response(&mut self, name: &str, items: &[StatusDataItemName]) -> Result<Vec<u8>, StatusError> {
        let Some(store) = self.store.clone() else { return Err(StatusError::Unsupported) };
        if items.iter().any(|i| matches!(i, StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage)) {
            return Err(StatusError::Unsupported);
        }
        let st = store.status(name).map_err(StatusError::Store)?;
        let mut parts = Vec::new();
        for item in items {
            let p = match item {
                StatusDataItemName::Messages => format!("MESSAGES {}", st.messages),
                StatusDataItemName::Recent => format!("RECENT {}", st.recent),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", st.uidnext),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", st.uidvalidity),
                StatusDataItemName::Unseen => format!("UNSEEN {}", st.unseen),
                StatusDataItemName::HighestModSeq => {
                    self.enable_condstore_implicitly();
                    format!("HIGHESTMODSEQ {}", st.highestmodseq)
                }
                StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage => return Err(StatusError::Unsupported),
            };
            parts.push(p);
        }
        let mut line = b"* STATUS ".to_vec();
        response::string(&mut line, mutf7::encode(name).as_bytes());
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(line)
    }

    /// STATUS mailbox (items).
    pub(crate) fn op_status(&mut self, tag: &str, mailbox: &Mailbox<'_>, items: &[StatusDataItemName]) {
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        match self.status_response(&name, items) {
            Ok(line) => self.out.extend_from_slice(&line),
            Err(StatusError::Store(e)) => return self.no_store(tag, &e),
            Err(StatusError::Unsupported) => return self.bad(tag, "STATUS item not supported."),
        }
        self.ok(tag, "Status completed.");
    }
}
