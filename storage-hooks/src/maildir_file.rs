//! Maildir file names: `<basename>[:2,<info>]`, where the basename is unique
//! and stable (it is what `dovecot-uidlist` records) and the info part holds
//! the flags: system letters `DFPRST` then keyword letters `a..z`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::SystemFlags;

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A parsed Maildir file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildirFileName {
    /// The part before `:`; what `dovecot-uidlist` records.
    pub basename: String,
    /// System flags from the info part.
    pub system: SystemFlags,
    /// Keyword letter indexes (`a` = 0) from the info part, sorted.
    pub keyword_indexes: Vec<u8>,
}

impl MaildirFileName {
    /// Parses a directory entry name; `None` for names that cannot be mail
    /// files (hidden files, empty basename).
    pub fn parse(file_name: &str) -> Option<Self> {
        if file_name.starts_with('.') || file_name.is_empty() {
            return None;
        }
        let (basename, info) = match file_name.split_once(':') {
            Some((b, i)) => (b, i.strip_prefix("2,").unwrap_or("")),
            None => (file_name, ""),
        };
        if basename.is_empty() {
            return None;
        }
        let mut system = SystemFlags::empty();
        let mut keyword_indexes = Vec::new();
        for c in info.chars() {
            if let Some(f) = SystemFlags::from_maildir_letter(c) {
                system = system.union(f);
            } else if c.is_ascii_lowercase() {
                keyword_indexes.push(c as u8 - b'a');
            }
        }
        keyword_indexes.sort_unstable();
        keyword_indexes.dedup();
        Some(MaildirFileName { basename: basename.to_string(), system, keyword_indexes })
    }

    /// Just the basename of a directory entry name (what [`MaildirFileName::parse`]
    /// would return as `basename`), without allocating; `None` for the same
    /// names `parse` refuses.
    pub fn basename_of(file_name: &str) -> Option<&str> {
        if file_name.starts_with('.') {
            return None;
        }
        let base = file_name.split(':').next().unwrap_or("");
        (!base.is_empty()).then_some(base)
    }

    /// The file name for these flags; `with_info` forces `:2,` even with no
    /// flags (files in `cur/` always carry it).
    pub fn file_name(&self, with_info: bool) -> String {
        let mut letters = self.system.to_maildir_letters();
        for &k in &self.keyword_indexes {
            if k < 26 {
                letters.push(char::from(b'a' + k));
            }
        }
        if letters.is_empty() && !with_info {
            self.basename.clone()
        } else {
            format!("{}:2,{}", self.basename, letters)
        }
    }

    /// A `,S=<n>` (physical size) or `,W=<n>` (virtual, CRLF size) field of
    /// the basename, as Dovecot writes them.
    pub fn size_field(&self, key: char) -> Option<u64> {
        self.basename.split(',').skip(1).find_map(|field| {
            let v = field.strip_prefix(key)?.strip_prefix('=')?;
            v.parse().ok()
        })
    }
}

/// Escapes a host name for use in a Maildir basename (`/` and `:` are not
/// allowed; the Maildir spec uses `\057` and `\072`; `.` and `,` would be
/// ambiguous with our fields).
fn safe_host(host: &str) -> String {
    host.chars()
        .map(|c| match c {
            '/' => "\\057".to_string(),
            ':' => "\\072".to_string(),
            ',' => "\\054".to_string(),
            c if c.is_control() => "_".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A new unique basename `<secs>.M<usecs>P<pid>Q<n>R<rand>.<host>,S=<size>,W=<vsize>`:
/// unique across processes (pid), threads and calls (counter) and pid reuse
/// (random part, time).
pub fn new_basename(host: &str, size: u64, vsize: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}R{:08x}.{},S={size},W={vsize}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        rand::random::<u32>(),
        safe_host(host)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dovecot_names() {
        let n = MaildirFileName::parse("1795607174.M887455P11734.vm,S=28,W=32:2,FSab").unwrap();
        assert_eq!(n.basename, "1795607174.M887455P11734.vm,S=28,W=32");
        assert_eq!(n.system, SystemFlags::FLAGGED.union(SystemFlags::SEEN));
        assert_eq!(n.keyword_indexes, [0, 1]);
        assert_eq!(n.size_field('S'), Some(28));
        assert_eq!(n.size_field('W'), Some(32));
        assert_eq!(n.file_name(false), "1795607174.M887455P11734.vm,S=28,W=32:2,FSab");
    }

    #[test]
    fn procmail_style_and_odd_names() {
        let n = MaildirFileName::parse("msg.abcd").unwrap();
        assert_eq!(n.basename, "msg.abcd");
        assert!(n.system.is_empty());
        assert_eq!(n.size_field('S'), None);
        assert_eq!(n.file_name(false), "msg.abcd");
        assert_eq!(n.file_name(true), "msg.abcd:2,");
        assert_eq!(MaildirFileName::parse(".hidden"), None);
        assert_eq!(MaildirFileName::parse(":2,S"), None);
        assert_eq!(MaildirFileName::basename_of(":2,S"), None);
        assert_eq!(MaildirFileName::basename_of(".x"), None);
        assert_eq!(MaildirFileName::basename_of("a,S=1:2,S"), Some("a,S=1"));
        let n = MaildirFileName::parse("x:2,zSa?").unwrap();
        assert_eq!(n.keyword_indexes, [0, 25]);
        assert_eq!(n.file_name(false), "x:2,Saz");
    }

    #[test]
    fn new_names_are_unique_and_parse() {
        let a = new_basename("host:with/odd,chars", 10, 10);
        let b = new_basename("host:with/odd,chars", 10, 10);
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':'));
        let n = MaildirFileName::parse(&a).unwrap();
        assert_eq!(n.basename, a);
        assert_eq!(n.size_field('S'), Some(10));
        assert_eq!(n.size_field('W'), Some(10));
    }
}
