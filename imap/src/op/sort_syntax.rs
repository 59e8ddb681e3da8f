//! Command syntax of SORT (RFC 5256, with ESORT's RETURN of RFC 5267 and
//! SORT=DISPLAY's keys of RFC 5957) and THREAD.
//!
//! imap-codec 2.0-alpha parses neither; both end in a charset and SEARCH
//! criteria, so the sort program or algorithm is cut out here and the rest
//! becomes `tag [UID] SEARCH CHARSET c criteria` for imap-codec to decode.

use crate::op::esearch::ReturnOptions;

/// One SORT key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKey {
    /// Internal date.
    Arrival,
    /// First Cc addr-mailbox.
    Cc,
    /// Sent date.
    Date,
    /// First From addr-mailbox.
    From,
    /// RFC822.SIZE.
    Size,
    /// Base subject.
    Subject,
    /// First To addr-mailbox.
    To,
    /// First From display name (RFC 5957).
    DisplayFrom,
    /// First To display name (RFC 5957).
    DisplayTo,
}

/// A sort criterion: a key, possibly reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SortCriterion {
    /// The key.
    pub key: SortKey,
    /// `REVERSE` was given.
    pub reverse: bool,
}

/// THREAD algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadAlgorithm {
    /// RFC 5256 ORDEREDSUBJECT.
    OrderedSubject,
    /// RFC 5256 REFERENCES.
    References,
}

/// What a SORT or THREAD command asks besides its search criteria.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ordering {
    /// SORT, with ESORT result options when `RETURN` was given.
    Sort {
        /// The sort program.
        criteria: Vec<SortCriterion>,
        /// `RETURN (...)` options (ESORT).
        ret: Option<ReturnOptions>,
    },
    /// THREAD.
    Thread(ThreadAlgorithm),
}

/// Outcome of looking for SORT / THREAD.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// Another command.
    None,
    /// The command as SEARCH, and what SORT/THREAD adds.
    Found(Vec<u8>, Ordering),
    /// SORT/THREAD with invalid arguments (the reason).
    Invalid(&'static str),
}

/// Splits `tag [UID] SORT ...` / `tag [UID] THREAD ...` (one complete
/// command, literals inline) into a SEARCH command plus its ordering.
pub(crate) fn split_sort_thread(bytes: &[u8]) -> Split {
    let mut p = Parser { b: bytes, i: 0 };
    let Some(tag) = p.word() else { return Split::None };
    let mut name = p.word().unwrap_or_default();
    let uid = name.eq_ignore_ascii_case(b"UID");
    if uid {
        name = p.word().unwrap_or_default();
    }
    let is_sort = name.eq_ignore_ascii_case(b"SORT");
    if !is_sort && !name.eq_ignore_ascii_case(b"THREAD") {
        return Split::None;
    }
    let ordering = if is_sort {
        let mut ret = None;
        if p.peek_word_ci(b"RETURN") {
            p.word();
            match p.parenthesized().map(return_options) {
                Some(Some(r)) => ret = Some(r),
                _ => return Split::Invalid("Invalid SORT RETURN options."),
            }
        }
        let Some(list) = p.parenthesized() else { return Split::Invalid("Missing sort criteria.") };
        match sort_criteria(list) {
            Some(criteria) => Ordering::Sort { criteria, ret },
            None => return Split::Invalid("Invalid sort criteria."),
        }
    } else {
        let alg = p.word().unwrap_or_default();
        if alg.eq_ignore_ascii_case(b"ORDEREDSUBJECT") {
            Ordering::Thread(ThreadAlgorithm::OrderedSubject)
        } else if alg.eq_ignore_ascii_case(b"REFERENCES") {
            Ordering::Thread(ThreadAlgorithm::References)
        } else {
            return Split::Invalid("Unknown thread algorithm.");
        }
    };
    let Some(charset) = p.charset() else { return Split::Invalid("Missing charset.") };
    while bytes.get(p.i) == Some(&b' ') {
        p.i += 1;
    }
    let rest = &bytes[p.i..];
    if rest.iter().take_while(|b| **b != b'\n').all(u8::is_ascii_whitespace) {
        return Split::Invalid("Missing search criteria.");
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(tag);
    out.extend_from_slice(if uid { b" UID SEARCH CHARSET " } else { b" SEARCH CHARSET " });
    out.extend_from_slice(charset);
    out.push(b' ');
    out.extend_from_slice(rest);
    Split::Found(out, ordering)
}

fn return_options(list: &[u8]) -> Option<ReturnOptions> {
    let mut r = ReturnOptions::default();
    for w in list.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        match w.to_ascii_uppercase().as_slice() {
            b"MIN" => r.min = true,
            b"MAX" => r.max = true,
            b"COUNT" => r.count = true,
            b"ALL" => r.all = true,
            _ => return None,
        }
    }
    if r == ReturnOptions::default() {
        // RFC 4731 §3.1 (RFC 5267 §3.2 reuses it): `RETURN ()` means ALL.
        r.all = true;
    }
    Some(r)
}

