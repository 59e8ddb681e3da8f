//! COPY, MOVE and their UID forms, with the UIDPLUS COPYUID response code.

use imap_types::mailbox::Mailbox;
use imap_types::sequence::SequenceSet;
use storage_hooks::{StoreError, UidRange, UidSet};

use crate::session::response::number_set;
use crate::session::selected::Selected;
use crate::session::Session;

impl Session {
    /// COPY / MOVE.
    pub(crate) fn op_copy_move(&mut self, tag: &str, set: &SequenceSet, mailbox: &Mailbox<'_>, uid: bool, is_move: bool) {
        let Some(target) = self.mailbox_name(tag, mailbox) else { return };
        let enabled = self.enabled;
        let Some(sel) = self.selected.as_mut() else { return };
        if is_move && sel.read_only {
            return self.no(tag, "[READ-ONLY] Mailbox is read-only.");
        }
        let idx = match sel.resolve(set, uid) {
            Ok(i) => i,
            Err(_) => return self.bad(tag, "Invalid message sequence number."),
        };
        let uids: Vec<u32> = idx.iter().filter(|&&i| !sel.view[i].expunged).map(|&i| sel.view[i].uid).collect();
        if uids.is_empty() {
            let what = if is_move { "Move" } else { "Copy" };
            return if uid || idx.is_empty() {
                self.ok(tag, &format!("No messages found; {what} completed."))
            } else {
                self.no(tag, "Some of the requested messages no longer exist.")
            };
        }
        let uid_set = UidSet::from_ranges(uids.iter().map(|&u| UidRange { first: u, last: u }));
        let same_mailbox = target == sel.name();
        let result = Selected::lock_mailbox(&sel.shared, &sel.status).and_then(|mut g| {
            // Expunged by another session since this one last synced.
            if let Some(&gone) = uids.iter().find(|&&u| g.mailbox.message(u).is_none()) {
                return Err(StoreError::NoSuchMessage(gone));
            }
            let r = if is_move { g.mailbox.move_to(&uid_set, &target)? } else { g.mailbox.copy_to(&uid_set, &target)? };
            Ok((r, g.mailbox.status()))
        });
        let result = match result {
            Ok((r, status)) => {
                if is_move {
                    sel.status = status;
                }
                r
            }
            Err(StoreError::NoSuchMailbox(_)) => return self.no(tag, "[TRYCREATE] Mailbox does not exist."),
            Err(StoreError::NoSuchMessage(_)) => {
                // As Dovecot: nothing copied, the expunges reported (allowed
                // during COPY, RFC 3501 7.4.1), the client retries.
                self.changes_pending = true;
                self.sync_selected(true);
                return self.no(tag, "[EXPUNGEISSUED] Some of the requested messages no longer exist.");
            }
            Err(e) => return self.no_store(tag, &e),
        };
        let code = if result.source_uids.is_empty() {
            String::new()
        } else {
            format!(
                "[COPYUID {} {} {}] ",
                result.uidvalidity,
                set_in_order(&result.source_uids),
                set_in_order(&result.target_uids)
            )
        };
        if is_move {
            // RFC 6851: COPYUID goes in an untagged OK before the expunges.
            if !code.is_empty() {
                self.out.extend_from_slice(format!("* OK {}Moved UIDs.\r\n", code).as_bytes());
            }
            sel.mark_expunged(&result.source_uids);
            sel.report_expunges(enabled, &mut self.out);
            if same_mailbox {
                self.changes_pending = true;
            }
            if self.changes_pending {
                self.sync_selected(true);
            }
            self.ok(tag, "Move completed.");
        } else {
            if same_mailbox {
                self.changes_pending = true;
            }
            if self.changes_pending {
                self.sync_selected(uid);
            }
            self.ok(tag, &format!("{code}Copy completed."));
        }
    }
}

/// A sequence set that keeps the given order (COPYUID pairs position by
/// position, so the source order must not be changed by sorting).
fn set_in_order(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    if sorted == uids {
        number_set(uids)
    } else {
        uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}
