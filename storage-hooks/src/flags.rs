//! Message flags: the IMAP system flags stored in a Maildir file name's `:2,`
//! info part, plus keywords stored through `dovecot-keywords` letters.

use serde::{Deserialize, Serialize};

/// Bit set of the IMAP system flags that persist in Maildir.
///
/// `\Recent` is not here on purpose: it is per-session state, not stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SystemFlags(u8);

impl SystemFlags {
    /// `\Seen` (Maildir letter `S`).
    pub const SEEN: SystemFlags = SystemFlags(1);
    /// `\Answered` (Maildir letter `R`, "replied").
    pub const ANSWERED: SystemFlags = SystemFlags(2);
    /// `\Flagged` (Maildir letter `F`).
    pub const FLAGGED: SystemFlags = SystemFlags(4);
    /// `\Deleted` (Maildir letter `T`, "trashed").
    pub const DELETED: SystemFlags = SystemFlags(8);
    /// `\Draft` (Maildir letter `D`).
    pub const DRAFT: SystemFlags = SystemFlags(16);
    /// Maildir letter `P` ("passed", forwarded). Dovecot maps it to the
    /// `$Forwarded` keyword on IMAP; we keep the bit so a rename round-trips.
    pub const PASSED: SystemFlags = SystemFlags(32);

    /// No flags.
    pub const fn empty() -> Self {
        SystemFlags(0)
    }

    /// Raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Builds from raw bits, dropping unknown bits.
    pub const fn from_bits_truncate(bits: u8) -> Self {
        SystemFlags(bits & 63)
    }

    /// True if every flag of `other` is set in `self`.
    pub const fn contains(self, other: SystemFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Union.
    pub const fn union(self, other: SystemFlags) -> Self {
        SystemFlags(self.0 | other.0)
    }

    /// `self` without the flags of `other`.
    pub const fn difference(self, other: SystemFlags) -> Self {
        SystemFlags(self.0 & !other.0)
    }

    /// Maildir info letters in ASCII order, as Maildir requires (`DFPRST`).
    pub fn to_maildir_letters(self) -> String {
        let mut s = String::new();
        for (letter, flag) in MAILDIR_LETTERS {
            if self.contains(flag) {
                s.push(letter);
            }
        }
        s
    }

    /// Parses a Maildir info letter; `None` for lowercase keyword letters and
    /// unknown letters.
    pub fn from_maildir_letter(c: char) -> Option<Self> {
        MAILDIR_LETTERS.iter().find(|(l, _)| *l == c).map(|(_, f)| *f)
    }

    /// IMAP names of the set flags, e.g. `["\\Seen", "\\Flagged"]`.
    /// `PASSED` is reported as the `$Forwarded` keyword, like Dovecot does.
    pub fn imap_names(self) -> Vec<&'static str> {
        IMAP_NAMES.iter().filter(|(_, f)| self.contains(*f)).map(|(n, _)| *n).collect()
    }

    /// Parses an IMAP system flag name (case-insensitive), e.g. `\Seen`.
    pub fn from_imap_name(name: &str) -> Option<Self> {
        IMAP_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, f)| *f)
    }
}

const MAILDIR_LETTERS: [(char, SystemFlags); 6] = [
    ('D', SystemFlags::DRAFT),
    ('F', SystemFlags::FLAGGED),
    ('P', SystemFlags::PASSED),
    ('R', SystemFlags::ANSWERED),
    ('S', SystemFlags::SEEN),
    ('T', SystemFlags::DELETED),
];

const IMAP_NAMES: [(&str, SystemFlags); 6] = [
    ("\\Answered", SystemFlags::ANSWERED),
    ("\\Flagged", SystemFlags::FLAGGED),
    ("\\Deleted", SystemFlags::DELETED),
    ("\\Seen", SystemFlags::SEEN),
    ("\\Draft", SystemFlags::DRAFT),
    ("$Forwarded", SystemFlags::PASSED),
];

/// All flags of one message: system flags plus keywords (e.g. `$Junk`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flags {
    /// System flags.
    pub system: SystemFlags,
    /// Keywords, sorted and de-duplicated (case-sensitive per RFC 3501).
    pub keywords: Vec<String>,
}

impl Flags {
    /// Flags with only system flags.
    pub fn system(system: SystemFlags) -> Self {
        Flags { system, keywords: Vec::new() }
    }

    /// Parses IMAP flag atoms (`\Seen`, `$Junk`, ...). Returns the offending
    /// atom for `\Recent`, unknown `\`-flags, or atoms that are not valid
    /// keywords.
    pub fn from_imap_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut flags = Flags::default();
        for name in names {
            if let Some(f) = SystemFlags::from_imap_name(name) {
                flags.system = flags.system.union(f);
            } else if name.starts_with('\\') || !is_valid_keyword(name) {
                return Err(name.to_string());
            } else {
                flags.keywords.push(name.to_string());
            }
        }
        flags.normalize();
        Ok(flags)
    }

    /// Sorts and de-duplicates keywords.
    pub fn normalize(&mut self) {
        self.keywords.sort();
        self.keywords.dedup();
    }

    /// True if no flag or keyword is set.
    pub fn is_empty(&self) -> bool {
        self.system.is_empty() && self.keywords.is_empty()
    }

    /// Union of two flag sets.
    pub fn union(&self, other: &Flags) -> Flags {
        let mut out = Flags {
            system: self.system.union(other.system),
            keywords: self.keywords.iter().chain(&other.keywords).cloned().collect(),
        };
        out.normalize();
        out
    }

    /// `self` without the flags of `other`.
    pub fn difference(&self, other: &Flags) -> Flags {
        Flags {
            system: self.system.difference(other.system),
            keywords: self
                .keywords
                .iter()
                .filter(|k| !other.keywords.contains(k))
                .cloned()
                .collect(),
        }
    }

    /// IMAP representation of all flags, e.g. `\Seen \Flagged $Junk`.
    pub fn to_imap_string(&self) -> String {
        let mut parts: Vec<&str> = self.system.imap_names();
        parts.extend(self.keywords.iter().map(String::as_str));
        parts.join(" ")
    }
}

/// True for an IMAP `atom` usable as a keyword (RFC 3501 `flag-keyword`):
/// no atom-specials, no `\`, no control characters, non-empty and bounded.
pub fn is_valid_keyword(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_letters_are_sorted() {
        let f = SystemFlags::SEEN.union(SystemFlags::DRAFT).union(SystemFlags::ANSWERED);
        assert_eq!(f.to_maildir_letters(), "DRS");
        assert_eq!(SystemFlags::from_maildir_letter('T'), Some(SystemFlags::DELETED));
        assert_eq!(SystemFlags::from_maildir_letter('a'), None);
    }

    #[test]
    fn imap_names_round_trip() {
        let f = Flags::from_imap_names(["\\seen", "$Junk", "\\Flagged", "$Junk"]).unwrap();
        assert_eq!(f.to_imap_string(), "\\Flagged \\Seen $Junk");
        assert!(Flags::from_imap_names(["\\Recent"]).is_err());
        assert!(Flags::from_imap_names(["bad(kw"]).is_err());
    }
}
