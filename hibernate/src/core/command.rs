//! Recognizes the few commands a hibernated session answers by itself.
//!
//! Lines are decoded with imap-codec's `CommandCodec` and `IdleDoneCodec`
//! (which handle quoting, literals and syntax); the only hand-written part is
//! finding the end of a line, because we must know where a command ends to
//! hand back exactly the unprocessed bytes. Anything we do not answer
//! ourselves, including every syntax error and every command with a literal,
//! is [`Recognized::Other`] and goes back to a worker, which produces the
//! exact response a never-hibernated session would.

use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::{CommandCodec, IdleDoneCodec};
use imap_types::command::CommandBody;
use imap_types::mailbox::Mailbox;
use imap_types::status::StatusDataItemName;

use super::render::StatusItem;

/// Longest line we look at; a longer one goes to a worker (which answers
/// with its own line-length error).
pub const MAX_LINE: usize = 8 * 1024;

/// What a complete input line means to a hibernated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognized {
    /// `DONE` while idling.
    Done,
    /// A blank line (ignored, as by the worker).
    Blank,
    /// `tag NOOP`.
    Noop(String),
    /// `tag CHECK`.
    Check(String),
    /// `tag IDLE`.
    Idle(String),
    /// `tag LOGOUT`.
    Logout(String),
    /// `tag STATUS mailbox (items)`.
    Status {
        /// The tag.
        tag: String,
        /// Storage name of the mailbox (UTF-8).
        mailbox: String,
        /// Requested items, in order.
        items: Vec<StatusItem>,
    },
    /// Anything else: hand the session back.
    Other,
}

/// Length of the first complete line of `buf` (up to and including LF).
pub fn line_len(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|p| p + 1)
}

/// Interprets one complete line (with its line ending).
pub fn recognize(line: &[u8], idling: bool) -> Recognized {
    if idling {
        return match IdleDoneCodec::default().decode(line) {
            Ok((&[], _)) => Recognized::Done,
            _ => Recognized::Other,
        };
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Recognized::Blank;
    }
    let cmd = match CommandCodec::default().decode(line) {
        Ok((&[], cmd)) => cmd,
        Ok(_) | Err(CommandDecodeError::Incomplete | CommandDecodeError::LiteralFound { .. }) => {
            return Recognized::Other
        }
        Err(_) => return Recognized::Other,
    };
    let tag = cmd.tag.inner().to_string();
    match cmd.body {
        CommandBody::Noop => Recognized::Noop(tag),
        CommandBody::Check => Recognized::Check(tag),
        CommandBody::Idle => Recognized::Idle(tag),
        CommandBody::Logout => Recognized::Logout(tag),
        CommandBody::Status { mailbox, item_names } => {
            let Some(name) = storage_name(&mailbox) else { return Recognized::Other };
            let mut items = Vec::with_capacity(item_names.len());
            for item in item_names.iter() {
                items.push(match item {
                    StatusDataItemName::Messages => StatusItem::Messages,
                    StatusDataItemName::Recent => StatusItem::Recent,
                    StatusDataItemName::UidNext => StatusItem::UidNext,
                    StatusDataItemName::UidValidity => StatusItem::UidValidity,
                    StatusDataItemName::Unseen => StatusItem::Unseen,
                    StatusDataItemName::HighestModSeq => StatusItem::HighestModSeq,
                    // The worker answers these with its own error text.
                    _ => return Recognized::Other,
                });
            }
            Recognized::Status { tag, mailbox: name, items }
        }
        _ => Recognized::Other,
    }
}

/// The storage name for an IMAP mailbox argument, normalized like the
/// worker does (`INBOX`, `INBOX/` prefix case); `None` when the name is not
/// valid modified UTF-7 (the worker then answers with its error).
fn storage_name(mailbox: &Mailbox<'_>) -> Option<String> {
    match mailbox {
        Mailbox::Inbox => Some("INBOX".to_string()),
        Mailbox::Other(other) => {
            let raw = std::str::from_utf8(other.as_ref()).ok()?;
            let name = storage_hooks::mutf7::decode(raw)?;
            match name.get(..6) {
                Some(p) if p.eq_ignore_ascii_case("INBOX/") => Some(format!("INBOX/{}", &name[6..])),
                _ => Some(name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_the_answered_commands() {
        assert_eq!(recognize(b"DONE\r\n", true), Recognized::Done);
        assert_eq!(recognize(b"done\n", true), Recognized::Done);
        assert_eq!(recognize(b"a1 NOOP\r\n", true), Recognized::Other);
        assert_eq!(recognize(b"a1 NOOP\r\n", false), Recognized::Noop("a1".into()));
        assert_eq!(recognize(b"a2 check\r\n", false), Recognized::Check("a2".into()));
        assert_eq!(recognize(b"a3 IDLE\r\n", false), Recognized::Idle("a3".into()));
        assert_eq!(recognize(b"a4 LOGOUT\r\n", false), Recognized::Logout("a4".into()));
        assert_eq!(recognize(b"\r\n", false), Recognized::Blank);
        assert_eq!(
            recognize(b"a5 STATUS \"Sent &AOQ-\" (MESSAGES UIDNEXT HIGHESTMODSEQ)\r\n", false),
            Recognized::Status {
                tag: "a5".into(),
                mailbox: "Sent ä".into(),
                items: vec![StatusItem::Messages, StatusItem::UidNext, StatusItem::HighestModSeq]
            }
        );
        assert_eq!(
            recognize(b"a6 STATUS inbox (UNSEEN)\r\n", false),
            Recognized::Status { tag: "a6".into(), mailbox: "INBOX".into(), items: vec![StatusItem::Unseen] }
        );
    }

    #[test]
    fn everything_else_goes_back() {
        for line in [
            &b"a1 UID FETCH 1:* (FLAGS)\r\n"[..],
            b"a1 STATUS {5}\r\n",
            b"a1 STATUS INBOX (DELETED)\r\n",
            b"a1 NOOP extra\r\n",
            b"* NOOP\r\n",
            b"garbage\r\n",
            b"a1 SELECT INBOX\r\n",
            b"a1 STATUS \"&Jjo\" (MESSAGES)\r\n",
        ] {
            assert_eq!(recognize(line, false), Recognized::Other, "{:?}", String::from_utf8_lossy(line));
        }
    }
}
