//! Per-message values SORT and THREAD compare (RFC 5256, RFC 5957): base
//! subject, first addresses, sent date, Message-ID and references. They
//! are extracted from the header once per message and kept in the shared
//! mailbox, so repeated SORT/THREAD commands (a webmail asks on every page)
//! do not read the messages again.

use std::collections::HashMap;
use std::sync::Arc;

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};
use storage_hooks::Mailbox;

/// What SORT and THREAD need of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SortFields {
    /// Sent date (Date: header, as UTC seconds); the internal date when the
    /// header is missing or unparsable (RFC 5256 DATE).
    pub date: i64,
    /// True when `date` came from the Date: header.
    pub has_sent_date: bool,
    /// Base subject (RFC 5256 §2.1) in its i;unicode-casemap form.
    pub base_subject: String,
    /// The subject extraction removed a reply or forward marker.
    pub is_reply_or_forward: bool,
    /// addr-mailbox of the first From / To / Cc address (casemapped).
    pub from: String,
    /// See `from`.
    pub to: String,
    /// See `from`.
    pub cc: String,
    /// RFC 5957 display names (or addresses) of the first From / To.
    pub display_from: String,
    /// See `display_from`.
    pub display_to: String,
    /// Message-ID without the angle brackets.
    pub message_id: Option<String>,
    /// References (or else In-Reply-To) message IDs, oldest first.
    pub references: Vec<String>,
}

/// Cached fields of one mailbox, valid for one UIDVALIDITY.
#[derive(Debug, Default)]
pub(crate) struct SortCache {
    uidvalidity: u32,
    fields: HashMap<u32, Arc<SortFields>>,
}

impl SortCache {
    /// The fields of `uid`, read from `mailbox` the first time.
    pub(crate) fn get(&mut self, mailbox: &Mailbox, uid: u32) -> Arc<SortFields> {
        if self.uidvalidity != mailbox.uidvalidity() {
            self.fields.clear();
            self.uidvalidity = mailbox.uidvalidity();
        }
        // Expunged messages' entries go once they are half the cache.
        if self.fields.len() > 64 && self.fields.len() > mailbox.messages().len() * 2 {
            self.fields.retain(|u, _| mailbox.message(*u).is_some());
        }
        if let Some(f) = self.fields.get(&uid) {
            return Arc::clone(f);
        }
        let internal = mailbox.message(uid).map_or(0, |m| m.internal_date);
        let fields = match mailbox.read_message(uid) {
            Ok(raw) => Arc::new(extract(&raw, internal)),
            // Gone or unreadable: sorts as an empty message now and is read
            // again next time.
            Err(_) => return Arc::new(SortFields { date: internal, ..SortFields::default() }),
        };
        self.fields.insert(uid, Arc::clone(&fields));
        fields
    }
}

/// Extracts the fields from a raw message whose internal date is `internal`.
pub(crate) fn extract(raw: &[u8], internal: i64) -> SortFields {
    let mut f = SortFields { date: internal, ..SortFields::default() };
    let Some(msg) = MessageParser::default().parse_headers(raw) else {
        let (base, reply) = base_subject("");
        f.base_subject = base;
        f.is_reply_or_forward = reply;
        return f;
    };
    if let Some(d) = msg.date() {
        f.date = d.to_timestamp();
        f.has_sent_date = true;
    }
    let (base, reply) = base_subject(msg.subject().unwrap_or(""));
    f.base_subject = base;
    f.is_reply_or_forward = reply;
    f.from = first_mailbox(msg.from());
    f.to = first_mailbox(msg.to());
    f.cc = first_mailbox(msg.cc());
    f.display_from = display(msg.from());
    f.display_to = display(msg.to());
    let headers = msg.parts.first().map(|p| p.headers.as_slice()).unwrap_or(&[]);
    let ids = |name: HeaderName<'_>| -> Vec<String> {
        headers
            .iter()
            .filter(|h| h.name == name)
            .flat_map(|h| match &h.value {
                HeaderValue::Text(t) => vec![t.to_string()],
                HeaderValue::TextList(l) => l.iter().map(|s| s.to_string()).collect(),
                _ => Vec::new(),
            })
            .filter(|s| !s.is_empty())
            .collect()
    };
    f.message_id = ids(HeaderName::MessageId).into_iter().next();
    f.references = ids(HeaderName::References);
    if f.references.is_empty() {
        // RFC 5256 REFERENCES step 1A: without References, the first
        // In-Reply-To message ID.
        f.references = ids(HeaderName::InReplyTo).into_iter().take(1).collect();
    }
    f
}

fn first<'a>(a: Option<&'a Address<'a>>) -> Option<&'a mail_parser::Addr<'a>> {
    match a? {
        Address::List(l) => l.first(),
        Address::Group(g) => g.iter().flat_map(|g| g.addresses.iter()).next(),
    }
}

/// RFC 5256: the addr-mailbox of the first address, compared case-insensitively.
fn first_mailbox(a: Option<&Address<'_>>) -> String {
    let addr = first(a).and_then(|x| x.address.as_deref()).unwrap_or("");
    let mailbox = addr.rsplit_once('@').map_or(addr, |(m, _)| m);
    casemap(mailbox)
}

