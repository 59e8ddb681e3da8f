//! BODY / BODYSTRUCTURE and ENVELOPE rendering (RFC 3501 7.4.2).
//!
//! Written by hand: imap-types' `BodyStructure` requires validated values
//! (e.g. non-empty subtypes, IString without NUL) that real-world broken
//! MIME does not always provide, and rendering must never fail.

use mail_parser::{Address, HeaderValue, MessageParser};

use super::mime_tree::{unfold, MimeNode};
use crate::session::response::{nstring, string};

/// Appends BODYSTRUCTURE (`extended`) or BODY of `node`.
pub(crate) fn body_structure(out: &mut Vec<u8>, raw: &[u8], node: &MimeNode, extended: bool) {
    out.push(b'(');
    if node.is_multipart() {
        if node.children.is_empty() {
            // RFC 3501 needs at least one part; describe an empty text part.
            out.extend_from_slice(b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)");
        }
        for c in &node.children {
            body_structure(out, raw, c, extended);
        }
        out.push(b' ');
        string(out, node.subtype.as_bytes());
        if extended {
            out.push(b' ');
            params(out, &node.params);
            extension_tail(out, node);
        }
    } else {
        string(out, node.media_type.as_bytes());
        out.push(b' ');
        string(out, node.subtype.as_bytes());
        out.push(b' ');
        params(out, &node.params);
        out.push(b' ');
        nstring(out, node.id.as_deref().map(str::as_bytes));
        out.push(b' ');
        nstring(out, node.description.as_deref().map(str::as_bytes));
        out.push(b' ');
        string(out, node.encoding.as_deref().unwrap_or("7bit").as_bytes());
        out.push(b' ');
        let body = &raw[node.body.clone()];
        out.extend_from_slice(body.len().to_string().as_bytes());
        if let Some(inner) = &node.encapsulated {
            out.push(b' ');
            envelope(out, &raw[inner.header.start..inner.body.end]);
            out.push(b' ');
            body_structure(out, raw, inner, extended);
            out.push(b' ');
            out.extend_from_slice(count_lines(body).to_string().as_bytes());
        } else if node.media_type.eq_ignore_ascii_case("message") && node.subtype.eq_ignore_ascii_case("rfc822") {
            // mail-parser did not parse the encapsulated message, but the
            // syntax (body-type-msg) still needs envelope, body and lines:
            // describe the data as a message with a text/plain body.
            out.push(b' ');
            envelope(out, body);
            out.extend_from_slice(b" (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" ");
            out.extend_from_slice(format!("{} {})", body.len(), count_lines(body)).as_bytes());
            out.push(b' ');
            out.extend_from_slice(count_lines(body).to_string().as_bytes());
        } else if node.media_type.eq_ignore_ascii_case("text") {
            out.push(b' ');
            out.extend_from_slice(count_lines(body).to_string().as_bytes());
        }
        if extended {
            out.push(b' ');
            nstring(out, node.md5.as_deref().map(str::as_bytes));
            extension_tail(out, node);
        }
    }
    out.push(b')');
}

/// Line count as Dovecot reports it: the number of LFs.
fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// ` dsp lang loc` of the extension data.
fn extension_tail(out: &mut Vec<u8>, node: &MimeNode) {
    out.push(b' ');
    match &node.disposition {
        Some((kind, p)) => {
            out.push(b'(');
            string(out, kind.as_bytes());
            out.push(b' ');
            params(out, p);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match node.language.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => string(out, one.as_bytes()),
        many => {
            out.push(b'(');
            for (i, l) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, l.as_bytes());
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    nstring(out, node.location.as_deref().map(str::as_bytes));
}

fn params(out: &mut Vec<u8>, p: &[(String, String)]) {
    if p.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in p.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.as_bytes());
        out.push(b' ');
        string(out, encode_word(v).as_bytes());
    }
    out.push(b')');
}

/// Non-ASCII text as an RFC 2047 encoded word (clients expect 7-bit here).
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    use base64::Engine;
    format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
}

