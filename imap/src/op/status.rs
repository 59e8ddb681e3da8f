//! STATUS (with HIGHESTMODSEQ; answered from the store's status record).

use imap_types::mailbox::Mailbox;
use imap_types::status::StatusDataItemName;

use crate::session::{mutf7, response, Session};

impl Session {
    /// STATUS mailbox (items).
    pub(crate) fn op_status(&mut self, tag: &str, mailbox: &Mailbox<'_>, items: &[StatusDataItemName]) {
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let Some(store) = self.store.clone() else { return };
        let st = match store.status(&name) {
            Ok(s) => s,
            Err(e) => return self.no_store(tag, &e),
        };
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
                StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage => {
                    return self.bad(tag, "STATUS item not supported.");
                }
            };
            parts.push(p);
        }
        let mut line = b"* STATUS ".to_vec();
        response::string(&mut line, mutf7::encode(&name).as_bytes());
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.out.extend_from_slice(&line);
        self.ok(tag, "Status completed.");
    }
}