/// RFC 5957: the decoded display name of the first address, or its
/// `mailbox@host` when it has none.
fn display(a: Option<&Address<'_>>) -> String {
    let Some(x) = first(a) else { return String::new() };
    match x.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => casemap(name),
        None => casemap(x.address.as_deref().unwrap_or("")),
    }
}

/// RFC 5256 §2.1 base subject of a decoded subject, casemapped, and
/// whether a reply/forward marker was removed.
pub(crate) fn base_subject(subject: &str) -> (String, bool) {
    // (1) Whitespace runs (folding included) become one space.
    let mut s = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut marked = false;
    loop {
        // (2) Trailing "(fwd)" and whitespace.
        loop {
            let t = s.trim_end();
            if t.len() >= 5 && t.is_char_boundary(t.len() - 5) && t[t.len() - 5..].eq_ignore_ascii_case("(fwd)") {
                s = t[..t.len() - 5].to_string();
                marked = true;
            } else {
                s = t.to_string();
                break;
            }
        }
        // (3)-(5) Leaders and blobs, until nothing changes.
        loop {
            let t = s.trim_start();
            if let Some(rest) = strip_refwd_leader(t) {
                s = rest.to_string();
                marked = true;
                continue;
            }
            if let Some(rest) = strip_blob(t) {
                if !rest.trim().is_empty() {
                    s = rest.to_string();
                    continue;
                }
            }
            s = t.to_string();
            break;
        }
        // (6) "[fwd:" ... "]" around the whole subject.
        if s.len() >= 6 && s.is_char_boundary(5) && s[..5].eq_ignore_ascii_case("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].to_string();
            marked = true;
            continue;
        }
        break;
    }
    (casemap(&s), marked)
}

/// The comparison form of `s` under i;unicode-casemap (RFC 5051), as
/// Dovecot computes it: each character's simple upper/title-case mapping
/// (a character whose mapping is several characters, like `ß`, stays),
/// then the canonical decomposition. So `Äpfel` sorts after `Apple` and
/// `_x` after `Zebra`, as in Dovecot.
pub(crate) fn casemap(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .nfd()
        .collect()
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at the start: the rest after it.
fn strip_blob(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find([']', '['])?;
    if inner.as_bytes()[end] != b']' {
        return None;
    }
    Some(inner[end + 1..].trim_start())
}

/// `*subj-blob subj-refwd` at the start, where
/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`: the rest.
fn strip_refwd_leader(s: &str) -> Option<&str> {
    let mut t = s;
    while let Some(rest) = strip_blob(t) {
        t = rest;
    }
    let lower = t.get(..3).map(str::to_ascii_lowercase).unwrap_or_else(|| t.to_ascii_lowercase());
    let after = if lower.starts_with("fwd") {
        &t[3..]
    } else if lower.starts_with("fw") || lower.starts_with("re") {
        &t[2..]
    } else {
        return None;
    };
    let mut after = after.trim_start();
    if let Some(rest) = strip_blob(after) {
        after = rest;
    }
    after.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        let b = |s: &str| base_subject(s);
        assert_eq!(b("Re: hello"), ("HELLO".into(), true));
        assert_eq!(b("RE: [list] Fwd: hello (fwd)"), ("HELLO".into(), true));
        assert_eq!(b("[fwd: Re: hello]"), ("HELLO".into(), true));
        assert_eq!(b("[list]  hello\t world"), ("HELLO WORLD".into(), false));
        assert_eq!(b("Re[2]: hello"), ("HELLO".into(), true));
        // A blob that is the whole subject stays.
        assert_eq!(b("[only]"), ("[ONLY]".into(), false));
        assert_eq!(b("Reply about x"), ("REPLY ABOUT X".into(), false));
        assert_eq!(b(""), (String::new(), false));
        assert_eq!(b("Münch: re: x"), ("MU\u{308}NCH: RE: X".into(), false));
    }

    #[test]
    fn fields_of_a_message() {
        let raw = b"From: \"Zed\" <zed@example.org>\r\nTo: amy@example.org\r\nSubject: Re: plans\r\n\
Date: Wed, 25 Nov 2026 10:00:00 +0100\r\nMessage-ID: <m2@x>\r\nIn-Reply-To: <m1@x>\r\n\r\nbody\r\n";
        let f = extract(raw, 7);
        assert_eq!(f.date, 1_795_597_200);
        assert!(f.has_sent_date && f.is_reply_or_forward);
        assert_eq!((f.from.as_str(), f.to.as_str(), f.cc.as_str()), ("ZED", "AMY", ""));
        assert_eq!((f.display_from.as_str(), f.display_to.as_str()), ("ZED", "AMY@EXAMPLE.ORG"));
        assert_eq!(f.message_id.as_deref(), Some("m2@x"));
        assert_eq!(f.references, vec!["m1@x".to_string()]);
        assert_eq!(extract(b"Subject: x\r\n\r\n", 7).date, 7);
    }
}
