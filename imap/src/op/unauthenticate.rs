//! UNAUTHENTICATE (RFC 8437): back to the not-authenticated state.
//!
//! imap-codec has no UNAUTHENTICATE, so the command (a tag and the name,
//! nothing else) is recognised here before decoding, as `sort_syntax` does
//! for SORT.

use crate::session::machine::{tag_of, trim_crlf, Phase};
use crate::session::{EnabledExtensions, Session, SessionOptions};

/// The tag of an `UNAUTHENTICATE` command line when the session offers it;
/// `None` for anything else (which then takes the ordinary path: an
/// unknown command when the option is off).
pub(crate) fn parse(bytes: &[u8], options: &SessionOptions) -> Option<String> {
    if !options.allow_unauthenticate {
        return None;
    }
    let line = trim_crlf(bytes);
    let tag = tag_of(line)?;
    let rest = &line[tag.len() + 1..];
    rest.eq_ignore_ascii_case(b"UNAUTHENTICATE").then_some(tag)
}

impl Session {
    /// UNAUTHENTICATE: drops the selected mailbox, the user's store (and
    /// with it the user's cached mailbox state), the enabled extensions and
    /// any command state, so that a new LOGIN starts afresh.
    pub(crate) fn op_unauthenticate(&mut self, tag: &str) {
        match self.phase {
            Phase::Authenticated => {}
            Phase::NotAuthenticated => return self.bad(tag, "Please log in first."),
            _ => return self.bad(tag, "UNAUTHENTICATE is not allowed now."),
        }
        let user = self.user().unwrap_or_default().to_string();
        self.selected = None;
        self.store = None;
        self.enabled = EnabledExtensions::default();
        self.changes_pending = false;
        self.search_return = None;
        self.ordering = None;
        self.fetch_job = None;
        self.append_bodies.clear();
        self.phase = Phase::NotAuthenticated;
        tracing::info!(%user, "unauthenticated");
        self.ok(tag, "Unauthenticate completed.");
    }
}
