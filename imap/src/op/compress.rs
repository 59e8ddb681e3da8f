//! COMPRESS (RFC 4978): only DEFLATE exists; imap-codec refuses any other
//! algorithm name, which then gets the usual BAD.

use imap_types::extensions::compress::CompressionAlgorithm;

use crate::session::{Session, SessionEvent};

impl Session {
    /// COMPRESS DEFLATE: `OK`, then the driver compresses both directions
    /// from the byte after that line's CRLF.
    pub(crate) fn op_compress(&mut self, tag: &str, algorithm: CompressionAlgorithm) {
        if !matches!(algorithm, CompressionAlgorithm::Deflate) {
            return self.bad(tag, &format!("Unsupported compression algorithm {algorithm}."));
        }
        if self.compressed {
            // RFC 4978 §3: a second COMPRESS is refused with this code.
            return self.no(tag, "[COMPRESSIONACTIVE] DEFLATE is already active.");
        }
        self.ok(tag, "DEFLATE active");
        self.compressed = true;
        // Whatever the client sent after the command is compressed already.
        let compressed_input = self.framer.take_unprocessed();
        self.after.push_back(SessionEvent::StartCompression { compressed_input });
    }

    /// True once COMPRESS DEFLATE was accepted.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }
}
