//! FETCH rendering: MIME tree with byte offsets (mail-parser 0.11),
//! BODYSTRUCTURE, ENVELOPE and BODY[section] extraction.

pub(crate) mod mime_tree;
pub(crate) mod section;
pub(crate) mod structure;
