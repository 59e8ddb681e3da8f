//! `dovecot-uidlist` version 3, the UID map Dovecot and we share.
//!
//! ```text
//! 3 V1795607174 N4 G4d6be83486ca066bd62d000083ecc375
//! 1 :1795607174.M887455P11734.vm,S=28,W=32
//! 2 W1234 :1795607175.M1P2.vm,S=1200
//! ```
//!
//! Header: version `3`, then space-separated fields keyed by one letter
//! (`V` UIDVALIDITY, `N` next UID, `G` mailbox GUID in hex; others are kept
//! verbatim). Records: `<uid>`, optional extension fields (kept verbatim),
//! then `:<basename>`. Dovecot appends records without rewriting the header,
//! so the next UID is `max(N, last UID + 1)`.

use std::collections::HashMap;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRecord {
    /// The UID.
    pub uid: u32,
    /// Extension fields as written (e.g. `W1234`), kept for Dovecot.
    pub extensions: Vec<String>,
    /// The file's basename (no `:2,` info).
    pub basename: String,
}

/// A parsed uidlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidList {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// The UID the next new message gets.
    pub next_uid: u32,
    /// Mailbox GUID (32 hex digits), kept as written.
    pub guid: String,
    /// Other header fields, verbatim.
    pub other_header: Vec<String>,
    /// Records sorted by UID.
    pub records: Vec<UidRecord>,
}

/// Why a uidlist did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidListError {
    /// The header is missing, of another version, or lacks `V`/`N`.
    #[error("bad header: {0}")]
    BadHeader(String),
}

impl UidList {
    /// An empty list for a new mailbox.
    pub fn new(uidvalidity: u32) -> Self {
        let guid: String = (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        UidList { uidvalidity, next_uid: 1, guid, other_header: Vec::new(), records: Vec::new() }
    }

    /// Parses the file. Broken record lines (a torn write by a foreign
    /// writer, a bad UID, UIDs not ascending) are skipped with a warning: the
    /// file's messages then get new UIDs rather than losing mail.
    ///
    /// # Errors
    /// [`UidListError::BadHeader`] if the header is unusable.
    pub fn parse(text: &str) -> Result<Self, UidListError> {
        Self::parse_appendable(text).map(|(list, _)| list)
    }

    /// [`UidList::parse`], also telling whether records can be appended to
    /// the file `text` came from: true if it ends with a newline and every
    /// record line was used (else the next write rewrites it, dropping the
    /// damage).
    ///
    /// # Errors
    /// [`UidListError::BadHeader`] if the header is unusable.
    pub fn parse_appendable(text: &str) -> Result<(Self, bool), UidListError> {
        // Only complete lines count (see the module docs); the header is
        // taken even without its newline (an empty list written by hand).
        let (complete, tail) = match text.rfind('\n') {
            Some(end) => (&text[..end], &text[end + 1..]),
            None => (text, ""),
        };
        if !tail.is_empty() {
            tracing::warn!(tail, "ignoring a torn last dovecot-uidlist record");
        }
        let mut lines = complete.split('\n');
        let header = lines.next().unwrap_or("");
        let mut fields = header.split(' ');
        if fields.next() != Some("3") {
            return Err(UidListError::BadHeader(format!("not version 3: {header:?}")));
        }
        let (mut uidvalidity, mut next_uid, mut guid) = (None, None, String::new());
        let mut other_header = Vec::new();
        for f in fields.filter(|f| !f.is_empty()) {
            let (key, value) = f.split_at(f.chars().next().map_or(0, char::len_utf8));
            match key {
                "V" => uidvalidity = value.parse::<u32>().ok(),
                "N" => next_uid = value.parse::<u32>().ok(),
                "G" => guid = value.to_string(),
                _ => other_header.push(f.to_string()),
            }
        }
        let (Some(uidvalidity), Some(header_next)) = (uidvalidity, next_uid) else {
            return Err(UidListError::BadHeader(format!("missing V or N: {header:?}")));
        };
        if uidvalidity == 0 {
            return Err(UidListError::BadHeader("UIDVALIDITY 0".into()));
        }
        let mut records: Vec<UidRecord> = Vec::new();
        let mut skipped = 0usize;
        let mut seen_names: HashMap<&str, u32> = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((rec, basename)) = Self::parse_record(line) else {
                tracing::warn!(line, "skipping malformed dovecot-uidlist record");
                skipped += 1;
                continue;
            };
            if records.last().is_some_and(|last| rec.uid <= last.uid) {
                tracing::warn!(uid = rec.uid, "skipping non-ascending dovecot-uidlist record");
                skipped += 1;
                continue;
            }
            if let Some(&prev) = seen_names.get(basename) {
                tracing::warn!(uid = rec.uid, prev, "duplicate file in dovecot-uidlist; keeping the first");
                skipped += 1;
                continue;
            }
            seen_names.insert(basename, rec.uid);
            records.push(rec);
        }
        let after_last = records.last().map_or(1, |r| r.uid.saturating_add(1));
        let appendable = skipped == 0 && text.ends_with('\n');
        Ok((UidList { uidvalidity, next_uid: header_next.max(after_last), guid, other_header, records }, appendable))
    }

