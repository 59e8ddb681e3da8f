//! placeholder crate bus; see README.
