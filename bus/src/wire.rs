//! The versioned wire format shared by both transports.
//!
//! # Layout (version 1)
//!
//! ```text
//! [WIRE_VERSION: u8] ++ postcard(FrameHeader) ++ postcard(Record) * header.count
//! ```
//!
//! * [`FrameHeader`] carries the random id of the publishing process, the
//!   frame's sequence number and the number of records that follow. On the
//!   UNIX-datagram transport the sequence number counts the frames a
//!   publisher addressed to *one* receiver (1, 2, 3, ...), so a receiver that
//!   sees a jump knows that a frame meant for it was dropped. On NATS it is a
//!   per-publisher counter kept for diagnostics only.
//! * A [`Record`] is either an event, embedded as the bytes of
//!   [`MailboxEvent::encode`] (which carry their own event-format version
//!   byte), or a [`Record::Reference`] naming a user and mailbox whose change
//!   was too large for one frame: the receiver re-reads that mailbox from
//!   storage.
//! * A frame with zero records is a *marker*: it only moves the sequence
//!   number forward and tells the receiver that frames up to `seq` were sent.
//!
//! An unknown wire version or malformed bytes give a [`WireError`]; a record
//! whose embedded event does not decode is reported per record so the other
//! records of the frame still arrive.

use serde::{Deserialize, Serialize, Serializer};
use storage_hooks::event::EventDecodeError;
use storage_hooks::MailboxEvent;

/// Version of the frame layout. Bump on any incompatible change.
pub const WIRE_VERSION: u8 = 1;

/// Upper bound of an encoded [`FrameHeader`] plus the version byte
/// (1 + three varints of at most 10 bytes each).
pub const MAX_HEADER_LEN: usize = 1 + 10 + 10 + 5;

/// The header at the start of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameHeader {
    /// Random id of the publishing process (new on every start).
    pub publisher: u64,
    /// Sequence number of this frame (see the module docs).
    pub seq: u64,
    /// Number of records following the header.
    pub count: u32,
}

/// One decoded record of a frame.
// Events are nearly every record; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A mailbox event.
    Event(MailboxEvent),
    /// A change too large for one frame: re-read `mailbox` of `user` from storage.
    Reference {
        /// Owner of the mailbox.
        user: String,
        /// The changed mailbox.
        mailbox: String,
    },
}

/// Errors decoding a frame or one of its records.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame was empty.
    #[error("empty frame")]
    Empty,
    /// The frame's version byte is not one we understand.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// The frame's header or a record's framing did not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The header announced more records than the frame holds.
    #[error("frame announces {announced} records but holds {found}")]
    Truncated {
        /// Records announced in the header.
        announced: u32,
        /// Records found.
        found: u32,
    },
    /// Bytes follow the last announced record.
    #[error("{0} trailing bytes after the last record")]
    TrailingBytes(usize),
    /// An embedded event did not decode (unknown event version or malformed).
    #[error("bad event in frame: {0}")]
    Event(#[from] EventDecodeError),
}

/// Borrowed bytes serialized with `serialize_bytes` (length + raw bytes).
#[derive(Debug, Clone, Copy)]
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// The serialized shape of a [`Record`] (encoding side).
#[derive(Debug, Serialize)]
enum RecordRepr<'a> {
    Event(RawBytes<'a>),
    Reference { user: &'a str, mailbox: &'a str },
}

/// The serialized shape of a [`Record`] (decoding side, borrowing from the
/// frame). Variants must stay in the order of [`RecordRepr`].
#[derive(Debug, Deserialize)]
enum RecordReprIn<'a> {
    Event(#[serde(borrow)] &'a [u8]),
    Reference { user: &'a str, mailbox: &'a str },
}

/// Encodes one record (without frame header), to be shared by all receivers.
pub fn encode_event_record(event: &MailboxEvent) -> Vec<u8> {
    let event_bytes = event.encode();
    encode_repr(&RecordRepr::Event(RawBytes(&event_bytes)))
}

/// Encodes a [`Record::Reference`] for `user`/`mailbox`.
pub fn encode_reference_record(user: &str, mailbox: &str) -> Vec<u8> {
    encode_repr(&RecordRepr::Reference { user, mailbox })
}

/// Encodes any [`Record`].
pub fn encode_record(record: &Record) -> Vec<u8> {
    match record {
        Record::Event(ev) => encode_event_record(ev),
        Record::Reference { user, mailbox } => encode_reference_record(user, mailbox),
    }
}

fn encode_repr(repr: &RecordRepr<'_>) -> Vec<u8> {
    // Serializing borrowed plain data into a Vec cannot fail.
    postcard::to_stdvec(repr).expect("postcard encoding of a record")
}

/// Writes `[WIRE_VERSION] ++ postcard(header)` into `buf` and returns the used prefix.
pub fn encode_header<'b>(header: &FrameHeader, buf: &'b mut [u8; MAX_HEADER_LEN]) -> &'b [u8] {
    buf[0] = WIRE_VERSION;
    // MAX_HEADER_LEN covers the largest varints, so this cannot run out of space.
    let used = postcard::to_slice(header, &mut buf[1..]).expect("frame header fits").len();
    &buf[..1 + used]
}

/// Encodes a whole frame: header followed by already encoded records.
pub fn encode_frame(header: &FrameHeader, records: &[u8]) -> Vec<u8> {
    let mut hbuf = [0u8; MAX_HEADER_LEN];
    let head = encode_header(header, &mut hbuf);
    let mut out = Vec::with_capacity(head.len() + records.len());
    out.extend_from_slice(head);
    out.extend_from_slice(records);
    out
}

