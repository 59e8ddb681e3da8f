//! The per-mailbox `dovecot-keywords` file mapping Maildir keyword letters
//! to IMAP keywords: lines `<index> <keyword>`, letter `a` is index 0, at
//! most 26 keywords. Keywords beyond 26 cannot be stored in file names; the
//! store keeps them in its own index (see `index_file`).

/// Number of keyword letters available (`a..z`).
pub const MAX_LETTERS: usize = 26;

/// The keyword table of one mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordTable {
    slots: Vec<Option<String>>,
    dirty: bool,
}

impl KeywordTable {
    /// Parses the file; bad lines and indexes >= 26 are skipped.
    pub fn parse(text: &str) -> Self {
        let mut slots: Vec<Option<String>> = Vec::new();
        for line in text.lines() {
            let Some((idx, name)) = line.split_once(' ') else { continue };
            let Ok(idx) = idx.parse::<usize>() else { continue };
            if idx >= MAX_LETTERS || name.is_empty() {
                continue;
            }
            if slots.len() <= idx {
                slots.resize(idx + 1, None);
            }
            if !slots.iter().flatten().any(|n| n == name) {
                slots[idx] = Some(name.to_string());
            }
        }
        KeywordTable { slots, dirty: false }
    }

    /// Serializes in Dovecot's format.
    pub fn serialize(&self) -> String {
        let mut s = String::new();
        for (i, name) in self.slots.iter().enumerate() {
            if let Some(name) = name {
                s.push_str(&format!("{i} {name}\n"));
            }
        }
        s
    }

    /// The keyword of letter index `idx`.
    pub fn name(&self, idx: u8) -> Option<&str> {
        self.slots.get(usize::from(idx)).and_then(|s| s.as_deref())
    }

    /// The letter index of `name`, if it has one.
    pub fn index_of(&self, name: &str) -> Option<u8> {
        self.slots.iter().position(|s| s.as_deref() == Some(name)).map(|i| i as u8)
    }

    /// The letter index of `name`, allocating a free one; `None` when all 26
    /// letters are taken.
    pub fn ensure(&mut self, name: &str) -> Option<u8> {
        if let Some(i) = self.index_of(name) {
            return Some(i);
        }
        let free = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < MAX_LETTERS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        self.slots[free] = Some(name.to_string());
        self.dirty = true;
        Some(free as u8)
    }

    /// True if every keyword of `other` has the same letter here.
    pub fn is_superset_of(&self, other: &KeywordTable) -> bool {
        other.slots.iter().enumerate().all(|(i, name)| name.is_none() || self.slots.get(i) == Some(name))
    }

    /// True if [`KeywordTable::ensure`] added a keyword since parsing.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the table as written.
    pub fn mark_clean(&mut self) {
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dovecot_file_and_allocates() {
        let mut t = KeywordTable::parse("0 $Junk\n1 Kw2\nbad line\n30 Overflow\n");
        assert_eq!(t.name(0), Some("$Junk"));
        assert_eq!(t.index_of("Kw2"), Some(1));
        assert!(!t.is_dirty());
        assert_eq!(t.ensure("$Junk"), Some(0));
        assert!(!t.is_dirty());
        assert_eq!(t.ensure("New"), Some(2));
        assert!(t.is_dirty());
        assert_eq!(t.serialize(), "0 $Junk\n1 Kw2\n2 New\n");
        assert_eq!(KeywordTable::parse(&t.serialize()).index_of("New"), Some(2));
    }

    #[test]
    fn full_table_refuses_27th() {
        let mut t = KeywordTable::default();
        for i in 0..26 {
            assert_eq!(t.ensure(&format!("k{i}")), Some(i as u8));
        }
        assert_eq!(t.ensure("k26"), None);
        assert_eq!(t.ensure("k25"), Some(25));
    }

    #[test]
    fn superset() {
        let a = KeywordTable::parse("0 a\n2 c\n");
        let b = KeywordTable::parse("0 a\n1 b\n2 c\n");
        assert!(b.is_superset_of(&a));
        assert!(!a.is_superset_of(&b));
        assert!(!KeywordTable::parse("0 c\n").is_superset_of(&a));
    }

    #[test]
    fn holes_are_reused() {
        let mut t = KeywordTable::parse("0 a\n2 c\n");
        assert_eq!(t.ensure("b"), Some(1));
    }
}
