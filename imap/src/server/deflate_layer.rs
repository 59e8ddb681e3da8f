//! COMPRESS=DEFLATE (RFC 4978) on a worker's client connection: the layer
//! above the transport (TCP -> TLS -> deflate), in the session driver.
//!
//! Every response burst is compressed and sync-flushed, so the client can
//! read it at once, and the stream is left at a byte boundary: a hibernate
//! process may then continue it with history-free stored blocks, and this
//! worker (or another) with a fresh deflater. The client's stream is
//! continued from its inflate window (see [`hibernate::deflate`]).

use hibernate::deflate::{Deflater, DeflateError, Inflater};
use hibernate::record::DeflateState;

/// Both directions of one compressed connection.
#[derive(Debug)]
pub struct DeflateLayer {
    inflater: Inflater,
    deflater: Deflater,
    /// Compressed bytes to write before anything else (handed back unsent
    /// by a hibernate process).
    unsent: Vec<u8>,
}

impl Default for DeflateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DeflateLayer {
    /// A layer for streams that start now (after `OK DEFLATE active`).
    pub fn new() -> Self {
        DeflateLayer { inflater: Inflater::new(), deflater: Deflater::new(), unsent: Vec::new() }
    }

    /// Continues the streams of a parked session.
    ///
    /// # Errors
    /// A window or input tail that does not inflate.
    pub fn from_record(state: DeflateState) -> Result<Self, DeflateError> {
        let mut inflater = Inflater::with_window(&state.window)?;
        // The tail's plaintext was processed there or is pending input.
        let mut discard = Vec::new();
        inflater.inflate(&state.input_tail, &mut discard)?;
        Ok(DeflateLayer { inflater, deflater: Deflater::new(), unsent: state.unsent })
    }

    /// Inflates client bytes, appending the plaintext to `plain`.
    ///
    /// # Errors
    /// Invalid data or the end of the client's stream.
    pub fn inflate(&mut self, raw: &[u8], plain: &mut Vec<u8>) -> Result<(), DeflateError> {
        self.inflater.inflate(raw, plain)
    }

    /// The wire bytes for `plain`: anything unsent first, then `plain`
    /// compressed and sync-flushed. Empty `plain` gives only the unsent.
    pub fn compress(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.unsent);
        if !plain.is_empty() {
            self.deflater.compress(plain, &mut out);
        }
        out
    }

    /// Compressed bytes waiting to be written.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// The state to park with, or `None` while the client's stream is not
    /// at a block boundary (a command sent without a flush, or cut in
    /// transit): then only the whole inflater would do.
    pub fn park_state(&self) -> Option<DeflateState> {
        if !self.inflater.at_boundary() || !self.unsent.is_empty() {
            return None;
        }
        Some(DeflateState { window: self.inflater.window().to_vec(), input_tail: Vec::new(), unsent: Vec::new() })
    }
}
