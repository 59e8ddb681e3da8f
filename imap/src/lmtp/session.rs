//! The sans-I/O LMTP session: bytes in, reply bytes and delivery requests out.
//!
//! The driver feeds whatever it read with [`LmtpSession::receive`], writes
//! [`LmtpSession::take_output`], and when [`LmtpSession::take_transaction`]
//! yields a message, stores it for every recipient and reports back with
//! [`LmtpSession::delivery_done`]; the session then queues one reply per
//! recipient (RFC 2033 section 4.2) and resumes with any pipelined input.
//! While a transaction is out for delivery no further input is processed.
//!
//! Message data is not held here: as it arrives it is dot-unstuffed and
//! handed to the driver's [`DataSink`] slice by slice (the driver spools it
//! to disk), so a session holds no more body bytes than one read.
//!
//! Only `CRLF . CRLF` ends the data (RFC 5321 section 4.1.1.4), and only a
//! line that begins after a CRLF is dot-unstuffed: a bare LF or CR never
//! starts a line, so `LF . LF` cannot end a message early and smuggle a
//! second one in behind it (the "SMTP smuggling" attack of 2023).

use super::command::{Command, MailFrom, SyntaxError};

/// What to do with a bare LF or bare CR (one not part of a CRLF) in
/// message data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Keep it as message data (the store turns bare LF into CRLF).
    #[default]
    Store,
    /// Refuse the message with `554 5.6.0` for every recipient.
    Reject,
}

/// Receives the message data of a transaction as it arrives. Called only
/// from inside [`LmtpSession::receive`] / [`LmtpSession::delivery_done`].
pub trait DataSink<R> {
    /// A new message body starts (after the 354 reply) for `tx` (its
    /// envelope; `size` is still 0).
    fn begin(&mut self, tx: &Transaction<R>);
    /// More dot-unstuffed body bytes, line endings as received.
    fn write(&mut self, bytes: &[u8]);
    /// The body being received will not be delivered (too large, bare line
    /// endings refused): what was written so far can be dropped. No further
    /// writes come for this body.
    fn abort(&mut self);
}

/// Limits a session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmtpLimits {
    /// Largest message accepted (announced as `SIZE`).
    pub max_message_size: u64,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Longest command line accepted, in bytes including CRLF.
    pub max_command_line: usize,
    /// Bad commands tolerated before the session is closed.
    pub max_errors: u32,
    /// Bare LF / CR in message data: stored or refused.
    pub bare_line_endings: BareLineEndings,
}

impl Default for LmtpLimits {
    fn default() -> Self {
        LmtpLimits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 4096,
            max_errors: 20,
            bare_line_endings: BareLineEndings::Store,
        }
    }
}

/// What the recipient check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict<R> {
    /// Deliverable; `R` identifies the target (e.g. the user record).
    Accept(R),
    /// No such user: 550 5.1.1.
    Unknown,
    /// Lookup failed for now: 451 4.3.0.
    TempFail,
}

/// Decides whether an envelope recipient is deliverable.
pub trait RecipientResolver {
    /// What an accepted recipient resolves to.
    type Target;
    /// Checks `address` (without angle brackets).
    fn resolve(&self, address: &str) -> RcptVerdict<Self::Target>;
}

/// An accepted recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRecipient<R> {
    /// The address as given in RCPT TO.
    pub address: String,
    /// What the resolver returned.
    pub target: R,
}

/// A complete message to deliver; its data went to the [`DataSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction<R> {
    /// Transaction id (`<session id>.<n>`), for logs and the Received header.
    pub id: String,
    /// The LHLO name the client gave.
    pub helo: String,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// Accepted recipients, in RCPT order.
    pub recipients: Vec<AcceptedRecipient<R>>,
    /// Size of the message data written to the sink (dot-unstuffed, line
    /// endings as received).
    pub size: u64,
}

/// Outcome of delivering a transaction to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Stored durably: 250 2.0.0.
    Stored {
        /// The UID the message got.
        uid: u32,
    },
    /// Larger than allowed: 552 5.3.4.
    TooLarge,
    /// Refused for good (e.g. empty message): 554 5.6.0.
    Rejected(String),
    /// Not stored, retry later: 451 4.3.0.
    TempFail(String),
    /// Not stored because the disk or quota is full, retry later: 452 4.3.1.
    NoSpace,
}

