//! Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of folder names on
//! disk (Dovecot writes `.&ANw-n` for `.Ün`) and in the `subscriptions` file.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encodes a UTF-8 string as modified UTF-7.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut out, &mut pending);
    out
}

fn flush(out: &mut String, pending: &mut Vec<u16>) {
    if pending.is_empty() {
        return;
    }
    out.push('&');
    let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out.push('-');
    pending.clear();
}

/// Decodes modified UTF-7; `None` for anything malformed (non-ASCII input,
/// bad base64, unpaired surrogates, non-minimal encodings of printable ASCII).
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..=0x7e).contains(&b) {
            return None;
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let end = i + 1 + bytes[i + 1..].iter().position(|&c| c == b'-')?;
        let chunk = &bytes[i + 1..end];
        if chunk.is_empty() {
            out.push('&');
        } else {
            out.push_str(&decode_base64_utf16(chunk)?);
        }
        i = end + 1;
    }
    Some(out)
}

fn decode_base64_utf16(chunk: &[u8]) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut units: Vec<u16> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for &c in chunk {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // Leftover bits must be zero padding, and whole UTF-16 units only.
    if bits != 0 || bytes.len() % 2 != 0 {
        return None;
    }
    for pair in bytes.chunks(2) {
        units.push(u16::from_be_bytes([pair[0], pair[1]]));
    }
    let s = String::from_utf16(&units).ok()?;
    // Printable ASCII must not be base64-encoded (keeps the encoding unique).
    if s.chars().any(|c| (' '..='~').contains(&c)) {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_dovecot_output() {
        // Dovecot 2.3 created ".&ANw-n&AO8-code&-Co" for "Ünïcode&Co".
        assert_eq!(encode("Ünïcode&Co"), "&ANw-n&AO8-code&-Co");
        assert_eq!(decode("&ANw-n&AO8-code&-Co").as_deref(), Some("Ünïcode&Co"));
    }

    #[test]
    fn rfc3501_example_and_round_trips() {
        assert_eq!(encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        for s in ["", "plain", "&", "a&b", "😀 emoji", "Entwürfe", "日本語", "x\u{1}y"] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s), "{s}");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode("&"), None);
        assert_eq!(decode("&ZeVnLIqe"), None);
        assert_eq!(decode("&AGE-"), None); // "a" encoded: not minimal
        assert_eq!(decode("&2D0-"), None); // lone surrogate
        assert_eq!(decode("é"), None);
        assert_eq!(decode("&!!-"), None);
    }
}
