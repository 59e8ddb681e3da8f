//! CLOSE: silently expunge (if read-write) and deselect.

use crate::session::selected::Selected;
use crate::session::Session;

impl Session {
    /// CLOSE.
    pub(crate) fn op_close(&mut self, tag: &str) {
        if let Some(sel) = self.selected.take() {
            if !sel.read_only {
                let expunged = Selected::lock_mailbox(&sel.shared, &sel.status).and_then(|mut g| g.mailbox.expunge(None));
                if let Err(e) = expunged {
                    self.selected = Some(sel);
                    return self.no_store(tag, &e);
                }
            }
        }
        self.ok(tag, "Close completed.");
    }
}
