//! Capabilities of the extensions implemented in their own files here
//! (WITHIN, UNAUTHENTICATE, ...), appended to the authenticated list by
//! `Session::capabilities`. Each name is added when its extension is complete.

/// Added to the authenticated capability list (with a leading space).
pub(crate) const AUTHENTICATED_EXTRA: &str = " WITHIN";
