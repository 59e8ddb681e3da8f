//! Mailbox names: validation of API names (UTF-8, `/`-separated), mapping to
//! Maildir++ directory names (`.A.B`, modified UTF-7) and back, and
//! special-use attributes derived from well-known names.
//!
//! A level may hold `.` (the Maildir++ separator on disk) and `\\`: on disk
//! they are escaped exactly as Dovecot's `listescape` plugin does with its
//! default escape character, after the modified UTF-7 encoding: `.` becomes
//! `\\2e`, `\\` becomes `\\5c`, and a `~` that starts a level becomes `\\7e`
//! (`lists.debian.org` is `.lists\\2edebian\\2eorg`). The `subscriptions`
//! file holds its levels the same way, as Dovecot writes it.

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
    /// leading or trailing `/`), components `.` and `..`, control
    /// characters, and names longer than [`MAX_NAME_BYTES`] (also once encoded).
    /// Other `.` are fine: they are escaped on disk (see the module docs).
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
        if name.split(SEPARATOR).any(str::is_empty) {
            return Err(invalid(name, "empty hierarchy component (leading, trailing or double '/')"));
        }
        if name.split(SEPARATOR).any(|level| level == "." || level == "..") {
            return Err(invalid(name, "'.' and '..' are not allowed as hierarchy components"));
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
        let parts: Option<Vec<String>> = rest.split('.').map(decode_level).collect();
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
            s.push_str(&encode_level(part));
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

/// Dovecot's listescape escape character (its default).
const ESCAPE: char = '\\';

/// One hierarchy level as stored on disk and in `subscriptions`: modified
/// UTF-7, then `.`, `\\` and a leading `~` escaped as `\\2e`, `\\5c`, `\\7e`
/// (Dovecot's listescape plugin).
pub fn encode_level(level: &str) -> String {
    let utf7 = mutf7::encode(level);
    let mut out = String::with_capacity(utf7.len());
    for (i, c) in utf7.chars().enumerate() {
        if c == '.' || c == ESCAPE || (i == 0 && c == '~') {
            out.push_str(&format!("{ESCAPE}{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`encode_level`]: `\\XX` (two hex digits naming an ASCII
/// character) is unescaped, any other `\\` is kept as it is (as Dovecot
/// does), then modified UTF-7 is decoded. `None` if that fails.
pub fn decode_level(stored: &str) -> Option<String> {
    let b = stored.as_bytes();
    let mut out = String::with_capacity(stored.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) if b[i] == ESCAPE as u8 && byte.is_ascii() && b[i + 1] != b'+' => {
                out.push(char::from(byte));
                i += 3;
            }
            _ => {
                out.push(char::from(b[i]));
                i += 1;
            }
        }
    }
    if !out.is_ascii() {
        return None;
    }
    mutf7::decode(&out)
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
        for name in ["", "..", "a/../b", "/a", "a/", "a//b", "a\u{0}b", "a\nb", "../../etc", ".", "a/."] {
            assert!(bad(name), "{name:?} must be refused");
        }
        assert!(bad(&"x".repeat(256)));
        // 100 non-ASCII chars fit in 255 UTF-8 bytes? 200 bytes yes, but the
        // modified UTF-7 directory name would be longer than 255: refused.
        assert!(bad(&"ü".repeat(100)));
        assert!(!bad(&"x".repeat(200)));
        assert!(!bad("Ünïcode&Co"));
        assert!(!bad("~peter/mail"));
        for ok in ["x.y", "lists.debian.org", "v1.2", "..dots", ".hidden", "a\\b", "a/.b/c."] {
            assert!(!bad(ok), "{ok:?} must be accepted");
        }
    }

    #[test]
    fn dots_and_escapes_are_stored_like_dovecot_listescape() {
        // Directory names as Dovecot 2.3 with `mail_plugins = listescape`
        // wrote them for the same IMAP names (checked by hand and in
        // tests/dovecot_compat.rs).
        for (name, dir) in [
            ("lists.debian.org", ".lists\\2edebian\\2eorg"),
            ("v1.2", ".v1\\2e2"),
            ("a\\b", ".a\\5cb"),
            ("~tilde", ".\\7etilde"),
            ("mid~dle", ".mid~dle"),
            ("x/~y", ".x.\\7ey"),
            ("x/y.z", ".x.y\\2ez"),
            ("h.i/j.k", ".h\\2ei.j\\2ek"),
            ("..dots", ".\\2e\\2edots"),
            ("q\\2e", ".q\\5c2e"),
            ("p%q", ".p%q"),
            ("Ünï.co", ".&ANw-n&AO8-\\2eco"),
            ("a&b.c", ".a&-b\\2ec"),
        ] {
            let n = MailboxName::parse(name).unwrap();
            assert_eq!(n.dir_name(), dir, "{name}");
            assert_eq!(MailboxName::from_dir_name(dir), Some(n), "{dir}");
        }
        // Not canonical (upper-case hex, a raw `~` first): not ours to list.
        assert_eq!(MailboxName::from_dir_name(".v1\\2E2"), None);
        assert_eq!(decode_level("a\\zz"), Some("a\\zz".into()), "a lone escape char stays");
        assert_eq!(decode_level("a\\c3"), Some("a\\c3".into()), "escapes name ASCII only");
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
