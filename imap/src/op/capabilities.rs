//! Capabilities of the extensions implemented in their own files here
//! (WITHIN, UNAUTHENTICATE, ...), appended to the authenticated list by
//! `Session::capabilities`. Each name is added when its extension is complete.

use crate::session::SessionOptions;

/// Added to the authenticated capability list (each with a leading space).
pub(crate) fn authenticated_extra(options: &SessionOptions) -> String {
    let mut caps = String::from(" WITHIN CREATE-SPECIAL-USE SEARCHRES");
    if options.allow_unauthenticate {
        caps.push_str(" UNAUTHENTICATE");
    }
    caps
}
