//! EXPUNGE and UID EXPUNGE (UIDPLUS).

use imap_types::sequence::SequenceSet;
use storage_hooks::UidSet;

use crate::session::selected::Selected;
use crate::session::Session;

impl Session {
    /// EXPUNGE, or UID EXPUNGE when `uids` is given.
    pub(crate) fn op_expunge(&mut self, tag: &str, uids: Option<&SequenceSet>) {
        let enabled = self.enabled;
        let Some(sel) = self.selected.as_mut() else { return };
        if sel.read_only {
            return self.no(tag, "[READ-ONLY] Mailbox is read-only.");
        }
        let filter = match uids {
            Some(set) => match sel.resolve(set, true) {
                Ok(idx) => Some(UidSet::from_ranges(idx.iter().map(|&i| {
                    let u = sel.view[i].uid;
                    storage_hooks::UidRange { first: u, last: u }
                }))),
                Err(_) => return self.bad(tag, "Invalid UID set."),
            },
            None => None,
        };
        let expunged = Selected::lock_mailbox(&sel.shared, &sel.status).and_then(|mut g| {
            let gone = g.mailbox.expunge(filter.as_ref())?;
            Ok((gone, g.mailbox.status()))
        });
        match expunged {
            Ok((gone, status)) => {
                sel.status = status;
                sel.mark_expunged(&gone);
                sel.report_expunges(enabled, &mut self.out);
                self.sync_selected(true);
                let hms = self.selected.as_ref().map(|s| s.status.highestmodseq);
                match hms {
                    Some(h) if enabled.condstore => self.ok(tag, &format!("[HIGHESTMODSEQ {h}] Expunge completed.")),
                    _ => self.ok(tag, "Expunge completed."),
                }
            }
            Err(e) => self.no_store(tag, &e),
        }
    }
}
