//! The sans-I/O LMTP session: bytes in, reply bytes and delivery requests out.
//!
//! The driver feeds whatever it read with [`LmtpSession::receive`], writes
//! [`LmtpSession::take_output`], and when [`LmtpSession::take_transaction`]
//! yields a message, stores it for every recipient and reports back with
//! [`LmtpSession::delivery_done`]; the session then queues one reply per
//! recipient (RFC 2033 section 4.2) and resumes with any pipelined input.
//! While a transaction is out for delivery no further input is processed.

use super::command::{Command, MailFrom, SyntaxError};

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
}

impl Default for LmtpLimits {
    fn default() -> Self {
        LmtpLimits { max_message_size: 50 * 1024 * 1024, max_recipients: 100, max_command_line: 4096, max_errors: 20 }
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

/// A complete message to deliver.
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
    /// The message, dot-unstuffed, line endings as received.
    pub data: Vec<u8>,
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
    data: Vec<u8>,
    data_overflow: bool,
    data_at_line_start: bool,
    discarding_long_line: bool,
    errors: u32,
    transactions: u64,
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
            data: Vec::new(),
            data_overflow: false,
            data_at_line_start: true,
            discarding_long_line: false,
            errors: 0,
            transactions: 0,
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
    pub fn delivery_done(&mut self, statuses: Vec<DeliveryStatus>, resolver: &impl RecipientResolver<Target = R>) {
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
        self.process(resolver);
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

    /// Feeds bytes read from the client and processes as much as possible.
    pub fn receive(&mut self, bytes: &[u8], resolver: &impl RecipientResolver<Target = R>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process(resolver);
    }

    fn process(&mut self, resolver: &impl RecipientResolver<Target = R>) {
        let mut pos = 0;
        loop {
            match self.phase {
                Phase::Closed | Phase::Delivering => break,
                Phase::Data => match self.data_step(pos) {
                    Some(next) => pos = next,
                    None => break,
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
                                self.command_line(&line, resolver);
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

    /// Processes message data from `pos`; returns the new position, or
    /// `None` when more input is needed.
    fn data_step(&mut self, pos: usize) -> Option<usize> {
        let rest = &self.input[pos..];
        if rest.is_empty() {
            return None;
        }
        let mut start = 0;
        if self.data_at_line_start && rest[0] == b'.' {
            match rest.get(1) {
                None => return None,
                Some(b'\n') => return Some(self.end_of_data(pos + 2)),
                Some(b'\r') => match rest.get(2) {
                    None => return None,
                    Some(b'\n') => return Some(self.end_of_data(pos + 3)),
                    Some(_) => start = 1,
                },
                Some(_) => start = 1,
            }
        }
        let body = &rest[start..];
        let (chunk_len, complete_line) = match body.iter().position(|&b| b == b'\n') {
            Some(nl) => (nl + 1, true),
            None => (body.len(), false),
        };
        // A CRLF split across reads is fine: only LF ends a line here.
        let chunk = &body[..chunk_len];
        let room = (self.limits.max_message_size as usize).saturating_sub(self.data.len());
        if chunk.len() > room {
            self.data_overflow = true;
        }
        if !self.data_overflow {
            self.data.extend_from_slice(chunk);
        }
        self.data_at_line_start = complete_line;
        Some(pos + start + chunk_len)
    }

    fn end_of_data(&mut self, next: usize) -> usize {
        let addresses: Vec<String> = self.recipients.iter().map(|r| r.address.clone()).collect();
        let mail = self.mail.take().unwrap_or_default();
        let recipients = std::mem::take(&mut self.recipients);
        let data = std::mem::take(&mut self.data);
        if std::mem::take(&mut self.data_overflow) {
            for address in &addresses {
                let line = self.status_line(address, &DeliveryStatus::TooLarge);
                self.reply(&line);
            }
            self.phase = Phase::Ready;
            return next;
        }
        self.transactions += 1;
        self.pending = Some(Transaction {
            id: format!("{}.{}", self.session_id, self.transactions),
            helo: self.helo.clone(),
            sender: mail.sender,
            recipients,
            data,
        });
        self.pending_addresses = addresses;
        self.phase = Phase::Delivering;
        next
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
        self.data.clear();
        self.data_overflow = false;
    }

    fn command_line(&mut self, line: &[u8], resolver: &impl RecipientResolver<Target = R>) {
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
                    self.data.clear();
                    self.data_overflow = false;
                    self.data_at_line_start = true;
                    self.phase = Phase::Data;
                    self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
                }
            }
        }
    }
}
