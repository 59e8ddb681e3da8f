//! Splits client bytes into complete IMAP commands (lines plus literals)
//! before any parsing, enforcing the line and literal limits.
//!
//! imap-codec's `Fragmentizer` does the same splitting, but it buffers a line
//! without bound until its LF arrives; this framer caps every line at the
//! configured limit and then skips to the next line, so a client cannot make
//! the server allocate more than the limits allow.

/// What the framer found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete command: lines (with their line endings) and literal data.
    Complete(Vec<u8>),
    /// The current line announces a literal. The caller must call
    /// [`Framer::accept_literal`] or [`Framer::reject_literal`] before polling again.
    Literal {
        /// Announced length in bytes.
        length: u32,
        /// True for `{n+}` (LITERAL+): the client sends the data without waiting.
        non_sync: bool,
        /// Bytes of the command so far (for the tag and the command name).
        head: Vec<u8>,
    },
    /// A line exceeded the limit; it was dropped up to its end. Carries the
    /// first bytes of the line (for the tag).
    LineTooLong(Vec<u8>),
    /// The next bytes of a literal accepted with
    /// [`Framer::accept_literal_streamed`] (never part of a `Complete`).
    LiteralData(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a command line.
    Line,
    /// Waiting for the caller's decision on an announced literal.
    Decide { length: u32, non_sync: bool },
    /// Reading literal data into the message.
    Literal { remaining: u32 },
    /// Handing literal data out as [`Frame::LiteralData`].
    StreamLiteral { remaining: u32 },
    /// Dropping bytes up to the next LF (after an overlong line).
    SkipLine,
    /// Dropping literal data of a rejected non-synchronizing literal; then
    /// the rest of that command is dropped too.
    SkipLiteral { remaining: u64 },
    /// Dropping the remaining lines of a rejected command.
    SkipCommand,
}

/// Incremental command framer.
#[derive(Debug)]
pub(crate) struct Framer {
    input: Vec<u8>,
    pos: usize,
    message: Vec<u8>,
    state: State,
    max_line: usize,
    line_start: usize,
    /// In line-only mode (AUTHENTICATE continuation, IDLE) literals are not recognised.
    line_only: bool,
    /// Last bytes of a line being skipped, to spot a `{n+}` at its end.
    skip_tail: Vec<u8>,
}

impl Framer {
    pub(crate) fn new(max_line: usize) -> Self {
        Framer {
            input: Vec::new(),
            pos: 0,
            message: Vec::new(),
            state: State::Line,
            max_line,
            line_start: 0,
            line_only: false,
            skip_tail: Vec::new(),
        }
    }

    pub(crate) fn enqueue(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Frees the input buffer once all of it was consumed, and the command
    /// buffer when no command is being read, so that a waiting session holds
    /// no buffer space (memory per idle connection).
    pub(crate) fn release_consumed(&mut self) {
        if self.pos == self.input.len() {
            self.input = Vec::new();
            self.pos = 0;
        }
        if self.message.is_empty() {
            self.message = Vec::new();
        }
    }

    /// Treat the next lines as plain lines (no literal recognition).
    pub(crate) fn set_line_only(&mut self, on: bool) {
        self.line_only = on;
    }

    /// Unprocessed input bytes (not yet part of any frame), plus the bytes of
    /// a partially read command.
    pub(crate) fn take_unprocessed(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.message);
        out.extend_from_slice(&self.input[self.pos..]);
        self.input.clear();
        self.pos = 0;
        self.state = State::Line;
        out
    }

    /// A copy of the buffered input (a partial command line plus unread
    /// bytes), or `None` while a literal or skipped data is in progress (the
    /// bytes could not be re-framed from scratch).
    pub(crate) fn pending_copy(&self) -> Option<Vec<u8>> {
        if self.state != State::Line || self.line_start != 0 {
            return None;
        }
        let mut out = self.message.clone();
        out.extend_from_slice(&self.input[self.pos..]);
        Some(out)
    }

    /// True if part of a command has been read (a partial line, a literal
    /// being received or skipped).
    pub(crate) fn mid_command(&self) -> bool {
        self.state != State::Line || self.line_start != 0 || !self.message.is_empty() || self.pos < self.input.len()
    }

    /// Drops all buffered input (after STARTTLS, to defeat command injection).
    pub(crate) fn discard_all(&mut self) {
        self.take_unprocessed();
    }

    /// Bytes of the command read so far (lines and accepted literals).
    pub(crate) fn message_len(&self) -> usize {
        self.message.len()
    }

    pub(crate) fn accept_literal(&mut self) {
        if let State::Decide { length, .. } = self.state {
            self.state = if length == 0 { State::Line } else { State::Literal { remaining: length } };
            self.line_start = self.message.len() + length as usize;
        }
    }

