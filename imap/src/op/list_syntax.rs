//! Command syntax of LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819):
//! `LIST [(select-opts)] reference (pattern | (patterns)) [RETURN (opts)]`.
//!
//! imap-codec 2.0.0-alpha.10 parses only the RFC 3501 form of LIST: its
//! `ext_list_extended` feature (imap-types' `extensions::list_extended`)
//! holds response types only and is marked "Unfinished", with no command
//! parser. So a LIST using any extended part is parsed here from the
//! complete command bytes (literals inline); the plain form stays with
//! imap-codec.

use imap_types::status::StatusDataItemName;

/// RFC 5258 selection options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    /// SUBSCRIBED: subscribed names only, existing or not.
    pub subscribed: bool,
    /// REMOTE: remote mailboxes too (we have none: no effect).
    pub remote: bool,
    /// RECURSIVEMATCH: parents of matching children, with CHILDINFO.
    pub recursive: bool,
    /// SPECIAL-USE (RFC 6154): mailboxes with a special-use attribute only.
    pub special_use: bool,
}

/// RFC 5258 / 5819 return options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Returns {
    /// SUBSCRIBED: `\Subscribed`.
    pub subscribed: bool,
    /// CHILDREN: `\HasChildren` / `\HasNoChildren`.
    pub children: bool,
    /// SPECIAL-USE: the special-use attributes.
    pub special_use: bool,
    /// STATUS (items): a `* STATUS` after each selectable mailbox.
    pub status: Option<Vec<StatusDataItemName>>,
}

/// A parsed extended LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListExtended {
    /// The tag.
    pub tag: String,
    /// Selection options.
    pub selection: Selection,
    /// Reference name, as sent (modified UTF-7).
    pub reference: Vec<u8>,
    /// Patterns, as sent.
    pub patterns: Vec<Vec<u8>>,
    /// Return options.
    pub returns: Returns,
}

/// What [`parse`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListSyntax {
    /// Not a LIST, or a plain RFC 3501 LIST: decode it as usual.
    Plain,
    /// An extended LIST.
    Extended(ListExtended),
    /// An extended LIST with an error: tagged BAD with this text.
    Invalid(String, String),
}

/// A reader over one complete command (literals inline); NOTIFY's parser
/// uses it too.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `b`.
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// The byte `n` places ahead.
    pub(crate) fn peek_at(&self, n: usize) -> Option<u8> {
        self.b.get(self.pos + n).copied()
    }

    /// A parenthesized list with nested lists and quoted strings, taken
    /// whole (parentheses included).
    pub(crate) fn balanced(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'\r' | b'\n' => break,
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'(' if !quoted => depth += 1,
                b')' if !quoted => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(&self.b[start..self.pos]);
                    }
                }
                _ => {}
            }
        }
        self.pos = start;
        None
    }

    pub(crate) fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.pos += usize::from(hit);
        hit
    }

    pub(crate) fn at_end(&self) -> bool {
        matches!(&self.b[self.pos..], b"" | b"\r\n" | b"\n")
    }

    /// An atom of list characters (atom chars plus `%`, `*`, `]`).
    pub(crate) fn atom(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c <= b' ' || c >= 0x7f || matches!(c, b'(' | b')' | b'{' | b'"' | b'\\') {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.b[start..self.pos])
    }

    /// A quoted string, a literal or an atom.
    pub(crate) fn string(&mut self) -> Option<Vec<u8>> {
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.pos += 1;
                            return Some(out);
                        }
                        b'\\' => {
                            let c = *self.b.get(self.pos + 1)?;
                            if c != b'"' && c != b'\\' {
                                return None;
                            }
                            out.push(c);
                            self.pos += 2;
                        }
                        b'\r' | b'\n' => return None,
                        c => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            b'{' => {
                let close = self.b[self.pos..].iter().position(|&c| c == b'}')? + self.pos;
                let digits = &self.b[self.pos + 1..close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                let mut p = close + 1;
                if self.b.get(p) == Some(&b'\r') {
                    p += 1;
                }
                if self.b.get(p) != Some(&b'\n') {
                    return None;
                }
                let data = self.b.get(p + 1..p + 1 + n)?;
                self.pos = p + 1 + n;
                Some(data.to_vec())
            }
            _ => self.atom().map(<[u8]>::to_vec),
        }
    }

    /// `(` word *(SP word) `)`, the words upper-cased; an empty list is fine.
    pub(crate) fn word_list(&mut self) -> Option<Vec<String>> {
        if !self.eat(b'(') {
            return None;
        }
        let mut words = Vec::new();
        if self.eat(b')') {
            return Some(words);
        }
        loop {
            words.push(String::from_utf8_lossy(self.atom()?).to_ascii_uppercase());
            if self.eat(b')') {
                return Some(words);
            }
            if !self.eat(b' ') {
                return None;
            }
        }
    }
}

