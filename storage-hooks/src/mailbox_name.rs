//! Mailbox names: validation of API names (UTF-8, `/`-separated), mapping to
//! Maildir++ directory names (`.A.B`, modified UTF-7) and back, and
//! special-use attributes derived from well-known names.

use crate::{mutf7, StoreError};

/// The API's hierarchy separator.
pub const SEPARATOR: char = '/';

/// Longest accepted name, in bytes (both the UTF-8 name and the directory name).
pub const MAX_NAME_BYTES: usize = 255;

/// A validated mailbox name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName {
    name: String,
}

fn invalid(name: &str, reason: &'static str) -> StoreError {
    StoreError::InvalidMailboxName { name: name.to_string(), reason }
}

impl MailboxName {
    /// Validates and normalizes a name given by a client: `inbox` in any case
    /// (also as the first component) becomes `INBOX`.
    ///
    /// # Errors
    /// `InvalidMailboxName` for empty names, empty components (`a//b`,
    /// leading or trailing `/`), `.` anywhere (the on-disk separator, as in
    /// Dovecot's Maildir++ layout, which also rules out `..`), control
    /// characters, and names longer than [`MAX_NAME_BYTES`] (also once encoded).
    pub fn parse(name: &str) -> Result<Self, StoreError> {
        if name.is_empty() {
            return Err(invalid(name, "empty name"));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(name, "name too long"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid(name, "control characters are not allowed"));
        }
        if name.contains('.') {
            return Err(invalid(name, "'.' is the on-disk hierarchy separator and is not allowed"));
        }
        if name.split(SEPARATOR).any(str::is_empty) {
            return Err(invalid(name, "empty hierarchy component (leading, trailing or double '/')"));
        }
        let mut parts: Vec<&str> = name.split(SEPARATOR).collect();
        if parts[0].eq_ignore_ascii_case("INBOX") {
            parts[0] = "INBOX";
        }
        let normalized = parts.join("/");
        let me = MailboxName { name: normalized };
        if !me.is_inbox() && me.dir_name().len() > MAX_NAME_BYTES {
            return Err(invalid(name, "encoded name too long"));
        }
        Ok(me)
    }

    /// The INBOX.
    pub fn inbox() -> Self {
        MailboxName { name: "INBOX".into() }
    }

    /// Decodes a Maildir++ directory name (`.A.B`); `None` if it is not a
    /// mailbox directory we understand (no leading dot, `..` prefix, bad
    /// modified UTF-7, or an invalid name once decoded).
    pub fn from_dir_name(dir: &str) -> Option<Self> {
        let rest = dir.strip_prefix('.')?;
        if rest.is_empty() || rest.starts_with('.') {
            return None;
        }
        let parts: Option<Vec<String>> = rest.split('.').map(mutf7::decode).collect();
        let name = parts?.join("/");
        let parsed = MailboxName::parse(&name).ok()?;
        (parsed.dir_name() == dir).then_some(parsed)
    }

    /// The UTF-8 name with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// True for INBOX itself (not its children).
    pub fn is_inbox(&self) -> bool {
        self.name == "INBOX"
    }

    /// The Maildir++ directory name below the root, e.g. `.Archive.2024`;
    /// empty for INBOX (which is the root itself).
    pub fn dir_name(&self) -> String {
        if self.is_inbox() {
            return String::new();
        }
        let mut s = String::new();
        for part in self.name.split(SEPARATOR) {
            s.push('.');
            s.push_str(&mutf7::encode(part));
        }
        s
    }

