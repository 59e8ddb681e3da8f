//! `dormouse-index.log`, the append-only change log after the
//! `dormouse-index` snapshot: a write that allocated a MODSEQ appends one
//! record with what it changed (messages added or changed, messages gone,
//! expunge-log entries, the new HIGHESTMODSEQ) instead of rewriting the
//! whole index, so a flag change or an append costs O(change). Loads replay
//! the log onto the snapshot; now and then (when the log outgrows a share
//! of the snapshot, or a change allocated no MODSEQ) the index is compacted:
//! the snapshot is rewritten and the log removed.
//!
//! Format: `DMIL`, a version byte ([`LOG_VERSION`]), then records, each
//! `<payload length u32 LE> <CRC-32 of the payload u32 LE> <payload>`, the
//! payload the postcard encoding of [`LogRecord`]. A record that is cut
//! short or fails its checksum ends the log: a writer killed mid-append was
//! never acknowledged, and the next write compacts (dropping the torn tail).
//! Replay applies a record only if its HIGHESTMODSEQ is above the state's
//! and its UIDVALIDITY matches, so a log left behind by a compaction that
//! died before removing it changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::index_file::{IndexMessage, IndexRecord};
use crate::UidSet;

/// File name inside the mailbox directory.
pub const INDEX_LOG_FILE: &str = "dormouse-index.log";
/// Format version.
pub const LOG_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"DMIL";
/// Length of the file header (magic and version).
pub const HEADER_LEN: usize = 5;

/// One write's changes to the index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// UIDVALIDITY the change belongs to.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ after the change.
    pub highestmodseq: u64,
    /// Messages added or changed, whole entries, sorted by UID.
    pub upserts: Vec<IndexMessage>,
    /// UIDs no longer in the index.
    pub removed: Vec<u32>,
    /// Expunge-log entries recorded by the change, in order.
    pub expunges: Vec<(u64, UidSet)>,
}

/// The file header.
pub fn header() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(LOG_VERSION);
    out
}

/// One framed record (length, checksum, payload).
pub fn encode_record(record: &LogRecord) -> Vec<u8> {
    // Plain data always serializes.
    let payload = postcard::to_stdvec(record).expect("postcard encoding of plain data");
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend(payload);
    out
}

/// What a log file holds.
#[derive(Debug, Default)]
pub struct ParsedLog {
    /// Every complete, intact record before the first damaged one.
    pub records: Vec<LogRecord>,
    /// True if the whole file was header plus intact records (appending to
    /// it is safe); false for a torn tail, a damaged record or a foreign
    /// header (the next write compacts).
    pub intact: bool,
}

/// Parses a log file.
pub fn parse(bytes: &[u8]) -> ParsedLog {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()).and_then(|r| r.strip_prefix(&[LOG_VERSION])) else {
        return ParsedLog { records: Vec::new(), intact: false };
    };
    parse_records(rest)
}

/// Parses framed records without the file header: the whole log after it,
/// or what was appended to a log since it was last read (`load_catch_up`).
pub fn parse_records(mut rest: &[u8]) -> ParsedLog {
    let mut records = Vec::new();
    while !rest.is_empty() {
        let Some((len, crc, payload)) = frame(rest) else {
            tracing::warn!(left = rest.len(), "dormouse-index.log ends in a torn or damaged record; dropped");
            return ParsedLog { records, intact: false };
        };
        let Some(record) = (crc32(payload) == crc).then(|| postcard::from_bytes(payload).ok()).flatten() else {
            tracing::warn!(left = rest.len(), "dormouse-index.log record fails its checksum; it and the rest dropped");
            return ParsedLog { records, intact: false };
        };
        records.push(record);
        rest = &rest[8 + len..];
    }
    ParsedLog { records, intact: true }
}

fn frame(bytes: &[u8]) -> Option<(usize, u32, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    Some((len, crc, bytes.get(8..8usize.checked_add(len)?)?))
}

