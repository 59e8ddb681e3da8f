//! Header summaries of new messages for push consumers (mail-parser 0.11).

use mail_parser::{Address, MessageParser};

use crate::MessageSummary;

/// Builds the summary of a raw message: decoded `From` and `Subject`, and
/// the start of the first text part with whitespace collapsed, each cut at a
/// character boundary to its byte limit. Never fails: unparsable parts are
/// left empty.
pub fn summarize(raw: &[u8]) -> MessageSummary {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return MessageSummary::default();
    };
    let from = msg.from().map(format_address).unwrap_or_default();
    let subject = msg.subject().unwrap_or_default();
    let snippet = msg.body_text(0).map(|t| collapse_whitespace(&t)).unwrap_or_default();
    MessageSummary {
        from: truncate(&collapse_whitespace(&from), MessageSummary::MAX_FIELD),
        subject: truncate(&collapse_whitespace(subject), MessageSummary::MAX_FIELD),
        snippet: truncate(&snippet, MessageSummary::MAX_SNIPPET),
    }
}

fn format_address(addr: &Address<'_>) -> String {
    let parts: Vec<String> = addr
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_string(),
            (None, Some(e)) => e.to_string(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    parts.join(", ")
}

/// Replaces runs of whitespace with one space and trims the ends.
pub fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_headers_and_snippet() {
        let raw = b"From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.org>\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n\r\n   world\tagain\r\n";
        let s = summarize(raw);
        assert_eq!(s.from, "Jürgen <j@example.org>");
        assert_eq!(s.subject, "Grüße");
        assert_eq!(s.snippet, "Hello world again");
    }

    #[test]
    fn multipart_takes_first_text_part() {
        let raw = b"From: a@b\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/alternative; boundary=XX\r\n\r\n--XX\r\n\
            Content-Type: text/plain\r\n\r\nplain part\r\n--XX\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--XX--\r\n";
        let s = summarize(raw);
        assert_eq!(s.from, "a@b");
        assert_eq!(s.snippet, "plain part");
    }

    #[test]
    fn bounded_at_char_boundaries() {
        let body = "ü".repeat(400);
        let raw = format!("Subject: {}\r\n\r\n{}\r\n", "é".repeat(300), body);
        let s = summarize(raw.as_bytes());
        assert!(s.subject.len() <= MessageSummary::MAX_FIELD && s.subject.len() >= MessageSummary::MAX_FIELD - 1);
        assert!(s.snippet.len() <= MessageSummary::MAX_SNIPPET);
        assert!(s.snippet.chars().all(|c| c == 'ü'));
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(summarize(b"\xff\xfe"), summarize(b"\xff\xfe"));
    }
}
