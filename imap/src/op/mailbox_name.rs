//! Mailbox names from the wire (modified UTF-7) to storage names (UTF-8).

use imap_types::mailbox::Mailbox;

use crate::session::{mutf7, Session};

impl Session {
    /// The UTF-8 storage name of `mailbox`, or a tagged BAD written and `None`.
    pub(crate) fn mailbox_name(&mut self, tag: &str, mailbox: &Mailbox<'_>) -> Option<String> {
        match mailbox {
            Mailbox::Inbox => Some("INBOX".to_string()),
            Mailbox::Other(other) => match mutf7::decode(other.as_ref()) {
                Some(name) => {
                    // `inbox/x` refers to INBOX's child; normalise the case
                    // of the INBOX prefix like Dovecot.
                    match name.get(..6) {
                        Some(p) if p.eq_ignore_ascii_case("INBOX/") => Some(format!("INBOX/{}", &name[6..])),
                        _ => Some(name),
                    }
                }
                None if !other.as_ref().is_ascii() => {
                    // Raw UTF-8 (quoted or a literal): we do not offer
                    // UTF8=ACCEPT, so names must be modified UTF-7.
                    self.no(
                        tag,
                        "[CANNOT] Mailbox name is not valid modified UTF-7: 8-bit characters must be sent \
                         encoded (RFC 3501 5.1.3, e.g. &AOQ- for \u{e4}).",
                    );
                    None
                }
                None => {
                    self.no(tag, "[CANNOT] Mailbox name is not valid modified UTF-7.");
                    None
                }
            },
        }
    }
}