/// A decoded frame: its header and each record (or the error of that record).
#[derive(Debug)]
pub struct Frame {
    /// The frame header.
    pub header: FrameHeader,
    /// The records in order; a record whose event did not decode is an `Err`.
    pub records: Vec<Result<Record, WireError>>,
}

/// Decodes a frame from untrusted bytes; never panics.
///
/// # Errors
/// [`WireError`] if the version, header or record framing is wrong. Errors of
/// embedded events are returned per record inside [`Frame::records`].
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, WireError> {
    let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let (header, mut rest) = postcard::take_from_bytes::<FrameHeader>(rest)?;
    // Each record takes at least two bytes, which bounds the allocation.
    let mut records = Vec::with_capacity((header.count as usize).min(rest.len() / 2));
    for found in 0..header.count {
        if rest.is_empty() {
            return Err(WireError::Truncated { announced: header.count, found });
        }
        let (repr, tail) = postcard::take_from_bytes::<RecordReprIn<'_>>(rest)?;
        rest = tail;
        records.push(match repr {
            RecordReprIn::Event(b) => MailboxEvent::decode(b).map(Record::Event).map_err(WireError::from),
            RecordReprIn::Reference { user, mailbox } => {
                Ok(Record::Reference { user: user.to_owned(), mailbox: mailbox.to_owned() })
            }
        });
    }
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(Frame { header, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_hooks::{EventKind, Flags, MailboxStatus, UidSet};

    fn event(user: &str) -> MailboxEvent {
        MailboxEvent {
            kind: EventKind::FlagsSet,
            user: user.into(),
            mailbox: "INBOX".into(),
            old_mailbox: None,
            uidvalidity: 7,
            uids: UidSet::from_range(1, 3),
            flags: Flags::default(),
            status: MailboxStatus { messages: 3, highestmodseq: 9, ..Default::default() },
            modseq_before: 8,
            modseq_after: 9,
            summary: None,
            timestamp_ms: 5,
        }
    }

    #[test]
    fn frame_round_trip_with_two_records() {
        let mut body = encode_event_record(&event("a.b*c> d ü"));
        body.extend(encode_reference_record("x", "Big"));
        let header = FrameHeader { publisher: u64::MAX, seq: 42, count: 2 };
        let frame = decode_frame(&encode_frame(&header, &body)).unwrap();
        assert_eq!(frame.header, header);
        assert_eq!(frame.records.len(), 2);
        assert_eq!(frame.records[0].as_ref().unwrap(), &Record::Event(event("a.b*c> d ü")));
        assert_eq!(
            frame.records[1].as_ref().unwrap(),
            &Record::Reference { user: "x".into(), mailbox: "Big".into() }
        );
        let rec = Record::Reference { user: "u".into(), mailbox: "m".into() };
        assert_eq!(encode_record(&rec), encode_reference_record("u", "m"));
    }

    /// Pins the version-1 layout: a change here breaks mixed-version
    /// deployments and must come with a WIRE_VERSION bump.
    #[test]
    fn golden_frame_bytes() {
        let mut body = encode_event_record(&event("u"));
        body.extend(encode_reference_record("u", "Big"));
        let bytes = encode_frame(&FrameHeader { publisher: 300, seq: 2, count: 2 }, &body);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_HEX);
    }

    const GOLDEN_HEX: &str = "01ac020202001c0103017505494e424f5800070101030000030000000009000809000501017503426967";

    #[test]
    fn marker_frame_has_no_records() {
        let header = FrameHeader { publisher: 1, seq: 9, count: 0 };
        let frame = decode_frame(&encode_frame(&header, &[])).unwrap();
        assert!(frame.records.is_empty());
        assert_eq!(frame.header.seq, 9);
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(decode_frame(&[]), Err(WireError::Empty)));
        assert!(matches!(decode_frame(&[9, 0, 0, 0]), Err(WireError::UnknownVersion(9))));
        let body = encode_event_record(&event("u"));
        let header = FrameHeader { publisher: 1, seq: 1, count: 3 };
        assert!(matches!(decode_frame(&encode_frame(&header, &body)), Err(WireError::Truncated { .. })));
        let header = FrameHeader { publisher: 1, seq: 1, count: 0 };
        assert!(matches!(decode_frame(&encode_frame(&header, &body)), Err(WireError::TrailingBytes(_))));
        let mut frame = encode_frame(&FrameHeader { publisher: 1, seq: 1, count: 1 }, &body);
        frame.truncate(frame.len() - 3);
        assert!(decode_frame(&frame).is_err());
        // A huge announced count does not allocate beyond the frame size.
        let header = FrameHeader { publisher: 1, seq: 1, count: u32::MAX };
        assert!(decode_frame(&encode_frame(&header, &[])).is_err());
    }

    #[test]
    fn bad_embedded_event_is_reported_per_record() {
        let mut bad = vec![99u8]; // unknown event version
        bad.extend_from_slice(&[1, 2, 3]);
        let mut body = encode_repr(&RecordRepr::Event(RawBytes(&bad)));
        body.extend(encode_event_record(&event("ok")));
        let frame = decode_frame(&encode_frame(&FrameHeader { publisher: 1, seq: 1, count: 2 }, &body)).unwrap();
        assert!(matches!(frame.records[0], Err(WireError::Event(EventDecodeError::UnknownVersion(99)))));
        assert!(frame.records[1].is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let good = encode_frame(
            &FrameHeader { publisher: 3, seq: 4, count: 1 },
            &encode_event_record(&event("someone")),
        );
        let mut state = 0x1234_5678_u32;
        for i in 0..20_000 {
            let mut bytes = good.clone();
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let pos = state as usize % bytes.len();
            bytes[pos] = (state >> 8) as u8;
            if i % 3 == 0 {
                bytes.truncate(pos);
            }
            let _ = decode_frame(&bytes);
        }
    }
}
