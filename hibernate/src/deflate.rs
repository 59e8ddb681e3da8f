//! COMPRESS=DEFLATE (RFC 4978) pieces shared by the IMAP workers and the
//! hibernate processes: raw deflate (no zlib header) in both directions.
//!
//! # The smallest state that keeps a parked stream valid
//!
//! - Server to client: every burst of output is sync-flushed, so the
//!   client's inflater is at a byte-aligned block boundary after each one.
//!   Whatever follows only has to be valid deflate that refers to no
//!   history: a fresh deflater's output, or stored blocks
//!   ([`stored_blocks`], what a hibernate process writes). Nothing travels.
//! - Client to server: the client's deflater refers to up to 32 KiB of what
//!   it sent before. At a block boundary the inflater's whole state is that
//!   window: the last `min(32 KiB, total)` bytes of decompressed input,
//!   which become the dictionary of a fresh raw inflater
//!   ([`Inflater::with_window`]). Clients sync-flush after each command, so
//!   a quiet stream is at a boundary; [`Inflater::at_boundary`] says so.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Size of the deflate window (RFC 1951: back-references reach 32 KiB).
pub const WINDOW: usize = 32 * 1024;

/// What a sync flush ends with: an empty stored block's LEN and NLEN.
const SYNC_TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Longest stored block (RFC 1951 §3.2.4: LEN is 16 bits).
const MAX_STORED: usize = 0xffff;

/// Output produced per inflate step (stack buffer).
const STEP: usize = 16 * 1024;

/// Errors of a compressed stream.
#[derive(Debug, thiserror::Error)]
pub enum DeflateError {
    /// The client's bytes are not valid deflate data.
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
    /// The client ended its deflate stream (a final block): RFC 4978 has no
    /// way back to uncompressed, so the connection is over.
    #[error("the client ended its compressed stream")]
    StreamEnded,
    /// A dictionary could not be installed (longer than the window).
    #[error("cannot install the inflate window: {0}")]
    Window(String),
}

/// The client-to-server direction: a raw inflater that remembers its window
/// and whether the input so far ended at a block boundary.
pub struct Inflater {
    inner: Decompress,
    /// The last decompressed bytes (at most `2 * WINDOW`; [`Self::window`]
    /// is the last `WINDOW` of them).
    recent: Vec<u8>,
    /// The last four compressed bytes received.
    last: [u8; 4],
    /// True while no compressed byte has been received since the state was
    /// built (a fresh stream, or one rebuilt at a boundary).
    fresh: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("window", &self.window().len()).field("at_boundary", &self.at_boundary()).finish()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// An inflater for a stream that starts now.
    pub fn new() -> Self {
        Inflater { inner: Decompress::new(false), recent: Vec::new(), last: [0; 4], fresh: true }
    }

    /// An inflater continuing a stream at a block boundary whose last
    /// decompressed bytes were `window` (at most [`WINDOW`]).
    ///
    /// # Errors
    /// [`DeflateError::Window`] for a window that is too long.
    pub fn with_window(window: &[u8]) -> Result<Self, DeflateError> {
        if window.len() > WINDOW {
            return Err(DeflateError::Window(format!("{} bytes", window.len())));
        }
        let mut inner = Decompress::new(false);
        if !window.is_empty() {
            inner.set_dictionary(window).map_err(|e| DeflateError::Window(e.to_string()))?;
        }
        Ok(Inflater { inner, recent: window.to_vec(), last: [0; 4], fresh: true })
    }

    /// Inflates all of `input`, appending the plaintext to `out`.
    ///
    /// # Errors
    /// [`DeflateError::Corrupt`] or [`DeflateError::StreamEnded`]; the stream
    /// cannot go on after either.
    pub fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DeflateError> {
        let start = out.len();
        let mut buf = [0u8; STEP];
        let mut pos = 0;
        loop {
            let (in_before, out_before) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress(&input[pos..], &mut buf, FlushDecompress::None)
                .map_err(|e| DeflateError::Corrupt(e.to_string()))?;
            let read = (self.inner.total_in() - in_before) as usize;
            let wrote = (self.inner.total_out() - out_before) as usize;
            pos += read;
            out.extend_from_slice(&buf[..wrote]);
            if status == Status::StreamEnd {
                return Err(DeflateError::StreamEnded);
            }
            if (pos == input.len() && wrote < buf.len()) || (read == 0 && wrote == 0) {
                break;
            }
        }
        for &b in input {
            self.last = [self.last[1], self.last[2], self.last[3], b];
        }
        if !input.is_empty() {
            self.fresh = false;
        }
        self.remember(&out[start..]);
        Ok(())
    }

    fn remember(&mut self, plain: &[u8]) {
        if plain.len() >= WINDOW {
            self.recent.clear();
            self.recent.extend_from_slice(&plain[plain.len() - WINDOW..]);
            return;
        }
        self.recent.extend_from_slice(plain);
        if self.recent.len() > 2 * WINDOW {
            let cut = self.recent.len() - WINDOW;
            self.recent.drain(..cut);
        }
    }

    /// True if the input so far ends at a byte-aligned block boundary: the
    /// stream is fresh, or its last bytes were a sync flush's empty stored
    /// block and all of them were consumed (the inflater always consumes
    /// all input). Then [`Self::window`] is the whole state.
    pub fn at_boundary(&self) -> bool {
        self.fresh || self.last == SYNC_TAIL
    }

