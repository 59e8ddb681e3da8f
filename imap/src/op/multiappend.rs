//! MULTIAPPEND (RFC 3502): `APPEND mailbox (flags) date {n}... (flags) {m}...`,
//! several messages to one mailbox, stored all or none.
//!
//! imap-codec 2.0.0-alpha.10 decodes an APPEND of one message only. A
//! command with more is cut here into one single-message APPEND per
//! message (same tag and mailbox), each decoded by imap-codec as usual;
//! the streamed literals (`Session::append_bodies`) are matched to them
//! in order.

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::command::CommandBody;

use crate::session::machine::tag_of;
use crate::session::{response, Session};

/// Most messages in one APPEND: each one being received holds an open
/// file and up to 64 KiB of buffers until the command completes, so a
/// longer one gets `NO [LIMIT]` (RFC 3502 sets no limit; Dovecot has none).
pub(crate) const MAX_MESSAGES: usize = 50;

/// The single-message APPEND commands of a MULTIAPPEND in `bytes` (one
/// complete command, literals inline), or `None` if it is not an APPEND of
/// two or more messages (imap-codec then decodes it, or refuses it).
pub(crate) fn split(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let sp = bytes.iter().position(|&b| b == b' ')?;
    let rest = &bytes[sp + 1..];
    if rest.len() < 7 || !rest[..7].eq_ignore_ascii_case(b"APPEND ") {
        return None;
    }
    let tag = &bytes[..sp];
    let mailbox_start = sp + 1 + 7;
    let mut pos = skip_astring(bytes, mailbox_start)?;
    let mailbox = &bytes[mailbox_start..pos];
    let mut segments = Vec::new();
    while !at_end(bytes, pos) {
        if bytes[pos] != b' ' {
            return None;
        }
        pos += 1;
        let start = pos;
        if bytes.get(pos) == Some(&b'(') {
            pos += bytes[pos..].iter().position(|&b| b == b')')? + 1;
            pos = expect_space(bytes, pos)?;
        }
        if bytes.get(pos) == Some(&b'"') {
            pos = skip_quoted(bytes, pos)?;
            pos = expect_space(bytes, pos)?;
        }
        if bytes.get(pos) == Some(&b'~') {
            pos += 1;
        }
        pos = skip_literal(bytes, pos)?;
        segments.push(start..pos);
    }
    if segments.len() < 2 {
        return None;
    }
    let commands = segments
        .into_iter()
        .map(|r| {
            let mut c = Vec::with_capacity(tag.len() + mailbox.len() + r.len() + 12);
            c.extend_from_slice(tag);
            c.extend_from_slice(b" APPEND ");
            c.extend_from_slice(mailbox);
            c.push(b' ');
            c.extend_from_slice(&bytes[r]);
            c.extend_from_slice(b"\r\n");
            c
        })
        .collect();
    Some(commands)
}

fn at_end(b: &[u8], pos: usize) -> bool {
    matches!(&b[pos.min(b.len())..], b"" | b"\r\n" | b"\n")
}

fn expect_space(b: &[u8], pos: usize) -> Option<usize> {
    (b.get(pos) == Some(&b' ')).then_some(pos + 1)
}

/// Past a quoted string starting at `pos`.
fn skip_quoted(b: &[u8], mut pos: usize) -> Option<usize> {
    pos += 1;
    loop {
        match *b.get(pos)? {
            b'"' => return Some(pos + 1),
            b'\\' => pos += 2,
            b'\r' | b'\n' => return None,
            _ => pos += 1,
        }
    }
}

/// Past a literal `{n}` / `{n+}` CRLF and its data starting at `pos`.
fn skip_literal(b: &[u8], pos: usize) -> Option<usize> {
    if b.get(pos) != Some(&b'{') {
        return None;
    }
    let close = pos + b.get(pos..)?.iter().take(14).position(|&c| c == b'}')?;
    let digits = &b[pos + 1..close];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let mut p = close + 1;
    if b.get(p) == Some(&b'\r') {
        p += 1;
    }
    if b.get(p) != Some(&b'\n') {
        return None;
    }
    let end = p + 1 + n;
    (end <= b.len()).then_some(end)
}

/// Past an astring (atom, quoted or literal) starting at `pos`.
fn skip_astring(b: &[u8], pos: usize) -> Option<usize> {
    match *b.get(pos)? {
        b'"' => skip_quoted(b, pos),
        b'{' => skip_literal(b, pos),
        _ => {
            let len = b[pos..].iter().position(|&c| matches!(c, b' ' | b'\r' | b'\n')).unwrap_or(b.len() - pos);
            (len > 0).then_some(pos + len)
        }
    }
}

impl Session {
    /// A MULTIAPPEND cut by [`split`] into `commands`.
    pub(crate) fn op_multiappend(&mut self, original: &[u8], commands: &[Vec<u8>]) {
        let Some(tag) = tag_of(original) else { return self.respond(None, "BAD", "Invalid tag.") };
        let mut parts = Vec::with_capacity(commands.len());
        for command in commands {
            match CommandCodec::default().decode(command) {
                Ok((b"", cmd)) => match cmd.body {
                    CommandBody::Append { mailbox, flags, date, message } => parts.push((mailbox, flags, date, message)),
                    _ => return self.bad(&tag, "Error in IMAP command APPEND: invalid arguments."),
                },
                _ => return self.bad(&tag, "Error in IMAP command APPEND: invalid arguments."),
            }
        }
        // Taken first, so that every refusal below drops (removes) the files.
        let mut bodies = std::mem::take(&mut self.append_bodies).into_iter();
        let Some(name) = self.mailbox_name(&tag, &parts[0].0) else { return };
        let mut prepared = Vec::with_capacity(parts.len());
        for (_, flags, date, message) in &parts {
            let streamed = bodies.next().flatten();
            let Some(p) = self.prepare_append(&tag, flags, date.as_ref(), message, streamed) else { return };
            prepared.push(p);
        }
        drop(bodies);
        match self.store_all(&name, prepared) {
            Ok((uidvalidity, uids)) => self.append_done(&tag, &name, uidvalidity, &response::number_set(&uids)),
            Err(e) => self.append_failed(&tag, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_messages_and_leaves_single_appends_alone() {
        let cmd = b"t APPEND {5}\r\nINBOX (\\Seen) \"01-Jan-2026 10:00:00 +0000\" {2}\r\nhi {0}\r\n ~{3+}\r\nabc\r\n";
        let parts = split(cmd).unwrap();
        assert_eq!(
            parts,
            [
                b"t APPEND {5}\r\nINBOX (\\Seen) \"01-Jan-2026 10:00:00 +0000\" {2}\r\nhi\r\n".to_vec(),
                b"t APPEND {5}\r\nINBOX {0}\r\n\r\n".to_vec(),
                b"t APPEND {5}\r\nINBOX ~{3+}\r\nabc\r\n".to_vec(),
            ]
        );
        for single in [&b"t APPEND INBOX {2}\r\nhi\r\n"[..], b"t APPEND INBOX (\\Seen) {0}\r\n\r\n", b"t NOOP\r\n", b"t APPEND INBOX {2}\r\nhi x\r\n"] {
            assert_eq!(split(single), None, "{}", String::from_utf8_lossy(single));
        }
    }
}
