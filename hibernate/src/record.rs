//! The hibernation record: what travels with a client's socket between a
//! worker and a hibernate process, in both directions.
//!
//! # Wire format (version 4)
//!
//! One byte [`RECORD_VERSION`], then [`HibernationRecord`] encoded with
//! postcard. Version 3 appended [`HibernationRecord::notify`] (the NOTIFY
//! state), version 4 [`HibernationRecord::deflate`] (COMPRESS=DEFLATE);
//! version 2 and 3 records (the same fields without them) still decode,
//! so sessions parked by an older build survive a restart. Every field is typed (strings are length-prefixed, the UID view
//! is a list of ranges), so no field can smuggle a separator into another:
//! the record has no text protocol with escaping rules to get wrong (Dovecot's
//! CVE-2020-24386 came from an unescaped field in its hibernation protocol).
//! A receiver refuses other version bytes and trailing bytes, and re-normalizes
//! the UID ranges, so a malformed record is an error, never a panic.
//!
//! # What the view carries, and what it does not
//!
//! The selected mailbox is carried as the client's *view*: UIDVALIDITY, the
//! UIDs the client knows (compact ranges; their positions are the sequence
//! numbers) and `highest_modseq_seen`. Per-message flags are **not** carried.
//! Contract: every flag change whose per-message MODSEQ is at most
//! `highest_modseq_seen` has been reported to the client. A receiver that
//! needs full flag lists (a hibernate process writing `* n FETCH (FLAGS ..)`
//! after a `FlagsSet` event, whose payload only names the flags added) reads
//! them from storage for the changed messages, once per mailbox and event,
//! not per session; a worker resuming the session reports every message of
//! the view whose storage MODSEQ exceeds `highest_modseq_seen`. This keeps the
//! record (and the hibernated session) small for mailboxes of any size, and a
//! missed event cannot leave a stale flag list in the client's view.
//!
//! `\Recent` is not carried: a hibernated session does not claim or report
//! `\Recent` (RFC 9051 removed it).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use storage_hooks::UidSet;

/// Version byte of the [`HibernationRecord`] wire format.
pub const RECORD_VERSION: u8 = 4;

/// The oldest version [`HibernationRecord::decode`] still reads.
pub const OLDEST_RECORD_VERSION: u8 = 2;

/// Most bytes of unprocessed client input a record may carry. A client that
/// has sent more than this without a complete command is not hibernated (or
/// is handed back with at most this much; the rest stays in the socket).
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Most bytes of an encoded record (fits one seqpacket message).
pub const MAX_RECORD_LEN: usize = 120 * 1024;

/// How the passed descriptor carries the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientTransport {
    /// The descriptor is the client's TCP socket.
    PlainTcp,
    /// TLS 1.3: the descriptor is the client's TCP socket and
    /// [`HibernationRecord::tls`] carries the session's state; the holder
    /// runs the record layer.
    Tls {
        /// True for implicit TLS (port 993), false for STARTTLS.
        implicit: bool,
    },
    /// TLS (1.2) is terminated in the master; the descriptor is a UNIX
    /// stream socket carrying the plaintext IMAP stream.
    TlsProxied {
        /// True for implicit TLS (port 993), false for STARTTLS.
        implicit: bool,
    },
}

/// Extensions the client enabled (RFC 7162).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extensions {
    /// CONDSTORE is active: FETCH responses carry MODSEQ.
    pub condstore: bool,
    /// QRESYNC is enabled: `* VANISHED` instead of `* n EXPUNGE`.
    pub qresync: bool,
}

/// The selected mailbox as the client knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedView {
    /// Mailbox name (UTF-8, `/`-separated, as in storage).
    pub mailbox: String,
    /// Opened with EXAMINE.
    pub read_only: bool,
    /// UIDVALIDITY of the view.
    pub uidvalidity: u32,
    /// UIDs of the view in ascending order; the position is the sequence number.
    pub uids: UidSet,
    /// Every flag change with a MODSEQ up to this value has been reported.
    pub highest_modseq_seen: u64,
}

/// Everything needed to continue an authenticated IMAP session elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HibernationRecord {
    /// Session id assigned by the master (appears in logs).
    pub session_id: u64,
    /// Login name.
    pub user: String,
    /// The user's Maildir root.
    pub maildir: PathBuf,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// What the passed descriptor is.
    pub transport: ClientTransport,
    /// Login time, milliseconds since the UNIX epoch.
    pub authenticated_at_ms: u64,
    /// Enabled extensions.
    pub enabled: Extensions,
    /// Tag of the IDLE command in progress, if the session is idling.
    pub idle_tag: Option<String>,
    /// The selected mailbox, if any.
    pub selected: Option<SelectedView>,
    /// Client input read from the socket but not processed yet, in order.
    pub pending_input: Vec<u8>,
    /// The TLS session state for [`ClientTransport::Tls`] (`None`
    /// otherwise): whoever holds the record owns the session's keys and
    /// sequence numbers.
    pub tls: Option<tls_record::TlsState>,
    /// The NOTIFY state (RFC 5465), if NOTIFY SET is in effect (version 3).
    pub notify: Option<crate::notify::NotifySpec>,
    /// COMPRESS=DEFLATE is active (`None` otherwise): what the holder needs
    /// to continue both compressed streams (see [`crate::deflate`]); version 4.
    pub deflate: Option<DeflateState>,
}

