//! Modified UTF-7 mailbox names (RFC 3501 5.1.3) <-> UTF-8 on the wire.
//!
//! The codec itself lives in `storage_hooks::mutf7` (the store uses it for
//! folder names on disk); this adapter takes the raw bytes imap-codec hands
//! us, which need not be UTF-8.

/// Encodes a UTF-8 name as modified UTF-7.
pub(crate) fn encode(name: &str) -> String {
    storage_hooks::mutf7::encode(name)
}

/// Decodes a modified UTF-7 name from the wire; `None` if malformed.
pub(crate) fn decode(name: &[u8]) -> Option<String> {
    storage_hooks::mutf7::decode(std::str::from_utf8(name).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["INBOX", "Entwürfe", "a&b", "日本語/x", "~peter/mail/台北/日本語"] {
            assert_eq!(decode(encode(s).as_bytes()).as_deref(), Some(s));
        }
        assert_eq!(encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode(b"&Jjo!"), None);
        assert_eq!(decode(b"\xff"), None);
    }
}