    /// Accepts the announced literal but hands its data out piece by piece
    /// as [`Frame::LiteralData`] instead of keeping it: the command goes on
    /// as if the literal were empty (`{n}` becomes `{0}`), so a large APPEND
    /// never sits in memory.
    pub(crate) fn accept_literal_streamed(&mut self) {
        let State::Decide { length, .. } = self.state else { return };
        if length == 0 {
            return self.accept_literal();
        }
        let line = &self.message[self.line_start..];
        let ending = if line.ends_with(b"\r\n") { 2 } else { 1 };
        if let Some(open) = line.iter().rposition(|&b| b == b'{') {
            let open = self.line_start + open;
            let end = self.message.len() - ending;
            self.message.splice(open..end, b"{0}".iter().copied());
        }
        self.state = State::StreamLiteral { remaining: length };
        self.line_start = self.message.len();
    }

    /// Refuses the announced literal: for a synchronizing literal the client
    /// sends nothing more for this command; a non-synchronizing literal's
    /// data and the rest of the command are skipped.
    pub(crate) fn reject_literal(&mut self) {
        if let State::Decide { length, non_sync } = self.state {
            self.message.clear();
            self.state = if non_sync { State::SkipLiteral { remaining: u64::from(length) } } else { State::Line };
            self.line_start = 0;
        }
    }

    /// Advances; `None` means more input is needed.
    pub(crate) fn poll(&mut self) -> Option<Frame> {
        loop {
            match self.state {
                State::Decide { .. } => return None,
                State::Literal { remaining } => {
                    let avail = self.input.len() - self.pos;
                    let take = avail.min(remaining as usize);
                    self.message.extend_from_slice(&self.input[self.pos..self.pos + take]);
                    self.pos += take;
                    let left = remaining - take as u32;
                    if left > 0 {
                        self.state = State::Literal { remaining: left };
                        return None;
                    }
                    self.state = State::Line;
                    self.line_start = self.message.len();
                }
                State::StreamLiteral { remaining } => {
                    let avail = self.input.len() - self.pos;
                    if avail == 0 {
                        return None;
                    }
                    let take = avail.min(remaining as usize);
                    let data = self.input[self.pos..self.pos + take].to_vec();
                    self.pos += take;
                    let left = remaining - take as u32;
                    self.state = if left > 0 { State::StreamLiteral { remaining: left } } else { State::Line };
                    return Some(Frame::LiteralData(data));
                }
                State::SkipLiteral { remaining } => {
                    let avail = (self.input.len() - self.pos) as u64;
                    let take = avail.min(remaining);
                    self.pos += take as usize;
                    if take < remaining {
                        self.state = State::SkipLiteral { remaining: remaining - take };
                        return None;
                    }
                    self.state = State::SkipCommand;
                }
                State::SkipLine | State::SkipCommand => {
                    let avail = &self.input[self.pos..];
                    let nl = avail.iter().position(|&b| b == b'\n');
                    let upto = nl.map_or(avail.len(), |p| p + 1);
                    // Keep only the tail: enough for `{4294967295+}\r\n`.
                    self.skip_tail.extend_from_slice(&avail[..upto]);
                    if self.skip_tail.len() > 32 {
                        self.skip_tail.drain(..self.skip_tail.len() - 32);
                    }
                    self.pos += upto;
                    nl?;
                    let tail = std::mem::take(&mut self.skip_tail);
                    match literal_announcement(&tail) {
                        // A non-synchronizing literal follows even though
                        // we refused the line: its data must not be read
                        // as commands.
                        Some((len, true)) if !self.line_only => {
                            self.state = State::SkipLiteral { remaining: u64::from(len) }
                        }
                        // A synchronizing literal is never sent without our `+`.
                        _ => self.state = State::Line,
                    }
                }
                State::Line => {
                    let start = self.pos;
                    let line_len_so_far = self.message.len() - self.line_start;
                    let search_end = self.input.len().min(start + (self.max_line + 1).saturating_sub(line_len_so_far));
                    match self.input[start..search_end].iter().position(|&b| b == b'\n') {
                        Some(nl) => {
                            self.message.extend_from_slice(&self.input[start..start + nl + 1]);
                            self.pos = start + nl + 1;
                            let line = &self.message[self.line_start..];
                            let ann = if self.line_only { None } else { literal_announcement(line) };
                            match ann {
                                Some((length, non_sync)) => {
                                    self.state = State::Decide { length, non_sync };
                                    return Some(Frame::Literal { length, non_sync, head: self.message.clone() });
                                }
                                None => {
                                    self.line_start = 0;
                                    return Some(Frame::Complete(std::mem::take(&mut self.message)));
                                }
                            }
                        }
                        None => {
                            if line_len_so_far + (search_end - start) > self.max_line {
                                let mut head = std::mem::take(&mut self.message);
                                head.extend_from_slice(&self.input[start..search_end.min(start + 64)]);
                                head.truncate(64);
                                self.skip_tail = self.input[start..search_end].to_vec();
                                self.pos = search_end;
                                self.line_start = 0;
                                self.state = State::SkipLine;
                                return Some(Frame::LineTooLong(head));
                            }
                            self.message.extend_from_slice(&self.input[start..search_end]);
                            self.pos = search_end;
                            return None;
                        }
                    }
                }
            }
        }
    }
}

