//! [`RecordLayer`]: TLS 1.3 records in and out for a session whose
//! handshake happened elsewhere (RFC 8446 §5 record protection, §6 alerts,
//! §4.6.3 KeyUpdate).

use crate::keys::{next_secret, DirectionKeys};
use crate::state::TlsState;
use crate::{CipherSuite, Error};

/// Largest TLSInnerPlaintext content (RFC 8446 §5.1: 2^14).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest TLSCiphertext length field (RFC 8446 §5.2: 2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Record header length.
const HEADER_LEN: usize = 5;
/// AEAD tag length of all three suites.
const TAG_LEN: usize = 16;
/// Largest post-handshake message we buffer: the only one a client may send
/// is KeyUpdate (5 bytes with its header), so anything longer is an attack
/// or a bug.
const MAX_HANDSHAKE_MESSAGE: usize = 64;

mod content {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
}

/// RFC 8446 §6 alert descriptions we send or recognise.
mod alert {
    pub const CLOSE_NOTIFY: u8 = 0;
    pub const UNEXPECTED_MESSAGE: u8 = 10;
    pub const BAD_RECORD_MAC: u8 = 20;
    pub const RECORD_OVERFLOW: u8 = 22;
    pub const ILLEGAL_PARAMETER: u8 = 47;
    pub const DECODE_ERROR: u8 = 50;
    pub const INTERNAL_ERROR: u8 = 80;
    pub const USER_CANCELED: u8 = 90;
}

const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// What the peer's records amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Decrypted application data (never empty).
    ApplicationData(Vec<u8>),
    /// The peer sent `close_notify`: it will send nothing more, and input
    /// after it is ignored. We may still send, then close.
    CloseNotify,
    /// The peer switched to its next traffic secret. `answered` is true when
    /// it asked us to update too: our KeyUpdate is then queued in
    /// [`RecordLayer::take_transmit`] (and goes out ahead of the next
    /// [`RecordLayer::seal`] anyway).
    KeyUpdate {
        /// The peer sent `update_requested` and we queued our own KeyUpdate.
        answered: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    /// Got the peer's close_notify.
    PeerClosed,
    /// A fatal error: an alert is queued (or was received); nothing more.
    Failed,
}

/// A sans-I/O TLS 1.3 record layer: feed it the bytes read from the socket
/// with [`enqueue_input`](Self::enqueue_input), pull [`Event`]s with
/// [`next`](Self::next), encrypt with [`seal`](Self::seal), and write
/// whatever [`take_transmit`](Self::take_transmit) returns after each
/// `next`. It owns its [`TlsState`] and gives it up only by value
/// ([`into_state`](Self::into_state)).
pub struct RecordLayer {
    state: TlsState,
    read_keys: DirectionKeys,
    write_keys: DirectionKeys,
    write_record_limit: u64,
    status: Status,
    sent_close: bool,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer")
            .field("suite", &self.state.suite)
            .field("read_seq", &self.state.read.seq)
            .field("write_seq", &self.state.write.seq)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl RecordLayer {
    /// Takes ownership of a session's state and derives its keys.
    ///
    /// # Errors
    /// [`Error::BadState`] for secrets that do not fit the suite.
    pub fn from_state(state: TlsState) -> Result<Self, Error> {
        state.check()?;
        let read_keys = DirectionKeys::derive(state.suite, &state.read.secret)?;
        let write_keys = DirectionKeys::derive(state.suite, &state.write.secret)?;
        let write_record_limit = state.suite.write_record_limit();
        Ok(RecordLayer {
            state,
            read_keys,
            write_keys,
            write_record_limit,
            status: Status::Open,
            sent_close: false,
        })
    }

    /// Gives the state up (to send it to another process, or to keep it
    /// after a refused hand-over). Queued transmit bytes and unprocessed
    /// input travel with it.
    pub fn into_state(self) -> TlsState {
        self.state
    }

    /// A copy of the state, for a hand-over that may be refused while this
    /// layer stays where it is. Contract: once a receiver accepted the copy,
    /// this layer must not seal or open another record (drop it), or a
    /// (key, sequence number) pair would be used twice. Prefer
    /// [`into_state`](Self::into_state) where the layer can be given up.
    pub fn clone_state(&self) -> TlsState {
        self.state.clone()
    }

    /// The session's cipher suite.
    pub fn suite(&self) -> CipherSuite {
        self.state.suite
    }

    /// Sequence number of the next record we will read, under the current key.
    pub fn read_seq(&self) -> u64 {
        self.state.read.seq
    }

    /// Sequence number of the next record we will write, under the current key.
    pub fn write_seq(&self) -> u64 {
        self.state.write.seq
    }

    /// True once the peer sent close_notify or the session failed.
    pub fn is_closed(&self) -> bool {
        self.status != Status::Open
    }

    /// Lowers the number of records written under one key before we rekey
    /// (never above the suite's [`CipherSuite::write_record_limit`]). For
    /// tests and cautious operators; not part of the state, so a new owner
    /// starts from the suite's limit.
    pub fn set_write_record_limit(&mut self, records: u64) {
        self.write_record_limit = records.clamp(1, self.state.suite.write_record_limit());
    }

    /// Appends bytes read from the peer. They are decrypted by [`next`](Self::next).
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        if self.status == Status::Open {
            self.state.incoming.extend_from_slice(bytes);
        }
    }

