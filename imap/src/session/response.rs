//! Low-level IMAP response syntax: strings, literals, flag lists.
//!
//! Responses are written by hand rather than through imap-codec's encoder:
//! imap-types 2.0-alpha cannot express every response we send (VANISHED
//! (EARLIER), ESEARCH, HIGHESTMODSEQ in STATUS with our own ordering, raw
//! BODYSTRUCTURE of malformed MIME), and building its validated types for
//! each line costs more than writing the few syntax rules below, which are
//! exercised by the byte-script tests.

use storage_hooks::Flags;

/// True if `b` may appear in an IMAP atom.
fn is_atom_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// Appends `s` as an IMAP `string`: quoted if it is short 7-bit text,
/// otherwise a literal (shared with the hibernate process, whose answers
/// must be byte-identical to ours).
pub(crate) fn string(out: &mut Vec<u8>, s: &[u8]) {
    hibernate::core::render::string(out, s);
}

/// Appends a literal `{n}\r\n<bytes>`.
pub(crate) fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// Appends `s` as an `astring`: a bare atom if possible.
pub(crate) fn astring(out: &mut Vec<u8>, s: &[u8]) {
    if !s.is_empty() && s.iter().all(|&b| is_atom_char(b)) && !s.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(s);
    } else {
        string(out, s);
    }
}

/// Appends an `nstring`.
pub(crate) fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// `(\Seen \Flagged kw)` with an optional `\Recent`.
pub(crate) fn flag_list(out: &mut Vec<u8>, flags: &Flags, recent: bool) {
    out.push(b'(');
    let mut s = flags.to_imap_string();
    if recent {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str("\\Recent");
    }
    out.extend_from_slice(s.as_bytes());
    out.push(b')');
}

/// Compresses sorted numbers into an IMAP sequence set `1:3,7`.
pub(crate) fn number_set(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = nums[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut o = Vec::new();
        astring(&mut o, b"INBOX");
        o.push(b' ');
        astring(&mut o, b"a b\"c");
        o.push(b' ');
        astring(&mut o, b"x\r\ny");
        assert_eq!(o, b"INBOX \"a b\\\"c\" {4}\r\nx\r\ny");
        assert_eq!(number_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }
}