/// Parses a trailing `{n}` / `{n+}` before the line ending.
fn literal_announcement(line: &[u8]) -> Option<(u32, bool)> {
    let mut l = line;
    if let Some(rest) = l.strip_suffix(b"\n") {
        l = rest;
    }
    if let Some(rest) = l.strip_suffix(b"\r") {
        l = rest;
    }
    let l = l.strip_suffix(b"}")?;
    let (l, non_sync) = match l.strip_suffix(b"+") {
        Some(rest) => (rest, true),
        None => (l, false),
    };
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let n = u32::try_from(n).ok()?;
    // `~{n}` is a literal8 (BINARY), which we do not advertise; still frame it.
    Some((n, non_sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_literals() {
        let mut f = Framer::new(100);
        f.enqueue(b"a NOOP\r\nb LOGIN {3}\r\n");
        assert_eq!(f.poll(), Some(Frame::Complete(b"a NOOP\r\n".to_vec())));
        assert!(matches!(f.poll(), Some(Frame::Literal { length: 3, non_sync: false, .. })));
        f.accept_literal();
        assert_eq!(f.poll(), None);
        f.enqueue(b"bob x\r\n");
        assert_eq!(f.poll(), Some(Frame::Complete(b"b LOGIN {3}\r\nbob x\r\n".to_vec())));
    }

    #[test]
    fn overlong_line_is_skipped() {
        let mut f = Framer::new(10);
        f.enqueue(b"a 123456789012345");
        assert!(matches!(f.poll(), Some(Frame::LineTooLong(_))));
        assert_eq!(f.poll(), None);
        f.enqueue(b"6789\r\nb NOOP\r\n");
        assert_eq!(f.poll(), Some(Frame::Complete(b"b NOOP\r\n".to_vec())));
    }

    #[test]
    fn rejected_non_sync_literal_is_skipped() {
        let mut f = Framer::new(100);
        f.enqueue(b"a APPEND x {5+}\r\nhello {2+}\r\nhi\r\nb NOOP\r\n");
        assert!(matches!(f.poll(), Some(Frame::Literal { length: 5, non_sync: true, .. })));
        f.reject_literal();
        assert_eq!(f.poll(), Some(Frame::Complete(b"b NOOP\r\n".to_vec())));
    }

    #[test]
    fn overlong_line_with_non_sync_literal_skips_the_data() {
        let mut f = Framer::new(10);
        f.enqueue(b"a APPEND INBOX xxxxxxxxxxxxxxxx {9+}\r\nb LOGOUT\r\nc NOOP\r\n");
        assert!(matches!(f.poll(), Some(Frame::LineTooLong(_))));
        assert_eq!(f.poll(), Some(Frame::Complete(b"c NOOP\r\n".to_vec())));
    }

    #[test]
    fn streamed_literal_is_handed_out_in_pieces() {
        let mut f = Framer::new(100);
        f.enqueue(b"a APPEND INBOX (\\Seen) {10}\r\n01234");
        assert!(matches!(f.poll(), Some(Frame::Literal { length: 10, non_sync: false, .. })));
        f.accept_literal_streamed();
        assert_eq!(f.poll(), Some(Frame::LiteralData(b"01234".to_vec())));
        assert_eq!(f.poll(), None);
        assert_eq!(f.pending_copy(), None, "not re-framable while the literal streams");
        f.enqueue(b"56789\r\nb NOOP\r\n");
        assert_eq!(f.poll(), Some(Frame::LiteralData(b"56789".to_vec())));
        assert_eq!(f.poll(), Some(Frame::Complete(b"a APPEND INBOX (\\Seen) {0}\r\n\r\n".to_vec())));
        assert_eq!(f.poll(), Some(Frame::Complete(b"b NOOP\r\n".to_vec())));
        // LITERAL+ and a bare LF line ending.
        f.enqueue(b"c APPEND x {3+}\nabc\r\n");
        assert!(matches!(f.poll(), Some(Frame::Literal { length: 3, non_sync: true, .. })));
        f.accept_literal_streamed();
        assert_eq!(f.poll(), Some(Frame::LiteralData(b"abc".to_vec())));
        assert_eq!(f.poll(), Some(Frame::Complete(b"c APPEND x {0}\n\r\n".to_vec())));
    }

    #[test]
    fn announcement_parsing() {
        assert_eq!(literal_announcement(b"x {12}\r\n"), Some((12, false)));
        assert_eq!(literal_announcement(b"x {12+}\n"), Some((12, true)));
        assert_eq!(literal_announcement(b"x {99999999999}\r\n"), None);
        assert_eq!(literal_announcement(b"x {}\r\n"), None);
    }
}