    /// Bytes received and not yet turned into events (e.g. a partial record).
    pub fn buffered_input(&self) -> usize {
        self.state.incoming.len()
    }

    /// True if [`take_transmit`](Self::take_transmit) has bytes for the peer.
    pub fn has_transmit(&self) -> bool {
        !self.state.transmit.is_empty()
    }

    /// Records the layer produced on its own (a KeyUpdate answer, an alert):
    /// write them to the peer before anything sealed later.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.state.transmit)
    }

    /// Processes buffered input up to the next event. `Ok(None)` means more
    /// input is needed.
    ///
    /// # Errors
    /// A fatal protocol error (bad MAC, oversized or unexpected record,
    /// malformed KeyUpdate, an alert from the peer). The matching alert, if
    /// we owe one, is queued in [`take_transmit`](Self::take_transmit); the
    /// session is dead afterwards and later calls return [`Error::Closed`].
    #[allow(clippy::should_implement_trait)] // fallible, not an Iterator
    pub fn next(&mut self) -> Result<Option<Event>, Error> {
        loop {
            match self.status {
                Status::Open => {}
                // RFC 8446 §6.1: data after a closure alert is ignored.
                Status::PeerClosed => {
                    self.state.incoming.clear();
                    return Ok(None);
                }
                Status::Failed => return Err(Error::Closed),
            }
            let incoming = &self.state.incoming;
            if incoming.len() < HEADER_LEN {
                return Ok(None);
            }
            let header: [u8; HEADER_LEN] = [
                incoming[0],
                incoming[1],
                incoming[2],
                incoming[3],
                incoming[4],
            ];
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len > MAX_CIPHERTEXT {
                return Err(self.fail(Error::RecordOverflow, alert::RECORD_OVERFLOW));
            }
            if header[0] != content::APPLICATION_DATA {
                let what = if header[0] == content::CHANGE_CIPHER_SPEC {
                    "change_cipher_spec after the handshake"
                } else {
                    "unprotected record after the handshake"
                };
                return Err(self.fail(Error::UnexpectedMessage(what), alert::UNEXPECTED_MESSAGE));
            }
            if len < TAG_LEN + 1 {
                return Err(self.fail(
                    Error::DecodeError("record shorter than its tag"),
                    alert::DECODE_ERROR,
                ));
            }
            if incoming.len() < HEADER_LEN + len {
                return Ok(None);
            }
            if self.state.read.seq == u64::MAX {
                return Err(self.fail(Error::SequenceExhausted, alert::INTERNAL_ERROR));
            }
            let mut payload: Vec<u8> = self
                .state
                .incoming
                .drain(..HEADER_LEN + len)
                .skip(HEADER_LEN)
                .collect();
            let plain_len = match self
                .read_keys
                .open(self.state.read.seq, &header, &mut payload)
            {
                Ok(n) => n,
                Err(e) => return Err(self.fail(e, alert::BAD_RECORD_MAC)),
            };
            self.state.read.seq += 1;
            payload.truncate(plain_len);
            // TLSInnerPlaintext: content, then the real type, then zero padding.
            let Some(type_at) = payload.iter().rposition(|&b| b != 0) else {
                return Err(self.fail(
                    Error::UnexpectedMessage("record without a content type"),
                    alert::UNEXPECTED_MESSAGE,
                ));
            };
            let kind = payload[type_at];
            payload.truncate(type_at);
            if payload.len() > MAX_PLAINTEXT {
                return Err(self.fail(Error::RecordOverflow, alert::RECORD_OVERFLOW));
            }
            if kind != content::HANDSHAKE && !self.state.handshake_partial.is_empty() {
                // RFC 8446 §5.1: handshake messages are not interleaved with other types.
                return Err(self.fail(
                    Error::UnexpectedMessage("record interleaved with a split handshake message"),
                    alert::UNEXPECTED_MESSAGE,
                ));
            }
            match kind {
                content::APPLICATION_DATA if payload.is_empty() => continue,
                content::APPLICATION_DATA => return Ok(Some(Event::ApplicationData(payload))),
                content::ALERT => return self.on_alert(&payload),
                content::HANDSHAKE => {
                    if let Some(event) = self.on_handshake(&payload)? {
                        return Ok(Some(event));
                    }
                }
                _ => {
                    return Err(self.fail(
                        Error::UnexpectedMessage("unknown content type"),
                        alert::UNEXPECTED_MESSAGE,
                    ))
                }
            }
        }
    }

    fn on_alert(&mut self, payload: &[u8]) -> Result<Option<Event>, Error> {
        let &[_level, description] = payload else {
            return Err(self.fail(
                Error::DecodeError("alert is not two bytes"),
                alert::DECODE_ERROR,
            ));
        };
        match description {
            alert::CLOSE_NOTIFY => {
                self.status = Status::PeerClosed;
                self.state.incoming.clear();
                Ok(Some(Event::CloseNotify))
            }
            // RFC 8446 §6.1: user_canceled is followed by close_notify; it
            // ends nothing by itself.
            alert::USER_CANCELED => Ok(None),
            other => {
                // No alert in answer to an alert.
                self.status = Status::Failed;
                Err(Error::PeerAlert(other))
            }
        }
    }

    fn on_handshake(&mut self, payload: &[u8]) -> Result<Option<Event>, Error> {
        if payload.is_empty() {
            // RFC 8446 §5.1: no zero-length handshake fragments.
            return Err(self.fail(
                Error::UnexpectedMessage("empty handshake record"),
                alert::UNEXPECTED_MESSAGE,
            ));
        }
        self.state.handshake_partial.extend_from_slice(payload);
        let message = &self.state.handshake_partial;
        if message[0] != HANDSHAKE_KEY_UPDATE {
            // A client sends no other post-handshake message (no tickets,
            // and we never ask for post-handshake authentication).
            return Err(self.fail(
                Error::UnexpectedMessage("post-handshake message other than KeyUpdate"),
                alert::UNEXPECTED_MESSAGE,
            ));
        }
        if message.len() > MAX_HANDSHAKE_MESSAGE {
            return Err(self.fail(
                Error::DecodeError("oversized post-handshake message"),
                alert::DECODE_ERROR,
            ));
        }
        if message.len() < 4 {
            return Ok(None);
        }
        let body_len = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
        if body_len != 1 {
            return Err(self.fail(
                Error::DecodeError("KeyUpdate body is not one byte"),
                alert::DECODE_ERROR,
            ));
        }
        if message.len() < 5 {
            return Ok(None);
        }
        if message.len() > 5 {
            // RFC 8446 §5.1: a message preceding a key change ends its record.
            return Err(self.fail(
                Error::UnexpectedMessage("data after KeyUpdate in the same record"),
                alert::UNEXPECTED_MESSAGE,
            ));
        }
        let requested = match message[4] {
            0 => false,
            1 => true,
            _ => {
                return Err(self.fail(
                    Error::IllegalParameter("KeyUpdate request_update"),
                    alert::ILLEGAL_PARAMETER,
                ))
            }
        };
        self.state.handshake_partial.clear();
        let next = next_secret(self.state.suite, &self.state.read.secret)?;
        self.read_keys = DirectionKeys::derive(self.state.suite, &next)?;
        self.state.read.secret = next;
        self.state.read.seq = 0;
        if requested && !self.sent_close {
            // §4.6.3: answer with update_not_requested before our next data.
            let mut out = std::mem::take(&mut self.state.transmit);
            let sent = self.update_write_key(&mut out);
            self.state.transmit = out;
            sent?;
        }
        Ok(Some(Event::KeyUpdate {
            answered: requested && !self.sent_close,
        }))
    }

    /// Encrypts application data into records (split at 2^14 bytes), after
    /// any queued transmit bytes; returns everything to write, in order.
    /// Rekeys our side first when the current key reached its record limit.
    ///
    /// # Errors
    /// [`Error::Closed`] after a fatal error or our close_notify.
    pub fn seal(&mut self, data: &[u8]) -> Result<Vec<u8>, Error> {
        if self.status == Status::Failed || self.sent_close {
            return Err(Error::Closed);
        }
        let mut out = self.take_transmit();
        out.reserve(data.len() + data.len().div_ceil(MAX_PLAINTEXT) * (HEADER_LEN + TAG_LEN + 1));
        for chunk in data.chunks(MAX_PLAINTEXT) {
            if self.state.write.seq >= self.write_record_limit {
                self.update_write_key(&mut out)?;
            }
            self.seal_record(content::APPLICATION_DATA, chunk, &mut out)?;
        }
        Ok(out)
    }

    /// Sends our KeyUpdate (asking the peer to update too when
    /// `request_peer`) and switches to our next write secret; returns the
    /// bytes to write, after any queued transmit bytes.
    ///
    /// # Errors
    /// [`Error::Closed`] after a fatal error or our close_notify.
    pub fn key_update(&mut self, request_peer: bool) -> Result<Vec<u8>, Error> {
        if self.status == Status::Failed || self.sent_close {
            return Err(Error::Closed);
        }
        let mut out = self.take_transmit();
        self.write_key_update(request_peer, &mut out)?;
        Ok(out)
    }

    /// Our close_notify, after any queued transmit bytes. Nothing can be
    /// sealed afterwards.
    ///
    /// # Errors
    /// [`Error::Closed`] after a fatal error or an earlier close_notify.
    pub fn close_notify(&mut self) -> Result<Vec<u8>, Error> {
        if self.status == Status::Failed || self.sent_close {
            return Err(Error::Closed);
        }
        let mut out = self.take_transmit();
        self.seal_record(content::ALERT, &[1, alert::CLOSE_NOTIFY], &mut out)?;
        self.sent_close = true;
        Ok(out)
    }

    fn update_write_key(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.write_key_update(false, out)
    }

    fn write_key_update(&mut self, request_peer: bool, out: &mut Vec<u8>) -> Result<(), Error> {
        let message = [HANDSHAKE_KEY_UPDATE, 0, 0, 1, u8::from(request_peer)];
        self.seal_record(content::HANDSHAKE, &message, out)?;
        let next = next_secret(self.state.suite, &self.state.write.secret)?;
        self.write_keys = DirectionKeys::derive(self.state.suite, &next)?;
        self.state.write.secret = next;
        self.state.write.seq = 0;
        Ok(())
    }

    fn seal_record(&mut self, kind: u8, content: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if self.state.write.seq == u64::MAX {
            return Err(Error::SequenceExhausted);
        }
        let mut inner = Vec::with_capacity(content.len() + 1 + TAG_LEN);
        inner.extend_from_slice(content);
        inner.push(kind);
        let len = u16::try_from(inner.len() + TAG_LEN).map_err(|_| Error::RecordOverflow)?;
        let [hi, lo] = len.to_be_bytes();
        // legacy_record_version is always 0x0303 for TLS 1.3 records.
        let header = [content::APPLICATION_DATA, 3, 3, hi, lo];
        self.write_keys
            .seal(self.state.write.seq, &header, &mut inner)?;
        self.state.write.seq += 1;
        out.extend_from_slice(&header);
        out.extend_from_slice(&inner);
        Ok(())
    }

    /// Marks the session dead and queues the fatal alert we owe the peer.
    fn fail(&mut self, error: Error, description: u8) -> Error {
        if self.status != Status::Failed && !self.sent_close {
            let mut out = std::mem::take(&mut self.state.transmit);
            // Best effort: the session is over whether the alert seals or not.
            if self
                .seal_record(content::ALERT, &[2, description], &mut out)
                .is_ok()
            {
                self.sent_close = true;
            }
            self.state.transmit = out;
        }
        self.status = Status::Failed;
        self.state.incoming.clear();
        error
    }
}