/// Appends the ENVELOPE of the message `msg` (header and body bytes).
pub(crate) fn envelope(out: &mut Vec<u8>, msg: &[u8]) {
    let parsed = MessageParser::default().parse_headers(msg);
    let headers = parsed.as_ref().map(|m| m.parts.first().map(|p| p.headers.as_slice()).unwrap_or(&[]));
    let headers = headers.unwrap_or(&[]);
    let raw_value = |name: &str| -> Option<String> {
        headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name)).map(|h| {
            let s = (h.offset_start as usize).min(msg.len());
            let e = (h.offset_end as usize).clamp(s, msg.len());
            unfold(&msg[s..e])
        })
    };
    let addresses = |name: &str| -> Option<&Address<'_>> {
        headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name)).and_then(|h| match &h.value {
            HeaderValue::Address(a) => Some(a),
            _ => None,
        })
    };
    out.push(b'(');
    nstring(out, raw_value("Date").as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, raw_value("Subject").as_deref().map(str::as_bytes));
    let from = addresses("From");
    for name in ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"] {
        out.push(b' ');
        let (a, raw) = match name {
            "Sender" | "Reply-To" if addresses(name).is_none() => (from, raw_value("From")),
            _ => (addresses(name), raw_value(name)),
        };
        address_list(out, a, raw.as_deref().unwrap_or(""));
    }
    out.push(b' ');
    nstring(out, raw_value("In-Reply-To").as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, raw_value("Message-ID").as_deref().map(str::as_bytes));
    out.push(b')');
}

/// `raw` is the header's unfolded value, to tell a display name from a
/// comment (see [`comment_after_angle`]).
fn address_list(out: &mut Vec<u8>, a: Option<&Address<'_>>, raw: &str) {
    let Some(a) = a else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let mut body = Vec::new();
    match a {
        Address::List(list) => {
            for addr in list {
                one_address(&mut body, display_name(addr, raw), addr.address.as_deref());
            }
        }
        Address::Group(groups) => {
            for g in groups {
                match &g.name {
                    Some(gname) => {
                        body.extend_from_slice(b"(NIL NIL ");
                        string(&mut body, encode_word(gname).as_bytes());
                        body.extend_from_slice(b" NIL)");
                        for addr in &g.addresses {
                            one_address(&mut body, display_name(addr, raw), addr.address.as_deref());
                        }
                        body.extend_from_slice(b"(NIL NIL NIL NIL)");
                    }
                    None => {
                        for addr in &g.addresses {
                            one_address(&mut body, display_name(addr, raw), addr.address.as_deref());
                        }
                    }
                }
            }
        }
    }
    if body.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        out.extend_from_slice(&body);
        out.push(b')');
    }
}

/// The address's display name. mail-parser also takes a comment for the
/// name; Dovecot does so for `user@host (Name)` but not for a comment after
/// an angle address (`<user@host> (comment)`), which has no name.
fn display_name<'a>(addr: &'a mail_parser::Addr<'_>, raw: &str) -> Option<&'a str> {
    let name = addr.name.as_deref()?;
    match addr.address.as_deref() {
        Some(address) if comment_after_angle(raw, name, address) => None,
        _ => Some(name),
    }
}

/// True if `name` occurs in `raw` only as the comment `(name)` and
/// `address` is written in angle brackets.
fn comment_after_angle(raw: &str, name: &str, address: &str) -> bool {
    let comment = format!("({name})");
    raw.contains(&comment) && raw.contains(&format!("{address}>")) && !raw.replace(&comment, "").contains(name)
}

fn one_address(out: &mut Vec<u8>, name: Option<&str>, address: Option<&str>) {
    let address = address.unwrap_or("").trim();
    if address.is_empty() {
        // Only a comment (`Cc: group: (foo) ;`, `To: (nobody)`): no
        // address at all, as in Dovecot, rather than a bogus one.
        return;
    }
    // mail-parser leaves an obsolete source route (`<@a,@b:user@host>`,
    // RFC 5322 obs-route) in the address; ENVELOPE has a field for it.
    let (route, address) = match address.strip_prefix('@').and_then(|_| address.split_once(':')) {
        Some((route, rest)) => (Some(route), rest),
        None => (None, address),
    };
    let (mailbox, host) = match address.rsplit_once('@') {
        Some((m, h)) => (m, Some(h)),
        None => (address, None),
    };
    out.push(b'(');
    nstring(out, name.map(encode_word).as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, route.map(str::as_bytes));
    out.push(b' ');
    nstring(out, (!mailbox.is_empty()).then_some(mailbox.as_bytes()));
    out.push(b' ');
    // RFC 3501: a NIL host marks group syntax; a bare local part gets "".
    nstring(out, Some(host.unwrap_or("").as_bytes()));
    out.push(b')');
}
