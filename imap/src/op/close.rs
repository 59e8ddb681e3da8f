//! CLOSE: silently expunge (if read-write) and deselect.

use crate::session::Session;

impl Session {
    /// CLOSE.
    pub(crate) fn op_close(&mut self, tag: &str) {
        if let Some(mut sel) = self.selected.take() {
            if !sel.read_only {
                if let Err(e) = sel.mailbox.expunge(None) {
                    self.selected = Some(sel);
                    return self.no_store(tag, &e);
                }
            }
        }
        self.ok(tag, "Close completed.");
    }
}
