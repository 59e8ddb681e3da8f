//! One file per IMAP command (or closely related group), each an
//! `impl Session` block that writes untagged and tagged responses.

mod append;
pub(crate) mod capabilities;
mod auth;
mod close;
mod compress;
mod copy_move;
pub(crate) mod create_special_use;
mod enable;
pub(crate) mod esearch;
mod expunge;
pub(crate) mod fetch;
mod idle;
pub(crate) mod list;
mod list_extended;
pub(crate) mod list_syntax;
mod mailbox_name;
mod manage;
mod multiappend;
mod noop;
mod notify;
pub(crate) mod notify_syntax;
pub(crate) mod quoted8;
pub(crate) mod search;
mod searchres;
mod sort;
pub(crate) mod sort_keys;
pub(crate) mod sort_syntax;
pub(crate) mod select;
mod status;
mod store;
mod thread;
pub(crate) mod unauthenticate;
mod within;

pub(crate) use multiappend::{split as multiappend_split, MAX_MESSAGES as MULTIAPPEND_MAX_MESSAGES};
