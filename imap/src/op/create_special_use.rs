//! CREATE-SPECIAL-USE (RFC 6154 §3): `CREATE name (USE (\Sent))`.
//!
//! imap-codec 2.0-alpha decodes CREATE without the RFC 4466 parameters, so
//! a trailing ` (USE (...))` is cut off here and the rest is decoded as a
//! plain CREATE (as `sort_syntax` does for SORT).

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::command::CommandBody;
use imap_types::mailbox::Mailbox;

use crate::session::machine::{command_name_of, trim_crlf, Phase};
use crate::session::Session;

/// A CREATE with a `USE` parameter: the command without it (CRLF-ended,
/// for imap-codec) and the attribute names as written.
pub(crate) struct CreateSpecialUse {
    /// `tag CREATE mailbox\r\n`.
    pub plain: Vec<u8>,
    /// The attributes inside `USE (...)`.
    pub attributes: Vec<String>,
}

/// Splits `tag CREATE mailbox (USE (attr ...))`; `None` for any other
/// command (a CREATE without `USE` included), which takes the ordinary path.
pub(crate) fn split(bytes: &[u8]) -> Option<CreateSpecialUse> {
    if !command_name_of(bytes).is_some_and(|n| n.eq_ignore_ascii_case("CREATE")) {
        return None;
    }
    let line = trim_crlf(bytes);
    let inner = line.strip_suffix(b"))")?;
    const MARK: &[u8] = b" (USE (";
    let at = inner.windows(MARK.len()).rposition(|w| w.eq_ignore_ascii_case(MARK))?;
    let list = std::str::from_utf8(&inner[at + MARK.len()..]).ok()?;
    if list.contains(['(', ')', '"', '{']) {
        return None;
    }
    let mut plain = line[..at].to_vec();
    plain.extend_from_slice(b"\r\n");
    Some(CreateSpecialUse { plain, attributes: list.split_ascii_whitespace().map(str::to_string).collect() })
}

impl Session {
    /// Runs a CREATE with `USE` from [`split`]; false if the rest is not a
    /// CREATE imap-codec accepts (the ordinary path then answers BAD).
    pub(crate) fn op_create_special_use(&mut self, cmd: &CreateSpecialUse) -> bool {
        let Ok((b"", decoded)) = CommandCodec::default().decode(&cmd.plain) else { return false };
        let CommandBody::Create { mailbox } = decoded.body else { return false };
        let tag = decoded.tag.inner().to_string();
        match self.phase {
            Phase::Authenticated => {}
            _ => {
                self.bad(&tag, "Please log in first.");
                return true;
            }
        }
        self.create_with_use(&tag, &mailbox, &cmd.attributes);
        true
    }

    fn create_with_use(&mut self, tag: &str, mailbox: &Mailbox<'_>, attributes: &[String]) {
        let known: Option<Vec<&'static str>> =
            attributes.iter().map(|a| storage_hooks::special_use::attribute(a)).collect();
        let Some(known) = known else {
            return self.no(tag, "[USEATTR] Unknown special-use attribute.");
        };
        let attr = match known.as_slice() {
            [] => return self.op_create(tag, mailbox),
            [one] => *one,
            // One attribute per mailbox (LIST shows one).
            [_, ..] => return self.no(tag, "[USEATTR] Only one special-use attribute per mailbox."),
        };
        let Some(name) = self.mailbox_name(tag, mailbox) else { return };
        let name = name.trim_end_matches('/').to_string();
        if name.eq_ignore_ascii_case("INBOX") {
            return self.no(tag, "[ALREADYEXISTS] INBOX always exists.");
        }
        let Some(store) = self.store.clone() else { return };
        match store.create_special_use_mailbox(&name, attr) {
            Ok(()) => self.ok(tag, "Create completed."),
            Err(e) => self.no_store(tag, &e),
        }
    }
}