/// Parses `bytes` (one complete command) if it is an extended LIST.
pub(crate) fn parse(bytes: &[u8]) -> ListSyntax {
    let mut c = Cursor { b: bytes, pos: 0 };
    let Some(tag) = c.atom().map(|t| String::from_utf8_lossy(t).into_owned()) else { return ListSyntax::Plain };
    if !c.eat(b' ') || !c.atom().is_some_and(|w| w.eq_ignore_ascii_case(b"LIST")) || !c.eat(b' ') {
        return ListSyntax::Plain;
    }
    let bad = |text: &str| ListSyntax::Invalid(tag.clone(), text.to_string());
    let mut extended = false;
    let mut selection = Selection::default();
    if c.peek() == Some(b'(') {
        extended = true;
        let Some(words) = c.word_list() else { return bad("Invalid LIST selection options.") };
        for w in words {
            match w.as_str() {
                "SUBSCRIBED" => selection.subscribed = true,
                "REMOTE" => selection.remote = true,
                "RECURSIVEMATCH" => selection.recursive = true,
                "SPECIAL-USE" => selection.special_use = true,
                other => return bad(&format!("Unknown LIST selection option {other}.")),
            }
        }
        if !c.eat(b' ') {
            return bad("Invalid LIST arguments.");
        }
    }
    let Some(reference) = c.string() else { return ListSyntax::Plain };
    if !c.eat(b' ') {
        return ListSyntax::Plain;
    }
    let mut patterns = Vec::new();
    if c.eat(b'(') {
        extended = true;
        if !c.eat(b')') {
            loop {
                let Some(p) = c.string() else { return bad("Invalid LIST pattern.") };
                patterns.push(p);
                if c.eat(b')') {
                    break;
                }
                if !c.eat(b' ') {
                    return bad("Invalid LIST patterns.");
                }
            }
        }
    } else {
        let Some(p) = c.string() else { return ListSyntax::Plain };
        patterns.push(p);
    }
    let mut returns = Returns::default();
    if !c.at_end() {
        let has_return = c.eat(b' ') && c.atom().is_some_and(|w| w.eq_ignore_ascii_case(b"RETURN")) && c.eat(b' ');
        if !has_return && !extended {
            return ListSyntax::Plain;
        }
        if !has_return {
            return bad("Invalid LIST arguments.");
        }
        extended = true;
        if let Err(text) = return_options(&mut c, &mut returns) {
            return bad(&text);
        }
        if !c.at_end() {
            return bad("Unexpected characters after the LIST command.");
        }
    }
    if !extended {
        return ListSyntax::Plain;
    }
    if selection.recursive && !selection.subscribed && !selection.special_use {
        return bad("RECURSIVEMATCH must not be the only selection option.");
    }
    ListSyntax::Extended(ListExtended { tag, selection, reference, patterns, returns })
}

