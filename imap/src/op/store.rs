//! STORE / UID STORE with +FLAGS, -FLAGS, FLAGS, .SILENT and UNCHANGEDSINCE.

use imap_types::command::StoreModifier;
use imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_types::sequence::SequenceSet;
use storage_hooks::{FlagOp, Flags, UidRange, UidSet};

use crate::session::response::number_set;
use crate::session::selected::Selected;
use crate::session::Session;

impl Session {
    /// STORE.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn op_store(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
    ) {
        let names: Vec<String> = flags.iter().map(ToString::to_string).collect();
        let flags = match Flags::from_imap_names(names.iter().map(String::as_str)) {
            Ok(f) => f,
            Err(bad) => return self.bad(tag, &format!("Invalid flag {}.", crate::session::machine::sanitize(&bad))),
        };
        let unchanged_since = modifiers.iter().map(|StoreModifier::UnchangedSince(n)| *n).next();
        if unchanged_since.is_some() {
            self.enable_condstore_implicitly();
        }
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        if self.selected.as_ref().is_some_and(|s| s.read_only) {
            return self.no(tag, "[READ-ONLY] Mailbox is read-only.");
        }
        if self.changes_pending {
            self.sync_selected(uid);
        }
        let enabled = self.enabled;
        let Some(sel) = self.selected.as_mut() else { return };
        let idx = match sel.resolve(set, uid) {
            Ok(i) => i,
            Err(_) => return self.bad(tag, "Invalid message sequence number."),
        };
        let uids: Vec<u32> = idx.iter().filter(|&&i| !sel.view[i].expunged).map(|&i| sel.view[i].uid).collect();
        let uid_set = UidSet::from_ranges(uids.iter().map(|&u| UidRange { first: u, last: u }));
        let shared = sel.shared.clone();
        let mut g = match Selected::lock_mailbox(&shared, &sel.status) {
            Ok(g) => g,
            Err(e) => return self.no_store(tag, &e),
        };
        let result = match g.mailbox.store_flags(&uid_set, op, &flags, unchanged_since) {
            Ok(r) => r,
            Err(e) => {
                drop(g);
                return self.no_store(tag, &e);
            }
        };
        sel.status = g.mailbox.status();
        for (u, f, m) in &result.changed {
            sel.announce_keywords(&f.keywords, &mut self.out);
            sel.set_flags(*u, f, *m, &mut g.keyword_sets);
        }
        drop(g);
        let silent = matches!(response, StoreResponse::Silent);
        let changed: std::collections::HashSet<u32> = result.changed.iter().map(|c| c.0).collect();
        for &u in &uids {
            if result.modified.contains(u) {
                continue;
            }
            // With .SILENT, CONDSTORE clients still learn new MODSEQs
            // (RFC 7162 3.1.3); without CONDSTORE nothing is sent.
            let send = !silent || (enabled.condstore && unchanged_since.is_some() && changed.contains(&u));
            if send {
                if let Some(seq) = sel.seq_of(u) {
                    sel.write_flags_fetch(seq, enabled, uid, &mut self.out);
                }
            }
        }
        if result.modified.is_empty() {
            self.ok(tag, "Store completed.");
        } else {
            let nums: Vec<u32> = if uid {
                result.modified.iter().collect()
            } else {
                result.modified.iter().filter_map(|u| sel.seq_of(u)).map(|s| s as u32).collect()
            };
            self.ok(tag, &format!("[MODIFIED {}] Conditional STORE failed.", number_set(&nums)));
        }
    }
}