/// Where the data reader is relative to line structure. Only a CRLF
/// starts a new line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line (after CRLF, or right after DATA).
    LineStart,
    /// Saw `.` at a line start (never data: stuffing or the end mark).
    Dot,
    /// Saw `.` CR at a line start: LF ends the data.
    DotCr,
    /// Inside a line.
    Mid,
    /// Saw CR inside a line (already written as data).
    Cr,
}

/// Why the body being received will not be delivered. Both are tracked
/// over the whole body, so the answer does not depend on how the input was
/// split into reads; too large wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Refusal {
    too_large: bool,
    bare_line_ending: bool,
}

impl Refusal {
    fn any(self) -> bool {
        self.too_large || self.bare_line_ending
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before LHLO.
    Start,
    /// After LHLO, no transaction.
    Ready,
    /// Reading message data after DATA.
    Data,
    /// A transaction is out for delivery.
    Delivering,
    /// QUIT, timeout or too many errors: nothing more is processed.
    Closed,
}

/// One LMTP connection's protocol state.
#[derive(Debug)]
pub struct LmtpSession<R> {
    hostname: String,
    session_id: String,
    limits: LmtpLimits,
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    helo: String,
    mail: Option<MailFrom>,
    recipients: Vec<AcceptedRecipient<R>>,
    data_size: u64,
    data_refused: Refusal,
    data_state: DataState,
    discarding_long_line: bool,
    errors: u32,
    transactions: u64,
    /// The transaction whose data is being read.
    receiving: Option<Transaction<R>>,
    pending: Option<Transaction<R>>,
    pending_addresses: Vec<String>,
}

/// Reply texts may echo client input: keep them on one printable line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).take(200).collect()
}

impl<R> LmtpSession<R> {
    /// A new session; the greeting is queued as output.
    pub fn new(hostname: &str, session_id: &str, limits: LmtpLimits) -> Self {
        let mut s = LmtpSession {
            hostname: one_line(hostname),
            session_id: session_id.to_string(),
            limits,
            phase: Phase::Start,
            input: Vec::new(),
            output: Vec::new(),
            helo: String::new(),
            mail: None,
            recipients: Vec::new(),
            data_size: 0,
            data_refused: Refusal::default(),
            data_state: DataState::LineStart,
            discarding_long_line: false,
            errors: 0,
            transactions: 0,
            receiving: None,
            pending: None,
            pending_addresses: Vec::new(),
        };
        let greeting = format!("220 {} dormouse LMTP ready", s.hostname);
        s.reply(&greeting);
        s
    }

