//! NOOP and CHECK: sync the selected mailbox and report changes.

use crate::session::Session;

impl Session {
    /// NOOP / CHECK (`name` is used in the completion text).
    pub(crate) fn op_noop(&mut self, tag: &str, name: &str) {
        if self.selected.is_some() {
            self.sync_selected(true);
        }
        self.ok(tag, &format!("{name} completed."));
    }
}
