//! Special-use attributes given at CREATE (RFC 6154 CREATE-SPECIAL-USE),
//! kept in a small file in the mailbox's directory so they follow RENAME
//! and go with DELETE. Without one, a well-known top-level name gives the
//! attribute ([`crate::MailboxName::special_use`]), as for the mailboxes
//! created at login ([`crate::auto_mailboxes`]).

use std::path::Path;

use crate::durable;
use crate::error::StoreError;
use crate::user_store::UserStore;

/// The file in a mailbox directory holding its special-use attribute.
pub const SPECIAL_USE_FILE: &str = "dormouse-special-use";

/// The special-use attributes of RFC 6154 (§2), as written in IMAP.
pub const ATTRIBUTES: &[&str] = &["\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"];

/// The attribute of RFC 6154 named `name` (case-insensitive), in its
/// canonical spelling; `None` for anything else.
pub fn attribute(name: &str) -> Option<&'static str> {
    ATTRIBUTES.iter().copied().find(|a| a.eq_ignore_ascii_case(name))
}

/// The attribute stored in mailbox directory `dir`, if any (an unreadable
/// or unknown content counts as none).
pub(crate) fn stored(dir: &Path) -> Option<&'static str> {
    let data = durable::read_optional(&dir.join(SPECIAL_USE_FILE)).ok()??;
    attribute(String::from_utf8_lossy(&data).trim())
}

impl UserStore {
    /// Creates mailbox `name` (see [`UserStore::create_mailbox`]) with the
    /// special-use attribute `attr` (one of [`ATTRIBUTES`]). If the
    /// attribute cannot be stored, the new mailbox is deleted again.
    ///
    /// # Errors
    /// `NotAllowed` for an attribute not in [`ATTRIBUTES`]; those of
    /// `create_mailbox`; I/O writing the attribute.
    pub fn create_special_use_mailbox(&self, name: &str, attr: &str) -> Result<(), StoreError> {
        let Some(attr) = attribute(attr) else {
            return Err(StoreError::NotAllowed(format!("unknown special-use attribute {attr}")));
        };
        let dir = self.mailbox_dir(name)?;
        if dir.name.is_inbox() {
            return Err(StoreError::MailboxExists(dir.name.to_string()));
        }
        self.create_mailbox(name)?;
        let written = durable::replace_file(&dir.path.join(SPECIAL_USE_FILE), attr.as_bytes(), durable::Sync::Data);
        if let Err(e) = written {
            let _ = self.delete_mailbox(name);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::hook::Hooks;
    use crate::user_store::UserStore;

    #[test]
    fn stored_attribute_is_listed_and_follows_rename() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open("alice", dir.path().join("Maildir"), Hooks::default()).unwrap();
        store.create_special_use_mailbox("Outbox/Done", "\\sent").unwrap();
        let find = |name: &str| store.list_mailboxes().unwrap().into_iter().find(|m| m.name == name).unwrap();
        assert_eq!(find("Outbox/Done").special_use, Some("\\Sent"));
        assert_eq!(find("Outbox").special_use, None);
        store.rename_mailbox("Outbox/Done", "Gone").unwrap();
        assert_eq!(find("Gone").special_use, Some("\\Sent"));
        assert!(store.create_special_use_mailbox("X", "\\Bogus").is_err());
        assert!(!store.mailbox_exists("X"));
        assert!(store.create_special_use_mailbox("Gone", "\\Trash").is_err());
        assert_eq!(find("Gone").special_use, Some("\\Sent"));
    }
}