fn sort_criteria(list: &[u8]) -> Option<Vec<SortCriterion>> {
    let mut out = Vec::new();
    let mut reverse = false;
    for w in list.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        let key = match w.to_ascii_uppercase().as_slice() {
            b"REVERSE" if !reverse => {
                reverse = true;
                continue;
            }
            b"ARRIVAL" => SortKey::Arrival,
            b"CC" => SortKey::Cc,
            b"DATE" => SortKey::Date,
            b"FROM" => SortKey::From,
            b"SIZE" => SortKey::Size,
            b"SUBJECT" => SortKey::Subject,
            b"TO" => SortKey::To,
            b"DISPLAYFROM" => SortKey::DisplayFrom,
            b"DISPLAYTO" => SortKey::DisplayTo,
            _ => return None,
        };
        out.push(SortCriterion { key, reverse });
        reverse = false;
    }
    (!reverse && !out.is_empty()).then_some(out)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    /// The next space-delimited word of the first line (spaces skipped).
    fn word(&mut self) -> Option<&'a [u8]> {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        let start = self.i;
        while self.i < self.b.len() && !matches!(self.b[self.i], b' ' | b'\r' | b'\n' | b'(') {
            self.i += 1;
        }
        (self.i > start).then(|| &self.b[start..self.i])
    }

    fn peek_word_ci(&self, w: &[u8]) -> bool {
        let mut j = self.i;
        while self.b.get(j) == Some(&b' ') {
            j += 1;
        }
        self.b.len() > j + w.len() && self.b[j..j + w.len()].eq_ignore_ascii_case(w) && self.b[j + w.len()] == b' '
    }

    /// `( ... )` without nesting: the inside.
    fn parenthesized(&mut self) -> Option<&'a [u8]> {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        if self.b.get(self.i) != Some(&b'(') {
            return None;
        }
        let start = self.i + 1;
        let len = self.b[start..].iter().position(|&c| matches!(c, b')' | b'(' | b'\r' | b'\n'))?;
        if self.b[start + len] != b')' {
            return None;
        }
        self.i = start + len + 1;
        Some(&self.b[start..start + len])
    }

    /// An atom or a simple quoted string, as written (quotes included).
    fn charset(&mut self) -> Option<&'a [u8]> {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        if self.b.get(self.i) == Some(&b'"') {
            let start = self.i;
            let len = self.b[start + 1..].iter().position(|&c| matches!(c, b'"' | b'\\' | b'\r' | b'\n'))?;
            if self.b[start + 1 + len] != b'"' {
                return None;
            }
            self.i = start + len + 2;
            return Some(&self.b[start..self.i]);
        }
        self.word()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_and_thread_become_search() {
        let Split::Found(cmd, o) = split_sort_thread(b"a UID SORT (REVERSE DATE subject) UTF-8 ALL\r\n") else {
            panic!()
        };
        assert_eq!(cmd, b"a UID SEARCH CHARSET UTF-8 ALL\r\n");
        let rev_date = SortCriterion { key: SortKey::Date, reverse: true };
        let subject = SortCriterion { key: SortKey::Subject, reverse: false };
        assert_eq!(o, Ordering::Sort { criteria: vec![rev_date, subject], ret: None });
        let Split::Found(cmd, o) = split_sort_thread(b"b SORT RETURN (MIN COUNT) (ARRIVAL) \"US-ASCII\" UNSEEN\r\n")
        else {
            panic!()
        };
        assert_eq!(cmd, b"b SEARCH CHARSET \"US-ASCII\" UNSEEN\r\n");
        let Ordering::Sort { ret: Some(r), .. } = o else { panic!() };
        assert!(r.min && r.count && !r.max && !r.all);
        let Split::Found(cmd, o) = split_sort_thread(b"c THREAD references UTF-8 SUBJECT {2}\r\nab\r\n") else {
            panic!()
        };
        assert_eq!(cmd, b"c SEARCH CHARSET UTF-8 SUBJECT {2}\r\nab\r\n");
        assert_eq!(o, Ordering::Thread(ThreadAlgorithm::References));
        assert_eq!(split_sort_thread(b"d SEARCH ALL\r\n"), Split::None);
        assert!(matches!(split_sort_thread(b"e SORT (REVERSE) UTF-8 ALL\r\n"), Split::Invalid(_)));
        assert!(matches!(split_sort_thread(b"e SORT (FOO) UTF-8 ALL\r\n"), Split::Invalid(_)));
        assert!(matches!(split_sort_thread(b"e SORT (DATE) UTF-8\r\n"), Split::Invalid(_)));
        assert!(matches!(split_sort_thread(b"e SORT DATE UTF-8 ALL\r\n"), Split::Invalid(_)));
        assert!(matches!(split_sort_thread(b"e THREAD FOO UTF-8 ALL\r\n"), Split::Invalid(_)));
        assert!(matches!(split_sort_thread(b"e SORT RETURN (X) (DATE) UTF-8 ALL\r\n"), Split::Invalid(_)));
    }
}
