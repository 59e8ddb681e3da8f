//! CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE.

use imap_types::mailbox::Mailbox;

use crate::session::Session;

impl Session {
    /// CREATE (a trailing `/` is dropped, RFC 3501 6.3.3).
    pub(crate) fn op_create(&mut self, tag: &str, mailbox: &Mailbox<'_>) {
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let name = name.trim_end_matches('/').to_string();
        if name.eq_ignore_ascii_case("INBOX") {
            return self.no(tag, "[ALREADYEXISTS] INBOX always exists.");
        }
        let Some(store) = self.store.clone() else { return };
        match store.create_mailbox(&name) {
            Ok(()) => self.ok(tag, "Create completed."),
            Err(e) => self.no_store(tag, &e),
        }
    }

    /// DELETE.
    pub(crate) fn op_delete(&mut self, tag: &str, mailbox: &Mailbox<'_>) {
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        if name == "INBOX" {
            return self.no(tag, "[CANNOT] INBOX cannot be deleted.");
        }
        if self.selected_mailbox() == Some(name.as_str()) {
            self.selected = None;
            self.out.extend_from_slice(b"* OK [CLOSED] Mailbox deleted.\r\n");
        }
        let Some(store) = self.store.clone() else { return };
        match store.delete_mailbox(&name) {
            Ok(()) => self.ok(tag, "Delete completed."),
            Err(e) => self.no_store(tag, &e),
        }
    }

    /// RENAME.
    pub(crate) fn op_rename(&mut self, tag: &str, from: &Mailbox<'_>, to: &Mailbox<'_>) {
        let Some(from) = self.mailbox_name(tag, from) else { return };
        let Some(to) = self.mailbox_name(tag, to) else { return };
        let to = to.trim_end_matches('/').to_string();
        if to == "INBOX" {
            return self.no(tag, "[ALREADYEXISTS] INBOX always exists.");
        }
        let Some(store) = self.store.clone() else { return };
        match store.rename_mailbox(&from, &to) {
            Ok(()) => self.ok(tag, "Rename completed."),
            Err(e) => self.no_store(tag, &e),
        }
    }

    /// SUBSCRIBE / UNSUBSCRIBE.
    pub(crate) fn op_subscribe(&mut self, tag: &str, mailbox: &Mailbox<'_>, subscribe: bool) {
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let Some(store) = self.store.clone() else { return };
        let r = if subscribe { store.subscribe(&name) } else { store.unsubscribe(&name) };
        match r {
            Ok(()) => self.ok(tag, if subscribe { "Subscribe completed." } else { "Unsubscribe completed." }),
            Err(e) => self.no_store(tag, &e),
        }
    }
}