    /// The last `min(WINDOW, total)` bytes of decompressed input.
    pub fn window(&self) -> &[u8] {
        &self.recent[self.recent.len().saturating_sub(WINDOW)..]
    }
}

/// The server-to-client direction of a live session: a raw deflater whose
/// every output burst ends with a sync flush.
pub struct Deflater {
    inner: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").field("total_in", &self.inner.total_in()).finish()
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    /// A fresh deflater (no history: valid after any sync flush of the
    /// stream it continues).
    pub fn new() -> Self {
        Deflater { inner: Compress::new(Compression::default(), false) }
    }

    /// Compresses `plain` and sync-flushes, appending to `out`: the client
    /// can inflate all of `plain` from what was appended.
    pub fn compress(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let mut pos = 0;
        loop {
            out.reserve(plain.len() - pos + 64);
            let before = self.inner.total_in();
            // compress_vec only fails on a stream error, which a raw
            // deflater fed in order cannot have.
            let _ = self.inner.compress_vec(&plain[pos..], out, FlushCompress::Sync);
            pos += (self.inner.total_in() - before) as usize;
            // Done once all input is in and the flush left space unused.
            if pos == plain.len() && out.len() < out.capacity() {
                break;
            }
        }
    }
}

/// Appends `plain` as stored (uncompressed) deflate blocks, each non-final
/// and byte-aligned: valid right after a sync flush, and leaves the stream
/// at a boundary again. What a hibernate process writes to a compressed
/// client, with no deflater state at all.
pub fn stored_blocks(plain: &[u8], out: &mut Vec<u8>) {
    for chunk in plain.chunks(MAX_STORED) {
        let len = chunk.len() as u16;
        out.push(0); // BFINAL=0, BTYPE=00, padding to the byte boundary
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_deflate(c: &mut Compress, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 1024);
        c.compress_vec(plain, &mut out, FlushCompress::Sync).unwrap();
        out
    }

    #[test]
    fn window_continues_a_stream_that_refers_back() {
        let mut client = Compress::new(Compression::default(), false);
        let mut server = Inflater::new();
        let long: Vec<u8> = (0..50_000u32).flat_map(|i| format!("line {} of the APPEND\r\n", i % 977).into_bytes()).collect();
        let mut plain = Vec::new();
        let first = client_deflate(&mut client, &long);
        // Split mid-block: not at a boundary until the rest arrives.
        server.inflate(&first[..first.len() / 2], &mut plain).unwrap();
        assert!(!server.at_boundary());
        server.inflate(&first[first.len() / 2..], &mut plain).unwrap();
        assert!(server.at_boundary());
        assert_eq!(plain, long);
        assert_eq!(server.window(), &long[long.len() - WINDOW..]);
        // A parked stream: only the window survives.
        let mut resumed = Inflater::with_window(server.window()).unwrap();
        let next = client_deflate(&mut client, b"a1 DONE line 5 of the APPEND\r\nline 976 of the APPEND\r\n");
        let mut more = Vec::new();
        resumed.inflate(&next, &mut more).unwrap();
        assert_eq!(more, b"a1 DONE line 5 of the APPEND\r\nline 976 of the APPEND\r\n");
        // Back-references into the window made it short.
        assert!(next.len() < 40, "{} bytes", next.len());
        // Without the window the same bytes cannot be decoded correctly.
        let mut blank = Inflater::new();
        let mut wrong = Vec::new();
        assert!(blank.inflate(&next, &mut wrong).is_err() || wrong != more);
    }

    #[test]
    fn stored_blocks_and_fresh_deflaters_follow_a_sync_flush() {
        let mut server = Deflater::new();
        let mut client = Decompress::new(false);
        let mut wire = Vec::new();
        server.compress(b"* OK DEFLATE active\r\n", &mut wire);
        stored_blocks(b"* 3 EXISTS\r\n", &mut wire);
        stored_blocks(&vec![b'x'; 70_000], &mut wire);
        Deflater::new().compress(b"a2 OK FETCH done\r\n", &mut wire);
        let mut out = Vec::with_capacity(200_000);
        client.decompress_vec(&wire, &mut out, FlushDecompress::Sync).unwrap();
        let mut expected = b"* OK DEFLATE active\r\n* 3 EXISTS\r\n".to_vec();
        expected.extend(vec![b'x'; 70_000]);
        expected.extend_from_slice(b"a2 OK FETCH done\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn garbage_and_final_blocks_are_errors() {
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        assert!(matches!(inf.inflate(&[0xff; 64], &mut out), Err(DeflateError::Corrupt(_))));
        let mut c = Compress::new(Compression::default(), false);
        let mut fin = Vec::with_capacity(100);
        c.compress_vec(b"a LOGOUT\r\n", &mut fin, FlushCompress::Finish).unwrap();
        let mut inf = Inflater::new();
        assert!(matches!(inf.inflate(&fin, &mut out), Err(DeflateError::StreamEnded)));
        assert!(matches!(Inflater::with_window(&vec![0; WINDOW + 1]), Err(DeflateError::Window(_))));
    }
}
