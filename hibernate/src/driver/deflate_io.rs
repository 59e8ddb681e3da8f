//! COMPRESS=DEFLATE for held sessions (see [`crate::deflate`] for why this
//! is all the state a parked compressed session needs).
//!
//! A quiet session keeps only the client stream's inflate window, in a
//! boxed slice of at most 32 KiB. An inflater exists only while client
//! input is being inflated, or (rarely) while the client's stream is
//! between two block boundaries. Output is written as stored blocks, which
//! need no deflater at all.

use crate::deflate::{stored_blocks, DeflateError, Inflater};
use crate::record::{DeflateState, MAX_DEFLATE_BYTES};

/// The compressed streams of one held session.
pub(super) struct DeflateIo {
    /// Decompressed client input at the last block boundary (its last
    /// `min(32 KiB, total)` bytes).
    window: Box<[u8]>,
    /// While the client's stream is past `window` but not at a boundary:
    /// the inflater and the compressed bytes it was fed since.
    live: Option<Box<Live>>,
    /// Compressed output the socket did not take (plain TCP; over TLS the
    /// record layer's transmit queue keeps it).
    unsent: Vec<u8>,
}

struct Live {
    inflater: Inflater,
    tail: Vec<u8>,
}

impl std::fmt::Debug for DeflateIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateIo")
            .field("window", &self.window.len())
            .field("mid_block", &self.live.is_some())
            .field("unsent", &self.unsent.len())
            .finish()
    }
}

impl DeflateIo {
    /// The state a record brought.
    ///
    /// # Errors
    /// A window or tail that does not inflate.
    pub(super) fn from_record(state: DeflateState) -> Result<Self, DeflateError> {
        let mut io = DeflateIo { window: state.window.into_boxed_slice(), live: None, unsent: state.unsent };
        if !state.input_tail.is_empty() {
            // The plaintext of the tail was handled by the sender already.
            let mut discard = Vec::new();
            io.inflate(&state.input_tail, &mut discard)?;
        }
        Ok(io)
    }

    /// Inflates client bytes, appending the plaintext to `plain`.
    ///
    /// # Errors
    /// Invalid data or the end of the client's stream: the session is over.
    pub(super) fn inflate(&mut self, raw: &[u8], plain: &mut Vec<u8>) -> Result<(), DeflateError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => Box::new(Live { inflater: Inflater::with_window(&self.window)?, tail: Vec::new() }),
        };
        live.inflater.inflate(raw, plain)?;
        if live.inflater.at_boundary() {
            // Back to the small state: the window, and no inflater.
            self.window = live.inflater.window().into();
        } else {
            live.tail.extend_from_slice(raw);
            if live.tail.len() > MAX_DEFLATE_BYTES {
                return Err(DeflateError::Corrupt(format!("no flush in {} compressed bytes", live.tail.len())));
            }
            self.live = Some(live);
        }
        Ok(())
    }

    /// The bytes to write for `plain`: what was left unsent, then `plain`
    /// as stored blocks.
    pub(super) fn frame(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.unsent);
        stored_blocks(plain, &mut out);
        out
    }

    /// Keeps bytes the socket did not take; they go first next time.
    pub(super) fn keep_unsent(&mut self, rest: &[u8]) {
        let mut joined = rest.to_vec();
        joined.extend_from_slice(&self.unsent);
        self.unsent = joined;
    }

    /// Bytes waiting for the socket.
    pub(super) fn unsent_len(&self) -> usize {
        self.unsent.len()
    }

    /// The state for a hand-back record.
    pub(super) fn into_record(self) -> DeflateState {
        let (window, input_tail) = match self.live {
            // Mid-block: the receiver rebuilds the inflater from the window
            // at the last boundary and the bytes since.
            Some(live) => (self.window.into_vec(), live.tail),
            None => (self.window.into_vec(), Vec::new()),
        };
        DeflateState { window, input_tail, unsent: self.unsent }
    }
}