/// The state of a compressed session's streams (RFC 4978). The
/// server-to-client stream needs none: it was sync-flushed, so whatever the
/// holder writes next only has to be history-free deflate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeflateState {
    /// The last `min(32 KiB, total)` bytes of decompressed client input at
    /// the client stream's last block boundary: the inflater's dictionary.
    pub window: Vec<u8>,
    /// Compressed client input received after that boundary. The receiver
    /// inflates it (after installing `window`) and drops the plaintext: it
    /// was processed already or is in `pending_input`.
    pub input_tail: Vec<u8>,
    /// Compressed bytes for the client that were not written yet; they go
    /// out before anything else.
    pub unsent: Vec<u8>,
}

/// Most bytes of [`DeflateState::input_tail`] and [`DeflateState::unsent`] each.
pub const MAX_DEFLATE_BYTES: usize = 32 * 1024;

/// Version 3 of the record: version 4 without `deflate`.
#[derive(Deserialize)]
struct RecordV3 {
    session_id: u64,
    user: String,
    maildir: PathBuf,
    peer: SocketAddr,
    local: SocketAddr,
    transport: ClientTransport,
    authenticated_at_ms: u64,
    enabled: Extensions,
    idle_tag: Option<String>,
    selected: Option<SelectedView>,
    pending_input: Vec<u8>,
    tls: Option<tls_record::TlsState>,
    notify: Option<crate::notify::NotifySpec>,
}

impl From<RecordV3> for HibernationRecord {
    fn from(r: RecordV3) -> Self {
        HibernationRecord {
            session_id: r.session_id,
            user: r.user,
            maildir: r.maildir,
            peer: r.peer,
            local: r.local,
            transport: r.transport,
            authenticated_at_ms: r.authenticated_at_ms,
            enabled: r.enabled,
            idle_tag: r.idle_tag,
            selected: r.selected,
            pending_input: r.pending_input,
            tls: r.tls,
            notify: r.notify,
            deflate: None,
        }
    }
}

/// Version 2 of the record: version 3 without `notify`.
#[derive(Deserialize)]
struct RecordV2 {
    session_id: u64,
    user: String,
    maildir: PathBuf,
    peer: SocketAddr,
    local: SocketAddr,
    transport: ClientTransport,
    authenticated_at_ms: u64,
    enabled: Extensions,
    idle_tag: Option<String>,
    selected: Option<SelectedView>,
    pending_input: Vec<u8>,
    tls: Option<tls_record::TlsState>,
}

impl From<RecordV2> for HibernationRecord {
    fn from(r: RecordV2) -> Self {
        HibernationRecord {
            session_id: r.session_id,
            user: r.user,
            maildir: r.maildir,
            peer: r.peer,
            local: r.local,
            transport: r.transport,
            authenticated_at_ms: r.authenticated_at_ms,
            enabled: r.enabled,
            idle_tag: r.idle_tag,
            selected: r.selected,
            pending_input: r.pending_input,
            tls: r.tls,
            notify: None,
            deflate: None,
        }
    }
}

