//! placeholder crate imap; see README.
