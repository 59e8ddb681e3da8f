//! placeholder crate hibernate; see README.