/// Errors decoding a [`HibernationRecord`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No version byte.
    #[error("empty hibernation record")]
    Empty,
    /// A version this build does not speak.
    #[error("unsupported hibernation record version {found} (this build speaks {expected})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// [`RECORD_VERSION`].
        expected: u8,
    },
    /// The record is larger than [`MAX_RECORD_LEN`].
    #[error("hibernation record of {0} bytes is too large")]
    TooLarge(usize),
    /// Malformed postcard data or trailing bytes.
    #[error("malformed hibernation record: {0}")]
    Malformed(#[from] postcard::Error),
    /// A field is out of its allowed range.
    #[error("invalid hibernation record: {0}")]
    Invalid(&'static str),
}

impl HibernationRecord {
    /// Encodes as `[RECORD_VERSION] ++ postcard(self)`.
    ///
    /// # Errors
    /// [`RecordError::TooLarge`] if the result exceeds [`MAX_RECORD_LEN`]
    /// (a huge UID view or pending input); the session is then not moved.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = vec![RECORD_VERSION];
        out.extend_from_slice(&postcard::to_stdvec(self)?);
        if out.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decodes bytes made by [`HibernationRecord::encode`]; never panics.
    ///
    /// # Errors
    /// [`RecordError`] for empty input, another version, malformed data,
    /// trailing bytes, or out-of-range fields.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
        let (mut record, rest) = match version {
            RECORD_VERSION => postcard::take_from_bytes::<HibernationRecord>(body)?,
            3 => {
                let (old, rest) = postcard::take_from_bytes::<RecordV3>(body)?;
                (HibernationRecord::from(old), rest)
            }
            2 => {
                let (old, rest) = postcard::take_from_bytes::<RecordV2>(body)?;
                (HibernationRecord::from(old), rest)
            }
            found => return Err(RecordError::UnsupportedVersion { found, expected: RECORD_VERSION }),
        };
        if !rest.is_empty() {
            return Err(RecordError::Malformed(postcard::Error::DeserializeBadEncoding));
        }
        if let Some(d) = &record.deflate {
            if d.window.len() > crate::deflate::WINDOW {
                return Err(RecordError::Invalid("inflate window exceeds 32 KiB"));
            }
            if d.input_tail.len() > MAX_DEFLATE_BYTES || d.unsent.len() > MAX_DEFLATE_BYTES {
                return Err(RecordError::Invalid("compressed bytes exceed the limit"));
            }
        }
        if record.pending_input.len() > MAX_PENDING_INPUT {
            return Err(RecordError::Invalid("pending input exceeds the limit"));
        }
        if matches!(record.transport, ClientTransport::Tls { .. }) != record.tls.is_some() {
            return Err(RecordError::Invalid("TLS state does not match the transport"));
        }
        if let Some(state) = &record.tls {
            if state.check().is_err() {
                return Err(RecordError::Invalid("TLS state cannot be run"));
            }
        }
        if record.user.is_empty() {
            return Err(RecordError::Invalid("empty user name"));
        }
        if let Some(tag) = &record.idle_tag {
            if !is_valid_tag(tag) {
                return Err(RecordError::Invalid("IDLE tag is not a valid IMAP tag"));
            }
        }
        if let Some(sel) = record.selected.as_mut() {
            if sel.mailbox.is_empty() || sel.mailbox.contains(['\r', '\n', '\0']) {
                return Err(RecordError::Invalid("bad mailbox name"));
            }
            // Untrusted ranges: restore the UidSet invariants.
            sel.uids = UidSet::from_ranges(sel.uids.ranges().iter().copied());
        }
        Ok(record)
    }
}

