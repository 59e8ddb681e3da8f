//! IDLE (RFC 2177): report changes at once until DONE.

use std::time::Instant;

use crate::session::machine::Phase;
use crate::session::Session;

impl Session {
    /// IDLE: sync, send `+ idling`, then wait for DONE or changes.
    pub(crate) fn op_idle(&mut self, tag: &str, now: Instant) {
        if self.selected.is_some() {
            self.sync_selected(true);
        }
        self.out.extend_from_slice(b"+ idling\r\n");
        self.phase = Phase::Idle(tag.to_string());
        self.idle_since = now;
        self.framer.set_line_only(true);
    }
}
