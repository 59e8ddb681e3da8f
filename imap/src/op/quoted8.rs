//! 8-bit quoted strings in search arguments.
//!
//! RFC 3501's `quoted` is 7-bit, but clients (curl, imap-tools, Roundcube)
//! send `SEARCH CHARSET UTF-8 SUBJECT "München"` with raw UTF-8 between the
//! quotes, and Dovecot accepts it. imap-codec only accepts 8-bit data in
//! literals, so before decoding SEARCH, SORT and THREAD such quoted strings
//! are rewritten as the equivalent synchronizing literal.

/// Rewrites every quoted string holding a byte >= 0x80 in `bytes` (one
/// complete command, literals inline) as a `{n}\r\n` literal. Literals
/// already present are copied untouched. `None` if nothing needed rewriting.
pub(crate) fn quoted_8bit_to_literals(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                // `{n}` or `{n+}` then CRLF: copy the literal as it is.
                if let Some((len, header_end)) = literal_header(&bytes[i..]) {
                    let end = (i + header_end + len).min(bytes.len());
                    out.extend_from_slice(&bytes[i..end]);
                    i = end;
                    continue;
                }
                out.push(b'{');
                i += 1;
            }
            b'"' => {
                let Some((content, consumed)) = quoted(&bytes[i..]) else {
                    // Unterminated: leave it for the decoder to reject.
                    out.extend_from_slice(&bytes[i..]);
                    break;
                };
                if content.is_ascii() {
                    out.extend_from_slice(&bytes[i..i + consumed]);
                } else {
                    out.extend_from_slice(format!("{{{}}}\r\n", content.len()).as_bytes());
                    out.extend_from_slice(&content);
                    changed = true;
                }
                i += consumed;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Length of a literal announced at the start of `b` and the offset of its
/// data (after `}` CRLF).
fn literal_header(b: &[u8]) -> Option<(usize, usize)> {
    let close = b.iter().take(16).position(|&c| c == b'}')?;
    let digits = b[1..close].strip_suffix(b"+").unwrap_or(&b[1..close]);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let rest = &b[close + 1..];
    let eol = if rest.starts_with(b"\r\n") {
        2
    } else if rest.starts_with(b"\n") {
        1
    } else {
        return None;
    };
    Some((len, close + 1 + eol))
}

/// The unescaped content of the quoted string at the start of `b` and the
/// bytes it spans (both quotes included). `None` if it does not end on this
/// line.
fn quoted(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut content = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && matches!(b[i + 1], b'"' | b'\\') => {
                content.push(b[i + 1]);
                i += 2;
            }
            b'"' => return Some((content, i + 1)),
            b'\r' | b'\n' => return None,
            c => {
                content.push(c);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_8bit_quoted_strings() {
        let cmd = "a SEARCH CHARSET UTF-8 SUBJECT \"München\" FROM \"x\\\"y\"\r\n".as_bytes();
        let out = quoted_8bit_to_literals(cmd).unwrap();
        assert_eq!(out, "a SEARCH CHARSET UTF-8 SUBJECT {8}\r\nMünchen FROM \"x\\\"y\"\r\n".as_bytes());
        assert_eq!(quoted_8bit_to_literals(b"a SEARCH SUBJECT \"plain\"\r\n"), None);
        // A literal holding a quote and 8-bit data is not touched.
        let lit = "a SEARCH SUBJECT {3}\r\n\"é BODY \"ü\"\r\n".as_bytes();
        let out = quoted_8bit_to_literals(lit).unwrap();
        assert_eq!(out, "a SEARCH SUBJECT {3}\r\n\"é BODY {2}\r\nü\r\n".as_bytes());
        // Unterminated quotes stay for the decoder to reject.
        assert_eq!(quoted_8bit_to_literals("a SEARCH SUBJECT \"é\r\n".as_bytes()), None);
    }
}