    /// A record and its basename borrowed from `line`.
    fn parse_record(line: &str) -> Option<(UidRecord, &str)> {
        let (head, basename) = line.split_once(" :")?;
        let mut parts = head.split(' ');
        let uid: u32 = parts.next()?.parse().ok()?;
        if uid == 0 || basename.is_empty() || basename.contains('/') {
            return None;
        }
        let extensions = parts.filter(|p| !p.is_empty()).map(str::to_string).collect();
        Some((UidRecord { uid, extensions, basename: basename.to_string() }, basename))
    }

    /// Adds the records of `text`, complete lines appended to the file this
    /// list was parsed from (see `load_catch_up`). Returns false, changing
    /// nothing, unless every line is a well-formed record with a UID above
    /// the last one and `text` ends with a newline: the caller then reads the
    /// whole file, where [`UidList::parse_appendable`] deals with the damage.
    pub fn append_records(&mut self, text: &str) -> bool {
        let Some(complete) = text.strip_suffix('\n') else {
            return text.is_empty();
        };
        let mut last = self.records.last().map_or(0, |r| r.uid);
        let mut added = Vec::new();
        for line in complete.split('\n') {
            match Self::parse_record(line) {
                Some((rec, _)) if rec.uid > last => {
                    last = rec.uid;
                    added.push(rec);
                }
                _ => return false,
            }
        }
        self.records.extend(added);
        self.next_uid = self.next_uid.max(last.saturating_add(1));
        true
    }

    /// Serializes with the header brought up to date.
    pub fn serialize(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(64 + self.records.iter().map(|r| r.basename.len() + 16).sum::<usize>());
        let _ = write!(s, "3 V{} N{}", self.uidvalidity, self.next_uid);
        if !self.guid.is_empty() {
            let _ = write!(s, " G{}", self.guid);
        }
        for f in &self.other_header {
            s.push(' ');
            s.push_str(f);
        }
        s.push('\n');
        for r in &self.records {
            write_record(&mut s, r);
        }
        s
    }

    /// The record lines of `records[start..]`, as appended to a file whose
    /// first `start` records are already on disk (Dovecot's way: the header
    /// is not rewritten, readers take `max(N, last UID + 1)`).
    pub fn serialize_records_from(&self, start: usize) -> String {
        let mut s = String::new();
        for r in self.records.get(start..).unwrap_or_default() {
            write_record(&mut s, r);
        }
        s
    }

    /// Appends a record for `basename` with the next UID and returns the UID.
    pub fn push(&mut self, basename: &str) -> u32 {
        let uid = self.next_uid;
        self.records.push(UidRecord { uid, extensions: Vec::new(), basename: basename.to_string() });
        self.next_uid = self.next_uid.saturating_add(1);
        uid
    }
}