/// Applies `records` to `index` (see the module docs for which apply).
pub fn replay(index: &mut IndexRecord, records: Vec<LogRecord>) {
    let mut applicable = records
        .into_iter()
        .filter(|r| r.uidvalidity == index.uidvalidity)
        .scan(index.highestmodseq, |high, r| {
            // Keep walking past old ones, apply only newer ones.
            let newer = r.highestmodseq > *high;
            if newer {
                *high = r.highestmodseq;
            }
            Some(newer.then_some(r))
        })
        .flatten()
        .peekable();
    if applicable.peek().is_none() {
        return;
    }
    let mut by_uid: BTreeMap<u32, IndexMessage> = std::mem::take(&mut index.messages).into_iter().map(|m| (m.uid, m)).collect();
    for r in applicable {
        for uid in &r.removed {
            by_uid.remove(uid);
        }
        for m in r.upserts {
            by_uid.insert(m.uid, m);
        }
        for (modseq, uids) in &r.expunges {
            index.expunge_log.record(*modseq, uids);
        }
        index.highestmodseq = r.highestmodseq;
    }
    index.messages = by_uid.into_values().collect();
}

/// Reads the index snapshot and its log from `dir` and replays the log.
/// Returns the index (`None` if the snapshot is missing or unreadable) and
/// the log's state: `Some(length)` of an intact log (0 if there is none),
/// `None` if it is damaged and the next write must compact.
///
/// # Errors
/// I/O errors other than missing files.
pub fn load(dir: &std::path::Path) -> Result<(Option<IndexRecord>, Option<u64>), crate::StoreError> {
    let Some(mut index) = crate::durable::read_optional(&dir.join(crate::index_file::INDEX_FILE))?.and_then(|b| IndexRecord::decode(&b))
    else {
        return Ok((None, None));
    };
    let Some(bytes) = crate::durable::read_optional(&dir.join(INDEX_LOG_FILE))? else {
        return Ok((Some(index), Some(0)));
    };
    let parsed = parse(&bytes);
    replay(&mut index, parsed.records);
    Ok((Some(index), parsed.intact.then_some(bytes.len() as u64)))
}

/// CRC-32 (IEEE 802.3, as zlib), bitwise: records are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Flags;

    fn msg(uid: u32, modseq: u64) -> IndexMessage {
        IndexMessage { uid, modseq, flags: Flags::default(), extra_keywords: Vec::new(), vsize: 10 }
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn replays_newer_records_and_stops_at_a_torn_one_at_every_byte() {
        let base = IndexRecord { uidvalidity: 5, highestmodseq: 3, messages: vec![msg(1, 1), msg(2, 3)], ..Default::default() };
        let old = LogRecord { uidvalidity: 5, highestmodseq: 3, upserts: vec![msg(9, 3)], ..Default::default() };
        let r1 = LogRecord { uidvalidity: 5, highestmodseq: 4, upserts: vec![msg(2, 4), msg(3, 4)], ..Default::default() };
        let r2 = LogRecord {
            uidvalidity: 5,
            highestmodseq: 5,
            removed: vec![1],
            expunges: vec![(5, UidSet::from_range(1, 1))],
            ..Default::default()
        };
        let mut file = header();
        for r in [&old, &r1] {
            file.extend(encode_record(r));
        }
        let before_last = file.len();
        file.extend(encode_record(&r2));
        let parsed = parse(&file);
        assert!(parsed.intact);
        let mut full = base.clone();
        replay(&mut full, parsed.records);
        assert_eq!(full.highestmodseq, 5);
        assert_eq!(full.messages, [msg(2, 4), msg(3, 4)], "old record skipped, r1 and r2 applied");
        assert_eq!(full.expunge_log.since(4).unwrap().to_imap_string(), "1");
        // Cut anywhere inside the last record: the state after r1, flagged
        // for compaction.
        for cut in before_last..file.len() {
            let parsed = parse(&file[..cut]);
            assert_eq!(parsed.intact, cut == before_last, "cut at {cut}");
            let mut state = base.clone();
            replay(&mut state, parsed.records);
            assert_eq!((state.highestmodseq, state.messages.len()), (4, 3), "cut at {cut}");
        }
        // A flipped byte fails the checksum.
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let parsed = parse(&bad);
        assert!(!parsed.intact);
        assert_eq!(parsed.records.len(), 2);
        assert!(!parse(b"DMIX\x01").intact);
        // Another UIDVALIDITY's records are ignored.
        let mut other = IndexRecord { uidvalidity: 6, ..base.clone() };
        replay(&mut other, vec![r1]);
        assert_eq!(other.highestmodseq, 3);
    }
}
