//! NOTIFY (RFC 5465): `NOTIFY SET` / `NOTIFY NONE`, and delivering the
//! notifications of a live session.
//!
//! The state is a [`hibernate::notify::NotifySpec`] (shared with the
//! hibernate process, which carries it in the hibernation record and
//! renders the same responses from bus events while the session is
//! parked). Here:
//!
//! - events on other mailboxes become `* STATUS` / `* LIST` lines in
//!   `Session::notify_out`, written as soon as no command is being read or
//!   executed (inside IDLE or not: NOTIFY allows unsolicited responses at
//!   any time);
//! - with a `selected` group (not `selected-delayed`) the selected mailbox
//!   is synced between commands too, expunges included; with
//!   `selected-delayed` expunges wait for a command that allows them;
//! - `MessageNew (fetch-att)` for the selected mailbox sends a FETCH of
//!   the new messages with those attributes after their `EXISTS`.
//!
//! Events lost while a session moves between a worker and a hibernate
//! process (the short window of the move) are not replayed: RFC 5465
//! §3 lets a server lose notifications under load, and the selected
//! mailbox is resynced in full after every move anyway.

use hibernate::notify::NotifySpec;
use storage_hooks::MailboxEvent;

use super::notify_syntax::Notify;
use crate::session::Session;

impl Session {
    /// `NOTIFY NONE` / `NOTIFY SET`.
    pub(crate) fn op_notify(&mut self, tag: &str, cmd: Notify) {
        let (mut spec, status) = match cmd {
            Notify::None => {
                self.notify = None;
                self.notify_out.clear();
                return self.ok(tag, "NOTIFY completed.");
            }
            Notify::Set { spec, status } => (spec, status),
        };
        let Some(store) = self.store.clone() else { return self.bad(tag, "Please log in first.") };
        if spec.uses_subscribed() {
            match store.subscribed_names() {
                Ok(names) => spec.subscribed = names,
                Err(e) => return self.no_store(tag, &e),
            }
        }
        // Replaces the previous state; what it had queued is dropped.
        self.notify_out.clear();
        if status {
            if let Err(e) = self.notify_initial_status(&spec) {
                return self.no_store(tag, &e);
            }
        }
        let selected_now = spec.selected.as_ref().is_some_and(|s| !s.delayed);
        self.notify = Some(spec);
        if selected_now && self.selected.is_some() {
            self.sync_selected(true);
        }
        self.ok(tag, "NOTIFY completed.");
    }

    /// `NOTIFY SET STATUS`: a STATUS of each existing mailbox (not the
    /// selected one) for which message events are asked (RFC 5465 §3).
    fn notify_initial_status(&mut self, spec: &NotifySpec) -> Result<(), storage_hooks::StoreError> {
        let Some(store) = self.store.clone() else { return Ok(()) };
        let selected = self.selected_mailbox().map(str::to_string);
        let condstore = self.enabled.condstore;
        for info in store.list_mailboxes()? {
            if !info.selectable || selected.as_deref() == Some(info.name.as_str()) {
                continue;
            }
            if !spec.events_for(&info.name).is_some_and(|e| e.any_message_event()) {
                continue;
            }
            // A mailbox deleted meanwhile is simply not reported.
            let Ok(st) = store.status(&info.name) else { continue };
            let mut items = vec![
                hibernate::core::render::StatusItem::Messages,
                hibernate::core::render::StatusItem::UidNext,
                hibernate::core::render::StatusItem::UidValidity,
            ];
            if condstore {
                items.push(hibernate::core::render::StatusItem::HighestModSeq);
            }
            let encoded = storage_hooks::mutf7::encode(&info.name);
            hibernate::core::render::status(&mut self.out, &encoded, &st, &items);
        }
        Ok(())
    }

    /// Follows a store event for NOTIFY: queues the responses it produces
    /// for mailboxes other than the selected one.
    pub(crate) fn notify_on_event(&mut self, event: &MailboxEvent) {
        let mine = self.store.as_ref().is_some_and(|s| s.user() == event.user);
        let Some(spec) = self.notify.as_mut().filter(|_| mine) else { return };
        let selected = self.selected.as_ref().map(|s| s.name());
        spec.on_event(event, selected, self.enabled.condstore, &mut self.notify_out);
    }

    /// Called by `next` when no command is being read or run: moves queued
    /// NOTIFY responses to the output and, with a `selected` group, syncs
    /// the selected mailbox. Returns true if output was produced.
    pub(crate) fn notify_flush(&mut self) -> bool {
        let Some(spec) = self.notify.as_ref() else { return false };
        let sync = spec.selected.as_ref().map(|s| !s.delayed);
        if let Some(allow_expunge) = sync {
            if self.changes_pending && self.selected.is_some() {
                self.sync_selected(allow_expunge);
            }
        }
        if !self.notify_out.is_empty() {
            let queued = std::mem::take(&mut self.notify_out);
            self.out.extend_from_slice(&queued);
        }
        !self.out.is_empty()
    }

    /// The fetch attributes `MessageNew` asks for the selected mailbox.
    pub(crate) fn notify_fetch_att(&self) -> Option<&str> {
        self.notify.as_ref()?.selected.as_ref()?.fetch_att.as_deref()
    }
}

impl Session {
    /// After a sync: with `MessageNew (fetch-att)` for the selected mailbox,
    /// a FETCH of the messages whose UID is above `known_uid` (the highest
    /// the client knew), right after their `EXISTS` and without a tagged
    /// response. Skipped while a FETCH command's responses are still being
    /// written (the client sees the new messages with its next fetch).
    pub(crate) fn notify_fetch_new(&mut self, known_uid: u32) {
        let Some(att) = self.notify_fetch_att() else { return };
        if self.fetch_job.is_some() {
            return;
        }
        let Some(sel) = self.selected.as_ref() else { return };
        if sel.view.last().is_none_or(|e| e.uid <= known_uid) {
            return;
        }
        let command = format!("X UID FETCH {}:* ({att})\r\n", known_uid.saturating_add(1));
        use imap_codec::decode::Decoder;
        let Ok((_, cmd)) = imap_codec::CommandCodec::default().decode(command.as_bytes()) else {
            // Checked at NOTIFY SET; cannot fail with a valid UID.
            return tracing::warn!(%command, "NOTIFY fetch attributes no longer parse");
        };
        if let imap_types::command::CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } = cmd.body {
            // The empty tag marks a FETCH without a tagged response.
            self.op_fetch("", &sequence_set, &macro_or_item_names, uid, &modifiers);
        }
    }
}