    /// Hierarchy components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.name.split(SEPARATOR)
    }

    /// The parent names, outermost first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> Vec<MailboxName> {
        let parts: Vec<&str> = self.components().collect();
        (1..parts.len()).map(|n| MailboxName { name: parts[..n].join("/") }).collect()
    }

    /// True if `self` is strictly below `other` in the hierarchy.
    pub fn is_descendant_of(&self, other: &MailboxName) -> bool {
        self.name.len() > other.name.len()
            && self.name.starts_with(&other.name)
            && self.name[other.name.len()..].starts_with(SEPARATOR)
    }

    /// `self` with the prefix `from` replaced by `to` (for renames of children).
    pub fn reparent(&self, from: &MailboxName, to: &MailboxName) -> Option<MailboxName> {
        self.is_descendant_of(from)
            .then(|| MailboxName { name: format!("{}{}", to.name, &self.name[from.name.len()..]) })
    }

    /// RFC 6154 special-use attribute for well-known top-level names.
    pub fn special_use(&self) -> Option<&'static str> {
        if self.name.contains(SEPARATOR) {
            return None;
        }
        let lower = self.name.to_lowercase();
        match lower.as_str() {
            "sent" | "sent messages" | "sent items" | "sent mail" => Some("\\Sent"),
            "drafts" | "draft" => Some("\\Drafts"),
            "trash" | "deleted messages" | "deleted items" => Some("\\Trash"),
            "junk" | "spam" | "junk e-mail" => Some("\\Junk"),
            "archive" | "archives" => Some("\\Archive"),
            _ => None,
        }
    }
}

impl std::fmt::Display for MailboxName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(name: &str) -> bool {
        matches!(MailboxName::parse(name), Err(StoreError::InvalidMailboxName { .. }))
    }

    #[test]
    fn validation() {
        for name in ["", "..", "a/../b", "/a", "a/", "a//b", "a\u{0}b", "a\nb", "x.y", "../../etc", "."] {
            assert!(bad(name), "{name:?} must be refused");
        }
        assert!(bad(&"x".repeat(256)));
        // 100 non-ASCII chars fit in 255 UTF-8 bytes? 200 bytes yes, but the
        // modified UTF-7 directory name would be longer than 255: refused.
        assert!(bad(&"ü".repeat(100)));
        assert!(!bad(&"x".repeat(200)));
        assert!(!bad("Ünïcode&Co"));
        assert!(!bad("~peter/mail"));
    }

    #[test]
    fn inbox_is_case_insensitive() {
        assert!(MailboxName::parse("inbox").unwrap().is_inbox());
        assert_eq!(MailboxName::parse("InBoX/Sub").unwrap().as_str(), "INBOX/Sub");
        assert_eq!(MailboxName::parse("InBoX/Sub").unwrap().dir_name(), ".INBOX.Sub");
        assert_eq!(MailboxName::inbox().dir_name(), "");
    }

    #[test]
    fn dir_names_round_trip() {
        let n = MailboxName::parse("Ünïcode&Co/2024").unwrap();
        assert_eq!(n.dir_name(), ".&ANw-n&AO8-code&-Co.2024");
        assert_eq!(MailboxName::from_dir_name(".&ANw-n&AO8-code&-Co.2024"), Some(n));
        assert_eq!(MailboxName::from_dir_name(".Archive.2024").unwrap().as_str(), "Archive/2024");
        for d in ["..", ".", "cur", "..dormouse-deleted.x", ".a..b", ".&ZeVn", ".&AGE-"] {
            assert_eq!(MailboxName::from_dir_name(d), None, "{d}");
        }
    }

    #[test]
    fn hierarchy_helpers() {
        let a = MailboxName::parse("a").unwrap();
        let abc = MailboxName::parse("a/b/c").unwrap();
        let ab2 = MailboxName::parse("ab/c").unwrap();
        assert!(abc.is_descendant_of(&a));
        assert!(!ab2.is_descendant_of(&a));
        assert!(!a.is_descendant_of(&a));
        let names: Vec<String> = abc.ancestors().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["a", "a/b"]);
        let z = MailboxName::parse("z").unwrap();
        assert_eq!(abc.reparent(&a, &z).unwrap().as_str(), "z/b/c");
    }

    #[test]
    fn special_use() {
        assert_eq!(MailboxName::parse("Sent").unwrap().special_use(), Some("\\Sent"));
        assert_eq!(MailboxName::parse("spam").unwrap().special_use(), Some("\\Junk"));
        assert_eq!(MailboxName::parse("Archive").unwrap().special_use(), Some("\\Archive"));
        assert_eq!(MailboxName::parse("Work/Sent").unwrap().special_use(), None);
        assert_eq!(MailboxName::inbox().special_use(), None);
    }
}