    fn reply(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Bytes to send to the client now (empties the buffer).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// A message ready for delivery, if any. After taking it, call
    /// [`LmtpSession::delivery_done`] with one status per recipient.
    pub fn take_transaction(&mut self) -> Option<Transaction<R>> {
        self.pending.take()
    }

    /// True once the session ended (QUIT, timeout, too many errors): send the
    /// remaining output and close the connection.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True while a transaction is out for delivery (input is not processed).
    pub fn is_delivering(&self) -> bool {
        self.phase == Phase::Delivering
    }

    /// Bytes received but not yet processed (bounded by the line limit,
    /// except while a delivery is pending).
    pub fn buffered_input(&self) -> usize {
        self.input.len()
    }

    /// The client was silent too long: queue 421 and close.
    pub fn timed_out(&mut self) {
        if self.phase != Phase::Closed {
            let line = format!("421 4.4.2 {} Timeout, closing connection", self.hostname);
            self.reply(&line);
            self.phase = Phase::Closed;
        }
    }

    /// The server is shutting down: queue 421 and close.
    pub fn shutting_down(&mut self) {
        if self.phase != Phase::Closed {
            let line = format!("421 4.3.2 {} Server shutting down", self.hostname);
            self.reply(&line);
            self.phase = Phase::Closed;
        }
    }

    /// Reports the delivery results of the taken transaction, one per
    /// recipient in RCPT order, and resumes processing buffered input.
    /// Missing statuses are answered as temporary failures.
    pub fn delivery_done(
        &mut self,
        statuses: Vec<DeliveryStatus>,
        resolver: &impl RecipientResolver<Target = R>,
        sink: &mut impl DataSink<R>,
    ) {
        if self.phase != Phase::Delivering {
            return;
        }
        let addresses = std::mem::take(&mut self.pending_addresses);
        let mut statuses = statuses.into_iter();
        for address in addresses {
            let status = statuses.next().unwrap_or_else(|| DeliveryStatus::TempFail("no result".into()));
            let line = self.status_line(&address, &status);
            self.reply(&line);
        }
        self.phase = Phase::Ready;
        self.process(resolver, sink);
    }

    fn status_line(&self, address: &str, status: &DeliveryStatus) -> String {
        let address = one_line(address);
        match status {
            DeliveryStatus::Stored { uid } => format!("250 2.0.0 <{address}> Saved as UID {uid}"),
            DeliveryStatus::TooLarge => {
                format!("552 5.3.4 <{address}> Message size exceeds fixed maximum message size")
            }
            DeliveryStatus::Rejected(why) => format!("554 5.6.0 <{address}> {}", one_line(why)),
            DeliveryStatus::NoSpace => format!("452 4.3.1 <{address}> Insufficient system storage"),
            DeliveryStatus::TempFail(why) => {
                format!("451 4.3.0 <{address}> Temporary failure, try again later ({})", one_line(why))
            }
        }
    }

    /// Feeds bytes read from the client and processes as much as possible;
    /// message data goes to `sink`.
    pub fn receive(&mut self, bytes: &[u8], resolver: &impl RecipientResolver<Target = R>, sink: &mut impl DataSink<R>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process(resolver, sink);
    }

    fn process(&mut self, resolver: &impl RecipientResolver<Target = R>, sink: &mut impl DataSink<R>) {
        let mut pos = 0;
        loop {
            match self.phase {
                Phase::Closed | Phase::Delivering => break,
                Phase::Data => match self.data_step(pos, sink) {
                    Some(next) => pos = next,
                    None => {
                        pos = self.input.len();
                        break;
                    }
                },
                Phase::Start | Phase::Ready => {
                    let rest = &self.input[pos..];
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(nl) => {
                            let line_len = nl + 1;
                            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]).to_vec();
                            pos += line_len;
                            if std::mem::take(&mut self.discarding_long_line) {
                                continue;
                            }
                            if line_len > self.limits.max_command_line {
                                self.error("500 5.5.2 Line too long");
                            } else {
                                self.command_line(&line, resolver, sink);
                            }
                        }
                        None => {
                            if rest.len() >= self.limits.max_command_line {
                                if !self.discarding_long_line {
                                    self.error("500 5.5.2 Line too long");
                                }
                                self.discarding_long_line = true;
                                pos = self.input.len();
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.input.drain(..pos);
    }

    /// Processes message data from `pos`, handing body bytes to `sink`;
    /// returns the new position, or `None` when more input is needed.
    fn data_step(&mut self, pos: usize, sink: &mut impl DataSink<R>) -> Option<usize> {
        let input = std::mem::take(&mut self.input);
        let result = self.scan_data(&input[pos..], sink).map(|used| pos + used);
        self.input = input;
        result
    }

    /// Runs the data state machine over `rest`. Returns how many bytes
    /// were used if the end mark was found (the session then leaves the
    /// data phase), `None` if all of `rest` was used and more is needed.
    fn scan_data(&mut self, rest: &[u8], sink: &mut impl DataSink<R>) -> Option<usize> {
        // `run_start..i` is data to pass through as one slice.
        let mut run_start = 0;
        let mut i = 0;
        while i < rest.len() {
            let b = rest[i];
            match (self.data_state, b) {
                (DataState::LineStart, b'.') => {
                    self.data_bytes(&rest[run_start..i], sink);
                    run_start = i + 1;
                    self.data_state = DataState::Dot;
                }
                (DataState::Dot, b'\r') => {
                    run_start = i + 1;
                    self.data_state = DataState::DotCr;
                }
                (DataState::Dot, _) => {
                    // A stuffed dot: dropped; `b` starts the line's content.
                    self.data_state = DataState::Mid;
                    continue;
                }
                (DataState::DotCr, b'\n') => {
                    self.end_of_data();
                    return Some(i + 1);
                }
                (DataState::DotCr, _) => {
                    // `.` CR without LF: the dot was stuffing, the CR is bare.
                    self.bare_line_ending(sink);
                    self.data_bytes(b"\r", sink);
                    run_start = i;
                    self.data_state = DataState::Mid;
                    continue;
                }
                (DataState::LineStart | DataState::Mid, b'\r') => self.data_state = DataState::Cr,
                (DataState::LineStart | DataState::Mid, b'\n') => {
                    // A bare LF is data and never starts a line.
                    self.bare_line_ending(sink);
                    self.data_state = DataState::Mid;
                }
                (DataState::LineStart | DataState::Mid, _) => self.data_state = DataState::Mid,
                (DataState::Cr, b'\n') => self.data_state = DataState::LineStart,
                (DataState::Cr, b'\r') => self.bare_line_ending(sink),
                (DataState::Cr, _) => {
                    self.bare_line_ending(sink);
                    self.data_state = DataState::Mid;
                }
            }
            i += 1;
        }
        // A held `.` or `.` CR is decided by the next read.
        if !matches!(self.data_state, DataState::Dot | DataState::DotCr) {
            self.data_bytes(&rest[run_start..], sink);
        }
        None
    }

    /// Counts body bytes and passes them on unless the body is refused;
    /// refuses it when it grows past the size limit.
    fn data_bytes(&mut self, bytes: &[u8], sink: &mut impl DataSink<R>) {
        if bytes.is_empty() {
            return;
        }
        self.data_size += bytes.len() as u64;
        if self.data_size > self.limits.max_message_size {
            self.refuse_data(|r| r.too_large = true, sink);
        } else if !self.data_refused.any() {
            sink.write(bytes);
        }
    }

    fn bare_line_ending(&mut self, sink: &mut impl DataSink<R>) {
        if self.limits.bare_line_endings == BareLineEndings::Reject {
            self.refuse_data(|r| r.bare_line_ending = true, sink);
        }
    }

    /// Records a refusal; the sink hears of the first one only.
    fn refuse_data(&mut self, mark: impl FnOnce(&mut Refusal), sink: &mut impl DataSink<R>) {
        let before = self.data_refused.any();
        mark(&mut self.data_refused);
        if !before {
            sink.abort();
        }
    }

    fn end_of_data(&mut self) {
        let Some(mut tx) = self.receiving.take() else {
            self.phase = Phase::Ready;
            return;
        };
        let addresses: Vec<String> = tx.recipients.iter().map(|r| r.address.clone()).collect();
        tx.size = std::mem::take(&mut self.data_size);
        let refused = std::mem::take(&mut self.data_refused);
        if refused.any() {
            let status = if refused.too_large {
                DeliveryStatus::TooLarge
            } else {
                DeliveryStatus::Rejected("Message contains a bare CR or LF (only CRLF ends a line)".into())
            };
            for address in &addresses {
                let line = self.status_line(address, &status);
                self.reply(&line);
            }
            self.phase = Phase::Ready;
            return;
        }
        self.pending = Some(tx);
        self.pending_addresses = addresses;
        self.phase = Phase::Delivering;
    }

    fn error(&mut self, line: &str) {
        self.reply(line);
        self.errors += 1;
        if self.errors >= self.limits.max_errors {
            let line = format!("421 4.7.0 {} Too many errors, closing connection", self.hostname);
            self.reply(&line);
            self.phase = Phase::Closed;
        }
    }

    fn reset_transaction(&mut self) {
        self.mail = None;
        self.recipients.clear();
        self.data_size = 0;
        self.data_refused = Refusal::default();
    }

    fn command_line(&mut self, line: &[u8], resolver: &impl RecipientResolver<Target = R>, sink: &mut impl DataSink<R>) {
        let Ok(text) = std::str::from_utf8(line) else {
            self.error("500 5.5.2 Command line is not valid UTF-8");
            return;
        };
        let command = match Command::parse(text) {
            Ok(c) => c,
            Err(SyntaxError::Arguments(why)) => {
                self.error(&format!("501 5.5.4 Syntax error: {why}"));
                return;
            }
            Err(SyntaxError::UnsupportedParameter) => {
                self.error("555 5.5.4 Unsupported parameter");
                return;
            }
        };
        let ready = self.phase == Phase::Ready;
        match command {
            Command::Lhlo(name) => {
                self.reset_transaction();
                self.helo = one_line(&name);
                self.phase = Phase::Ready;
                let size = self.limits.max_message_size;
                let host = self.hostname.clone();
                for line in [
                    format!("250-{host}"),
                    "250-PIPELINING".into(),
                    "250-8BITMIME".into(),
                    "250-ENHANCEDSTATUSCODES".into(),
                    format!("250 SIZE {size}"),
                ] {
                    self.reply(&line);
                }
            }
            Command::HeloEhlo => self.error("500 5.5.1 This is LMTP: use LHLO"),
            Command::Quit => {
                let line = format!("221 2.0.0 {} Bye", self.hostname);
                self.reply(&line);
                self.phase = Phase::Closed;
            }
            Command::Noop => self.reply("250 2.0.0 OK"),
            Command::Rset => {
                self.reset_transaction();
                self.reply("250 2.0.0 OK");
            }
            Command::Vrfy => self.reply("252 2.3.3 Try RCPT to find out"),
            Command::Help => self.reply("214 2.0.0 Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY"),
            Command::NotImplemented => self.error("502 5.5.1 Command not implemented"),
            Command::Unknown => self.error("500 5.5.2 Unknown command"),
            Command::Mail(_) | Command::Rcpt(_) | Command::Data if !ready => {
                self.error("503 5.5.1 Bad sequence of commands: send LHLO first");
            }
            Command::Mail(mail) => {
                if self.mail.is_some() {
                    self.error("503 5.5.1 Bad sequence of commands: MAIL already given");
                } else if mail.size.is_some_and(|s| s > self.limits.max_message_size) {
                    self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
                } else {
                    self.mail = Some(mail);
                    self.reply("250 2.1.0 OK");
                }
            }
            Command::Rcpt(address) => {
                if self.mail.is_none() {
                    self.error("503 5.5.1 Bad sequence of commands: MAIL first");
                } else if self.recipients.len() >= self.limits.max_recipients {
                    self.reply("452 4.5.3 Too many recipients");
                } else {
                    match resolver.resolve(&address) {
                        RcptVerdict::Accept(target) => {
                            self.recipients.push(AcceptedRecipient { address, target });
                            self.reply("250 2.1.5 OK");
                        }
                        RcptVerdict::Unknown => {
                            let line = format!("550 5.1.1 <{}> User doesn't exist", one_line(&address));
                            self.reply(&line);
                        }
                        RcptVerdict::TempFail => {
                            let line = format!("451 4.3.0 <{}> Temporary user lookup failure", one_line(&address));
                            self.reply(&line);
                        }
                    }
                }
            }
            Command::Data => {
                if self.mail.is_none() {
                    self.error("503 5.5.1 Bad sequence of commands: MAIL first");
                } else if self.recipients.is_empty() {
                    self.error("503 5.5.1 Bad sequence of commands: no valid recipients");
                } else {
                    self.data_size = 0;
                    self.data_refused = Refusal::default();
                    self.data_state = DataState::LineStart;
                    self.phase = Phase::Data;
                    self.transactions += 1;
                    let tx = Transaction {
                        id: format!("{}.{}", self.session_id, self.transactions),
                        helo: self.helo.clone(),
                        sender: self.mail.take().unwrap_or_default().sender,
                        recipients: std::mem::take(&mut self.recipients),
                        size: 0,
                    };
                    sink.begin(&tx);
                    self.receiving = Some(tx);
                    self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
                }
            }
        }
    }
}