/// True for an IMAP tag we echo back verbatim: 1..=64 ASTRING-CHARs
/// without `+` (RFC 3501 `tag`).
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_hooks::UidRange;

    fn sample() -> HibernationRecord {
        HibernationRecord {
            session_id: 42,
            user: "bob\r\n* OK injected".into(),
            maildir: "/home/bob/Maildir".into(),
            peer: "127.0.0.2:40000".parse().unwrap(),
            local: "[::1]:143".parse().unwrap(),
            transport: ClientTransport::TlsProxied { implicit: true },
            authenticated_at_ms: 1_700_000_000_000,
            enabled: Extensions { condstore: true, qresync: false },
            idle_tag: Some("A0007".into()),
            selected: Some(SelectedView {
                mailbox: "Archive/2024 \"x\"".into(),
                read_only: false,
                uidvalidity: 77,
                uids: UidSet::from_ranges([UidRange { first: 1, last: 1000 }, UidRange { first: 1003, last: 1003 }]),
                highest_modseq_seen: 5000,
            }),
            pending_input: b"DONE\r\nA2 UID FETCH 1:* (FLAGS)\r\n".to_vec(),
            tls: None,
            notify: Some(crate::notify::NotifySpec {
                groups: vec![crate::notify::MailboxGroup {
                    filter: crate::notify::Filter::Subtree(vec!["Lists".into()]),
                    events: crate::notify::Events { message_new: true, message_expunge: true, ..Default::default() },
                }],
                ..Default::default()
            }),
            deflate: None,
        }
    }

    fn tls_state() -> tls_record::TlsState {
        tls_record::TlsState {
            suite: tls_record::CipherSuite::Aes128GcmSha256,
            read: tls_record::DirectionState { secret: vec![5; 32], seq: 1 },
            write: tls_record::DirectionState { secret: vec![6; 32], seq: 40 },
            incoming: vec![23, 3, 3, 0, 30, 1, 2],
            handshake_partial: Vec::new(),
            transmit: vec![23, 3, 3, 0, 17],
        }
    }

    #[test]
    fn tls_state_travels_and_must_match_the_transport() {
        let mut r = sample();
        r.transport = ClientTransport::Tls { implicit: false };
        r.tls = Some(tls_state());
        assert_eq!(HibernationRecord::decode(&r.encode().unwrap()).unwrap(), r);
        r.tls = None;
        assert!(matches!(HibernationRecord::decode(&r.encode().unwrap()), Err(RecordError::Invalid(_))));
        r.transport = ClientTransport::PlainTcp;
        r.tls = Some(tls_state());
        assert!(matches!(HibernationRecord::decode(&r.encode().unwrap()), Err(RecordError::Invalid(_))));
        r.transport = ClientTransport::Tls { implicit: true };
        r.tls.as_mut().unwrap().write.secret.truncate(3);
        assert!(matches!(HibernationRecord::decode(&r.encode().unwrap()), Err(RecordError::Invalid(_))));
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let r = sample();
        let bytes = r.encode().unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(HibernationRecord::decode(&bytes).unwrap(), r);
        let mut plain = sample();
        plain.selected = None;
        plain.idle_tag = None;
        plain.transport = ClientTransport::PlainTcp;
        plain.pending_input.clear();
        assert_eq!(HibernationRecord::decode(&plain.encode().unwrap()).unwrap(), plain);
    }

    #[test]
    fn view_is_compact() {
        // 100,000 consecutive UIDs cost one range, a few bytes on the wire.
        let mut r = sample();
        r.selected.as_mut().unwrap().uids = UidSet::from_range(1, 100_000);
        assert!(r.encode().unwrap().len() < 200);
    }

    #[test]
    fn rejects_bad_input() {
        let bytes = sample().encode().unwrap();
        assert!(matches!(HibernationRecord::decode(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            HibernationRecord::decode(&[RECORD_VERSION + 1, 0]),
            Err(RecordError::UnsupportedVersion { found, expected: RECORD_VERSION }) if found == RECORD_VERSION + 1
        ));
        for cut in 1..bytes.len() {
            assert!(HibernationRecord::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(HibernationRecord::decode(&trailing), Err(RecordError::Malformed(_))));
        let mut bad_tag = sample();
        bad_tag.idle_tag = Some("a b".into());
        let enc = bad_tag.encode().unwrap();
        assert!(matches!(HibernationRecord::decode(&enc), Err(RecordError::Invalid(_))));
        let mut too_much = sample();
        too_much.pending_input = vec![b'x'; MAX_PENDING_INPUT + 1];
        let enc = too_much.encode().unwrap();
        assert!(matches!(HibernationRecord::decode(&enc), Err(RecordError::Invalid(_))));
    }

    #[test]
    fn untrusted_ranges_are_normalized() {
        #[derive(Serialize)]
        struct RawSet {
            ranges: Vec<(u32, u32)>,
        }
        // Splice overlapping, reversed and zero ranges into an encoded record
        // in place of a marker view.
        let raw = postcard::to_stdvec(&RawSet { ranges: vec![(5, 9), (0, 3), (8, 12), (20, 10)] }).unwrap();
        let mut marked = sample();
        marked.selected.as_mut().unwrap().uids = UidSet::from_range(4_000_000_000, 4_000_000_000);
        let marked_bytes = marked.encode().unwrap();
        let marker = postcard::to_stdvec(&UidSet::from_range(4_000_000_000, 4_000_000_000)).unwrap();
        let at = marked_bytes.windows(marker.len()).position(|w| w == marker.as_slice()).unwrap();
        let bytes = [&marked_bytes[..at], raw.as_slice(), &marked_bytes[at + marker.len()..]].concat();
        let decoded = HibernationRecord::decode(&bytes).unwrap();
        assert_eq!(decoded.selected.unwrap().uids.to_imap_string(), "5:12");
    }

    #[test]
    fn deflate_state_travels_and_is_bounded() {
        let mut r = sample();
        r.deflate = Some(DeflateState { window: vec![b'w'; 32 * 1024], input_tail: vec![1, 2, 3], unsent: vec![0, 1, 0, 0xfe, 0xff, b'x'] });
        assert_eq!(HibernationRecord::decode(&r.encode().unwrap()).unwrap(), r);
        r.deflate.as_mut().unwrap().window.push(b'w');
        assert!(matches!(HibernationRecord::decode(&r.encode().unwrap()), Err(RecordError::Invalid(_))));
        r.deflate = Some(DeflateState { window: Vec::new(), input_tail: vec![0; MAX_DEFLATE_BYTES + 1], unsent: Vec::new() });
        assert!(matches!(HibernationRecord::decode(&r.encode().unwrap()), Err(RecordError::Invalid(_))));
    }

    #[test]
    fn version_3_records_still_decode() {
        // Version 3 is version 4 without the last field (postcard writes
        // `None` as one 0 byte).
        let r = sample();
        let v4 = r.encode().unwrap();
        assert_eq!(v4.last(), Some(&0));
        let mut v3 = v4[..v4.len() - 1].to_vec();
        v3[0] = 3;
        assert_eq!(HibernationRecord::decode(&v3).unwrap(), r);
    }
}
