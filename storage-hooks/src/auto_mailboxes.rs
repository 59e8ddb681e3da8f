//! Mailboxes every user has (Drafts, Sent, Trash, Junk, ...), created and
//! subscribed on login when missing, like Dovecot's `auto = subscribe`. A
//! client's first "save to Sent" then does not fail; the SPECIAL-USE
//! attributes follow from the names (see [`crate::mailbox_name`]).

use crate::error::StoreError;
use crate::user_store::UserStore;

impl UserStore {
    /// Creates and subscribes each of `names` that does not exist; returns
    /// the ones it created. A mailbox another session creates at the same
    /// moment counts as existing.
    ///
    /// # Errors
    /// `InvalidMailboxName`, I/O (the mailboxes created before the failure
    /// stay).
    pub fn ensure_mailboxes(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let mut created = Vec::new();
        for name in names {
            if self.mailbox_exists(name) {
                continue;
            }
            match self.create_mailbox(name) {
                Ok(()) => created.push(name.clone()),
                Err(StoreError::MailboxExists(_)) => continue,
                Err(e) => return Err(e),
            }
            self.subscribe(name)?;
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use crate::hook::Hooks;
    use crate::user_store::UserStore;

    #[test]
    fn creates_and_subscribes_missing_ones_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open("alice", dir.path().join("Maildir"), Hooks::default()).unwrap();
        store.create_mailbox("Sent").unwrap();
        let names: Vec<String> = ["Drafts", "Sent", "Trash", "Junk"].map(String::from).to_vec();
        assert_eq!(store.ensure_mailboxes(&names).unwrap(), ["Drafts", "Trash", "Junk"]);
        assert!(store.ensure_mailboxes(&names).unwrap().is_empty());
        let list = store.list_mailboxes().unwrap();
        for name in ["Drafts", "Trash", "Junk"] {
            let mb = list.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name}: {list:?}"));
            assert!(mb.subscribed, "{name}");
        }
        let trash = list.iter().find(|m| m.name == "Trash").unwrap();
        assert_eq!(trash.special_use, Some("\\Trash"));
        assert!(store.ensure_mailboxes(&["bad\0name".to_string()]).is_err());
    }
}
