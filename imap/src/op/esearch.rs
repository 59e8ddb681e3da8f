//! ESEARCH (RFC 4731): `SEARCH RETURN (MIN MAX COUNT ALL)`.
//!
//! imap-codec 2.0-alpha cannot parse the RETURN clause, so it is cut out of
//! the command line here before decoding and applied to the result.

/// Result options of `SEARCH RETURN (...)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReturnOptions {
    pub min: bool,
    pub max: bool,
    pub count: bool,
    pub all: bool,
    /// SEARCHRES (RFC 5182): keep the result as `$`.
    pub save: bool,
}

impl ReturnOptions {
    /// Only SAVE was asked: no ESEARCH response (RFC 5182 §2.1).
    pub(crate) fn save_only(self) -> bool {
        self.save && !(self.min || self.max || self.count || self.all)
    }
}

/// Outcome of looking for a RETURN clause.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SearchReturn {
    /// Not a `SEARCH RETURN` command.
    None,
    /// The command without the clause, plus the options.
    Found(Vec<u8>, ReturnOptions),
    /// A RETURN clause we cannot accept (unknown option, unbalanced).
    Invalid,
}

/// Finds `tag [UID] SEARCH RETURN (opts)` at the start of `bytes`.
pub(crate) fn split_search_return(bytes: &[u8]) -> SearchReturn {
    let line_end = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
    let line = &bytes[..line_end];
    let words: Vec<&[u8]> = line.splitn(4, |&b| b == b' ').collect();
    let (head_words, rest) = match words.as_slice() {
        [_, uid, search, rest] if uid.eq_ignore_ascii_case(b"UID") && search.eq_ignore_ascii_case(b"SEARCH") => (3, *rest),
        [_, search, rest @ ..] if search.eq_ignore_ascii_case(b"SEARCH") && !rest.is_empty() => {
            // Re-join what splitn cut after the command name.
            let start = words[0].len() + 1 + words[1].len() + 1;
            let _ = rest;
            (2, &line[start..])
        }
        _ => return SearchReturn::None,
    };
    if rest.len() < 7 || !rest[..7].eq_ignore_ascii_case(b"RETURN ") {
        return SearchReturn::None;
    }
    let after = &rest[7..];
    if after.first() != Some(&b'(') {
        return SearchReturn::Invalid;
    }
    let Some(close) = after.iter().position(|&b| b == b')') else { return SearchReturn::Invalid };
    let mut opts = ReturnOptions::default();
    for word in after[1..close].split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        match word.to_ascii_uppercase().as_slice() {
            b"MIN" => opts.min = true,
            b"MAX" => opts.max = true,
            b"COUNT" => opts.count = true,
            b"ALL" => opts.all = true,
            b"SAVE" => opts.save = true,
            _ => return SearchReturn::Invalid,
        }
    }
    if opts == ReturnOptions::default() {
        // `RETURN ()` means ALL (RFC 4731 3.1).
        opts.all = true;
    }
    let mut remainder = &after[close + 1..];
    if remainder.first() == Some(&b' ') {
        remainder = &remainder[1..];
    }
    let head_len: usize = words[..head_words].iter().map(|w| w.len() + 1).sum();
    let mut out = line[..head_len].to_vec();
    out.extend_from_slice(remainder);
    out.extend_from_slice(&bytes[line_end..]);
    SearchReturn::Found(out, opts)
}

/// The MODSEQ an ESEARCH/ESORT reports: with only MIN and/or MAX, that of
/// the message(s) returned (RFC 4731 §3.2, reused by RFC 5267), `ends` being
/// the first and last result's; else the highest of all results.
pub(crate) fn returned_modseq(r: ReturnOptions, ends: Option<(u64, u64)>, max_modseq: u64) -> u64 {
    match ends {
        // An empty RETURN () means ALL, so here MIN or MAX is set.
        Some((first, last)) if !r.all && !r.count => {
            (if r.min { first } else { 0 }).max(if r.max { last } else { 0 })
        }
        _ => max_modseq,
    }
}

/// `* SEARCH n n ...` or `* SORT n n ...`, with `(MODSEQ m)` after a
/// non-empty result when MODSEQ was searched on (RFC 7162 §3.1.5).
pub(crate) fn numbers_line(name: &str, numbers: &[u32], modseq: Option<u64>) -> String {
    let mut line = format!("* {name}");
    for n in numbers {
        line.push(' ');
        line.push_str(&n.to_string());
    }
    if let (Some(m), false) = (modseq, numbers.is_empty()) {
        line.push_str(&format!(" (MODSEQ {m})"));
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let SearchReturn::Found(cmd, o) = split_search_return(b"a UID SEARCH RETURN (MIN COUNT) ALL\r\n") else { panic!() };
        assert_eq!(cmd, b"a UID SEARCH ALL\r\n");
        assert!(o.min && o.count && !o.max && !o.all);
        let SearchReturn::Found(cmd, o) = split_search_return(b"a search return () UNSEEN\r\n") else { panic!() };
        assert_eq!(cmd, b"a search UNSEEN\r\n");
        assert!(o.all);
        assert_eq!(split_search_return(b"a SEARCH ALL\r\n"), SearchReturn::None);
        assert_eq!(split_search_return(b"a SEARCH RETURN (FOO) ALL\r\n"), SearchReturn::Invalid);
        assert_eq!(split_search_return(b"a FETCH RETURN (MIN)\r\n"), SearchReturn::None);
    }
}