fn return_options(c: &mut Cursor<'_>, returns: &mut Returns) -> Result<(), String> {
    let invalid = || "Invalid LIST return options.".to_string();
    if !c.eat(b'(') {
        return Err(invalid());
    }
    if c.eat(b')') {
        return Ok(());
    }
    loop {
        let word = c.atom().ok_or_else(invalid)?.to_ascii_uppercase();
        match word.as_slice() {
            b"SUBSCRIBED" => returns.subscribed = true,
            b"CHILDREN" => returns.children = true,
            b"SPECIAL-USE" => returns.special_use = true,
            b"STATUS" => {
                if !c.eat(b' ') {
                    return Err(invalid());
                }
                let items = c.word_list().ok_or_else(invalid)?;
                let mut names = Vec::new();
                for item in items {
                    names.push(match item.as_str() {
                        "MESSAGES" => StatusDataItemName::Messages,
                        "RECENT" => StatusDataItemName::Recent,
                        "UIDNEXT" => StatusDataItemName::UidNext,
                        "UIDVALIDITY" => StatusDataItemName::UidValidity,
                        "UNSEEN" => StatusDataItemName::Unseen,
                        "HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
                        other => return Err(format!("Unknown STATUS item {other} in LIST RETURN.")),
                    });
                }
                if names.is_empty() {
                    return Err("LIST RETURN STATUS needs at least one item.".to_string());
                }
                returns.status = Some(names);
            }
            other => return Err(format!("Unknown LIST return option {}.", String::from_utf8_lossy(other))),
        }
        if c.eat(b')') {
            return Ok(());
        }
        if !c.eat(b' ') {
            return Err(invalid());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(line: &str) -> ListExtended {
        match parse(line.as_bytes()) {
            ListSyntax::Extended(e) => e,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn plain_lists_are_left_to_imap_codec() {
        for line in ["a LIST \"\" *\r\n", "a LIST \"\" %\r\n", "a LSUB \"\" (x)\r\n", "a NOOP\r\n", "a LIST {0}\r\n {1}\r\n*\r\n"] {
            assert_eq!(parse(line.as_bytes()), ListSyntax::Plain, "{line}");
        }
    }

    #[test]
    fn options_patterns_and_returns() {
        let e = ext("t list (subscribed RECURSIVEMATCH remote) \"\" (INBOX \"a b\" {3}\r\nx/%) return (children STATUS (MESSAGES uidnext) SPECIAL-USE)\r\n");
        assert_eq!(e.tag, "t");
        assert_eq!(e.selection, Selection { subscribed: true, remote: true, recursive: true, special_use: false });
        assert_eq!(e.patterns, [b"INBOX".to_vec(), b"a b".to_vec(), b"x/%".to_vec()]);
        assert!(e.returns.children && e.returns.special_use && !e.returns.subscribed);
        assert_eq!(e.returns.status, Some(vec![StatusDataItemName::Messages, StatusDataItemName::UidNext]));
        let e = ext("t LIST \"\" % RETURN ()\r\n");
        assert_eq!(e.returns, Returns::default());
        assert_eq!(ext("t LIST () \"\" ()\r\n").patterns, Vec::<Vec<u8>>::new());
    }

    #[test]
    fn errors_are_reported() {
        for (line, text) in [
            ("t LIST (RECURSIVEMATCH) \"\" %\r\n", "RECURSIVEMATCH must not be the only selection option."),
            ("t LIST (RECURSIVEMATCH REMOTE) \"\" %\r\n", "RECURSIVEMATCH must not be the only selection option."),
            ("t LIST (BOGUS) \"\" %\r\n", "Unknown LIST selection option BOGUS."),
            ("t LIST \"\" % RETURN (BOGUS)\r\n", "Unknown LIST return option BOGUS."),
            ("t LIST \"\" % RETURN (STATUS (SIZE))\r\n", "Unknown STATUS item SIZE in LIST RETURN."),
            ("t LIST \"\" % RETURN (STATUS ())\r\n", "LIST RETURN STATUS needs at least one item."),
            ("t LIST \"\" % RETURN (CHILDREN\r\n", "Invalid LIST return options."),
            ("t LIST \"\" (a b\r\n", "Invalid LIST patterns."),
        ] {
            assert_eq!(parse(line.as_bytes()), ListSyntax::Invalid("t".into(), text.into()), "{line}");
        }
    }
}