fn write_record(s: &mut String, r: &UidRecord) {
    use std::fmt::Write as _;
    let _ = write!(s, "{}", r.uid);
    for e in &r.extensions {
        s.push(' ');
        s.push_str(e);
    }
    s.push_str(" :");
    s.push_str(&r.basename);
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOVECOT: &str = "3 V1795607174 N1 G4d6be83486ca066bd62d000083ecc375\n\
        1 :1795607174.M887455P11734.vm,S=28,W=32\n\
        2 :1795607174.M901406P11737.vm,S=30,W=34\n\
        3 W34 :1795607174.M912555P11740.vm,S=30,W=34\n";

    #[test]
    fn reads_dovecot_output() {
        let l = UidList::parse(DOVECOT).unwrap();
        assert_eq!(l.uidvalidity, 1795607174);
        assert_eq!(l.next_uid, 4, "Dovecot appends without updating N");
        assert_eq!(l.guid, "4d6be83486ca066bd62d000083ecc375");
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.records[2].extensions, ["W34"]);
        assert_eq!(l.records[0].basename, "1795607174.M887455P11734.vm,S=28,W=32");
    }

    #[test]
    fn round_trips_and_pushes() {
        let mut l = UidList::parse(DOVECOT).unwrap();
        assert_eq!(l.push("msg.abcd"), 4);
        let text = l.serialize();
        assert!(text.starts_with("3 V1795607174 N5 G4d6be83486ca066bd62d000083ecc375\n"));
        assert!(text.ends_with("3 W34 :1795607174.M912555P11740.vm,S=30,W=34\n4 :msg.abcd\n"));
        assert_eq!(UidList::parse(&text).unwrap(), l);
        let fresh = UidList::new(7);
        assert_eq!(fresh.guid.len(), 32);
        assert_eq!(UidList::parse(&fresh.serialize()).unwrap(), fresh);
    }

    #[test]
    fn appended_records_are_added_and_damage_refused() {
        let mut l = UidList::parse("3 V9 N2\n1 :a\n").unwrap();
        assert!(l.append_records("2 :b\n5 W10 :c\n"));
        assert_eq!(l.records.iter().map(|r| r.uid).collect::<Vec<_>>(), [1, 2, 5]);
        assert_eq!(l.next_uid, 6);
        let before = l.clone();
        assert!(!l.append_records("6 :d\n7 :e"), "torn tail");
        assert!(!l.append_records("4 :d\n"), "not ascending");
        assert!(!l.append_records("garbage\n"));
        assert_eq!(l, before, "a refused tail changes nothing");
    }

    #[test]
    fn tolerates_damage() {
        assert!(UidList::parse("").is_err());
        assert!(UidList::parse("1 123 4\n").is_err());
        assert!(UidList::parse("3 N5\n").is_err());
        let l = UidList::parse("3 V9 N2\n1 :a\ngarbage\n0 :zero\n5 :b\n4 :c\n6 :a\n7 :d\n").unwrap();
        let names: Vec<&str> = l.records.iter().map(|r| r.basename.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert_eq!(l.next_uid, 8);
        assert_eq!(UidList::parse("3 V9 N2").unwrap().next_uid, 2, "a header alone, without newline");
        assert!(!UidList::parse_appendable("3 V9 N2\n1 :a\ngarbage\n").unwrap().1, "damage: rewrite");
        assert!(!UidList::parse_appendable("3 V9 N2\n1 :a\n2 :b").unwrap().1, "torn tail: rewrite");
        assert!(UidList::parse_appendable("3 V9 N2\n1 :a\n").unwrap().1);
    }

    #[test]
    fn appended_records_parse_and_a_torn_tail_is_dropped_at_every_byte() {
        let mut l = UidList::parse(DOVECOT).unwrap();
        let on_disk = l.records.len();
        l.push("new-one,S=10");
        l.push("new-two,S=20");
        let appended = l.serialize_records_from(on_disk);
        assert_eq!(appended, "4 :new-one,S=10\n5 :new-two,S=20\n");
        let full = format!("{DOVECOT}{appended}");
        assert_eq!(UidList::parse(&full).unwrap().records, l.records);
        // Cut anywhere inside the last record: it is gone, the others stay,
        // and its UID is handed out again (nobody was told it).
        let last_start = full.len() - "5 :new-two,S=20\n".len();
        for cut in last_start..full.len() {
            let torn = UidList::parse(&full[..cut]).unwrap();
            assert_eq!(torn.records, l.records[..4], "cut at {cut}");
            assert_eq!(torn.next_uid, 5, "cut at {cut}");
        }
    }
}
