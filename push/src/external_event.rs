//! The external event: what webhooks, Web Push and NATS consumers receive.
//!
//! # Format (version 1)
//!
//! One JSON object per event; the JSON Schema is
//! `push/schema/external-event-v1.schema.json`. Fields never change meaning
//! within a version; new optional fields may appear (consumers must ignore
//! fields they do not know); anything else bumps [`EXTERNAL_EVENT_VERSION`].
//!
//! ```json
//! {"version":1,"id":"4f1c0a9e3b2d8c7f6e5a4b3c2d1e0f9a","event":"MessageNew",
//!  "user":"alice","mailbox":"INBOX","uidvalidity":1700000000,"uids":"7",
//!  "uid_count":1,"flags":[],"messages":7,"unseen":2,"uidnext":8,
//!  "highestmodseq":31,"timestamp_ms":1764079200000,
//!  "from":"Bob <bob@example.org>","subject":"Lunch?","snippet":"Are you free at noon"}
//! ```
//!
//! - `id`: 32 hex digits, the same for every delivery of the same event
//!   (de-duplicate on it: delivery is at-least-once).
//! - `uids`: the affected UIDs in IMAP sequence-set syntax (`1:3,7`); empty
//!   for mailbox-level events. `uid_count` is their number.
//! - `flags`: IMAP flag names: those set (`FlagsSet`, `MessageRead`,
//!   `MessageTrash`), cleared (`FlagsClear`), or the initial flags of new
//!   messages.
//! - `from`, `subject`, `snippet`: only on `MessageNew`/`MessageAppend`, and
//!   only those the [`HeaderPolicy`] allows.
//! - `truncated`: present and `true` when the event was shortened to fit
//!   the size limit ([`ExternalEvent::to_json_bounded`]): snippet, subject,
//!   from, and at last the UID list are cut, the event itself is never dropped.
//!
//! `MessageRead` and `MessageTrash` (RFC 5423) are derived: a `FlagsSet`
//! that sets `\Seen` also yields a `MessageRead`, one that sets `\Deleted`
//! also a `MessageTrash`, each with its own id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage_hooks::{EventKind, MailboxEvent, SystemFlags, UidRange, UidSet};

use crate::HeaderPolicy;

/// Version of the external JSON format.
pub const EXTERNAL_EVENT_VERSION: u32 = 1;

/// RFC 5423 event names as they appear in the `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExternalEventKind {
    /// A message was delivered.
    MessageNew,
    /// A message was added by APPEND, COPY or MOVE.
    MessageAppend,
    /// Messages were expunged.
    MessageExpunge,
    /// Flags were set on messages.
    FlagsSet,
    /// Flags were cleared on messages.
    FlagsClear,
    /// `\Seen` was set on messages (also reported as `FlagsSet`).
    MessageRead,
    /// `\Deleted` was set on messages (also reported as `FlagsSet`).
    MessageTrash,
    /// A mailbox was created.
    MailboxCreate,
    /// A mailbox was deleted.
    MailboxDelete,
    /// A mailbox was renamed.
    MailboxRename,
    /// A mailbox was subscribed.
    MailboxSubscribe,
    /// A mailbox was unsubscribed.
    MailboxUnsubscribe,
}

impl ExternalEventKind {
    /// Every kind, in the order of the schema's enum.
    pub const ALL: [ExternalEventKind; 12] = [
        ExternalEventKind::MessageNew,
        ExternalEventKind::MessageAppend,
        ExternalEventKind::MessageExpunge,
        ExternalEventKind::FlagsSet,
        ExternalEventKind::FlagsClear,
        ExternalEventKind::MessageRead,
        ExternalEventKind::MessageTrash,
        ExternalEventKind::MailboxCreate,
        ExternalEventKind::MailboxDelete,
        ExternalEventKind::MailboxRename,
        ExternalEventKind::MailboxSubscribe,
        ExternalEventKind::MailboxUnsubscribe,
    ];

    /// The RFC 5423 name, e.g. `"MessageNew"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalEventKind::MessageNew => "MessageNew",
            ExternalEventKind::MessageAppend => "MessageAppend",
            ExternalEventKind::MessageExpunge => "MessageExpunge",
            ExternalEventKind::FlagsSet => "FlagsSet",
            ExternalEventKind::FlagsClear => "FlagsClear",
            ExternalEventKind::MessageRead => "MessageRead",
            ExternalEventKind::MessageTrash => "MessageTrash",
            ExternalEventKind::MailboxCreate => "MailboxCreate",
            ExternalEventKind::MailboxDelete => "MailboxDelete",
            ExternalEventKind::MailboxRename => "MailboxRename",
            ExternalEventKind::MailboxSubscribe => "MailboxSubscribe",
            ExternalEventKind::MailboxUnsubscribe => "MailboxUnsubscribe",
        }
    }

    /// Parses an RFC 5423 name (exact spelling).
    ///
    /// # Errors
    /// The unknown name, in a message listing the valid ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == name).ok_or_else(|| {
            let valid: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event type {name:?} (valid: {})", valid.join(", "))
        })
    }

    fn from_internal(kind: EventKind) -> Self {
        match kind {
            EventKind::MessageNew => ExternalEventKind::MessageNew,
            EventKind::MessageAppend => ExternalEventKind::MessageAppend,
            EventKind::MessageExpunge => ExternalEventKind::MessageExpunge,
            EventKind::FlagsSet => ExternalEventKind::FlagsSet,
            EventKind::FlagsClear => ExternalEventKind::FlagsClear,
            EventKind::MailboxCreate => ExternalEventKind::MailboxCreate,
            EventKind::MailboxDelete => ExternalEventKind::MailboxDelete,
            EventKind::MailboxRename => ExternalEventKind::MailboxRename,
            EventKind::MailboxSubscribe => ExternalEventKind::MailboxSubscribe,
            EventKind::MailboxUnsubscribe => ExternalEventKind::MailboxUnsubscribe,
        }
    }
}

impl std::fmt::Display for ExternalEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event in the external format (see the module docs for the fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalEvent {
    /// Format version ([`EXTERNAL_EVENT_VERSION`]).
    pub version: u32,
    /// De-duplication id: 32 hex digits, stable for the same event.
    pub id: String,
    /// RFC 5423 event name.
    pub event: ExternalEventKind,
    /// Login name of the mailbox owner.
    pub user: String,
    /// Mailbox name (UTF-8, `/` separated); the new name for renames.
    pub mailbox: String,
    /// Previous name, for `MailboxRename` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_mailbox: Option<String>,
    /// UIDVALIDITY of the mailbox.
    pub uidvalidity: u32,
    /// Affected UIDs in IMAP sequence-set syntax; empty for mailbox events.
    pub uids: String,
    /// Number of affected UIDs (before any truncation of `uids`).
    pub uid_count: u64,
    /// IMAP flag names involved.
    pub flags: Vec<String>,
    /// Messages in the mailbox after the change.
    pub messages: u32,
    /// Messages without `\Seen` after the change.
    pub unseen: u32,
    /// UIDNEXT after the change.
    pub uidnext: u32,
    /// HIGHESTMODSEQ after the change.
    pub highestmodseq: u64,
    /// Time of the change, milliseconds since the UNIX epoch.
    pub timestamp_ms: u64,
    /// `From` of the (first) new message, if the policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `Subject` of the (first) new message, if the policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Start of the (first) new message's text, if the policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
    /// True when fields were shortened to fit the size limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Smallest size limit [`ExternalEvent::to_json_bounded`] accepts: an event
/// with every variable field emptied always fits (user and mailbox names
/// are bounded by the store).
pub const MIN_EVENT_BYTES: usize = 1024;

impl ExternalEvent {
    /// The external events for one internal event: one, or for a `FlagsSet`
    /// that sets `\Seen` / `\Deleted` also `MessageRead` / `MessageTrash`.
    pub fn from_mailbox_event(event: &MailboxEvent, policy: &HeaderPolicy) -> Vec<ExternalEvent> {
        let base_kind = ExternalEventKind::from_internal(event.kind);
        let mut kinds = vec![base_kind];
        if event.kind == EventKind::FlagsSet {
            if event.flags.system.contains(SystemFlags::SEEN) {
                kinds.push(ExternalEventKind::MessageRead);
            }
            if event.flags.system.contains(SystemFlags::DELETED) {
                kinds.push(ExternalEventKind::MessageTrash);
            }
        }
        let encoded = event.encode();
        let mut flags: Vec<String> = event.flags.system.imap_names().into_iter().map(str::to_owned).collect();
        flags.extend(event.flags.keywords.iter().cloned());
        let summary = match event.kind {
            EventKind::MessageNew | EventKind::MessageAppend => event.summary.as_ref(),
            _ => None,
        };
        kinds
            .into_iter()
            .map(|kind| ExternalEvent {
                version: EXTERNAL_EVENT_VERSION,
                id: event_id(kind, &encoded),
                event: kind,
                user: event.user.clone(),
                mailbox: event.mailbox.clone(),
                old_mailbox: event.old_mailbox.clone(),
                uidvalidity: event.uidvalidity,
                uids: event.uids.to_imap_string(),
                uid_count: event.uids.len(),
                flags: flags.clone(),
                messages: event.status.messages,
                unseen: event.status.unseen,
                uidnext: event.status.uidnext,
                highestmodseq: event.modseq_after,
                timestamp_ms: event.timestamp_ms,
                from: summary.filter(|_| policy.from).map(|s| s.from.clone()),
                subject: summary.filter(|_| policy.subject).map(|s| s.subject.clone()),
                snippet: summary.filter(|_| policy.snippet).map(|s| truncate_utf8(&s.snippet, policy.snippet_bytes).to_owned()),
                truncated: false,
            })
            .collect()
    }

    /// Serializes to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).expect("JSON encoding of an owned record")
    }

    /// Serializes to JSON of at most `max_bytes` (raised to
    /// [`MIN_EVENT_BYTES`]), shortening rather than dropping: first the
    /// snippet, then subject and from, then the UID list (keeping its first
    /// ranges; `uid_count` still tells the full number). Sets `truncated`
    /// when anything was cut.
    pub fn to_json_bounded(&self, max_bytes: usize) -> Vec<u8> {
        let max = max_bytes.max(MIN_EVENT_BYTES);
        let json = self.to_json();
        if json.len() <= max {
            return json;
        }
        let mut ev = self.clone();
        ev.truncated = true;
        let overflow = |ev: &ExternalEvent| ev.to_json().len().saturating_sub(max);
        for field in [FieldToCut::Snippet, FieldToCut::Subject, FieldToCut::From, FieldToCut::Uids, FieldToCut::Flags] {
            let excess = overflow(&ev);
            if excess == 0 {
                break;
            }
            field.cut(&mut ev, excess);
        }
        ev.to_json()
    }

    /// Parses JSON produced by [`ExternalEvent::to_json`].
    ///
    /// # Errors
    /// The serde error for malformed JSON or a missing field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The fields [`ExternalEvent::to_json_bounded`] may shorten, in order.
#[derive(Debug, Clone, Copy)]
enum FieldToCut {
    Snippet,
    Subject,
    From,
    Uids,
    Flags,
}

impl FieldToCut {
    /// Shortens the field by at least `excess` bytes of JSON where it can.
    fn cut(self, ev: &mut ExternalEvent, excess: usize) {
        let shorten = |s: &mut Option<String>| {
            if let Some(v) = s {
                // Keep the longest prefix whose JSON form is at least
                // `excess` bytes shorter: escaping makes a character cost
                // up to 6 bytes, so count what each one costs in JSON.
                let budget = json_string_cost(v).saturating_sub(excess);
                let mut cost = 2; // the quotes
                let mut end = 0;
                for (i, c) in v.char_indices() {
                    cost += json_char_cost(c);
                    if cost > budget {
                        break;
                    }
                    end = i + c.len_utf8();
                }
                v.truncate(end);
            }
        };
        match self {
            FieldToCut::Snippet => shorten(&mut ev.snippet),
            FieldToCut::Subject => shorten(&mut ev.subject),
            FieldToCut::From => shorten(&mut ev.from),
            FieldToCut::Uids => {
                // Keep whole leading ranges so the value stays a valid set.
                let budget = ev.uids.len().saturating_sub(excess);
                let mut kept = String::new();
                for part in ev.uids.split(',') {
                    let extra = part.len() + usize::from(!kept.is_empty());
                    if kept.len() + extra > budget {
                        break;
                    }
                    if !kept.is_empty() {
                        kept.push(',');
                    }
                    kept.push_str(part);
                }
                ev.uids = kept;
            }
            FieldToCut::Flags => {
                let mut saved = 0;
                while saved < excess {
                    match ev.flags.pop() {
                        Some(f) => saved += f.len() + 3,
                        None => break,
                    }
                }
            }
        }
    }
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_char_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes as a JSON string, quotes included.
fn json_string_cost(s: &str) -> usize {
    2 + s.chars().map(json_char_cost).sum::<usize>()
}

/// The de-duplication id: 128 bits of SHA-256 over the event kind and the
/// internal event's canonical encoding, so every delivery of one change,
/// from any process and after any restart, carries the same id.
fn event_id(kind: ExternalEventKind, encoded_internal: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"dormouse-push-v1\0");
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(encoded_internal);
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses the `uids` field back into a set (for consumers and tests).
///
/// # Errors
/// A message naming the bad part of the sequence set.
pub fn parse_uids(uids: &str) -> Result<UidSet, String> {
    if uids.is_empty() {
        return Ok(UidSet::new());
    }
    let mut ranges = Vec::new();
    for part in uids.split(',') {
        let bad = || format!("bad UID range {part:?}");
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (a.parse::<u32>().map_err(|_| bad())?, b.parse::<u32>().map_err(|_| bad())?),
            None => {
                let v = part.parse::<u32>().map_err(|_| bad())?;
                (v, v)
            }
        };
        if a == 0 || b == 0 {
            return Err(bad());
        }
        ranges.push(UidRange { first: a.min(b), last: a.max(b) });
    }
    Ok(UidSet::from_ranges(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_hooks::{Flags, MailboxStatus, MessageSummary};

    fn new_mail() -> MailboxEvent {
        MailboxEvent {
            kind: EventKind::MessageNew,
            user: "alice".into(),
            mailbox: "INBOX".into(),
            old_mailbox: None,
            uidvalidity: 1_700_000_000,
            uids: UidSet::from_range(7, 7),
            flags: Flags::default(),
            status: MailboxStatus { messages: 7, unseen: 2, uidnext: 8, highestmodseq: 31, ..Default::default() },
            modseq_before: 30,
            modseq_after: 31,
            summary: Some(MessageSummary {
                from: "Bob <bob@example.org>".into(),
                subject: "Lunch?".into(),
                snippet: "Are you free at noon".into(),
            }),
            timestamp_ms: 1_764_079_200_000,
        }
    }

    #[test]
    fn new_mail_maps_every_field() {
        let out = ExternalEvent::from_mailbox_event(&new_mail(), &HeaderPolicy::default());
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!(ev.event, ExternalEventKind::MessageNew);
        assert_eq!((ev.uids.as_str(), ev.uid_count, ev.messages, ev.unseen, ev.uidnext, ev.highestmodseq), ("7", 1, 7, 2, 8, 31));
        assert_eq!(ev.subject.as_deref(), Some("Lunch?"));
        assert_eq!(ev.id.len(), 32);
        let back = ExternalEvent::from_json(&ev.to_json()).unwrap();
        assert_eq!(&back, ev);
    }

    #[test]
    fn id_is_stable_and_distinct() {
        let a = ExternalEvent::from_mailbox_event(&new_mail(), &HeaderPolicy::default());
        let b = ExternalEvent::from_mailbox_event(&new_mail(), &HeaderPolicy::default());
        assert_eq!(a[0].id, b[0].id);
        let mut other = new_mail();
        other.modseq_after = 32;
        assert_ne!(ExternalEvent::from_mailbox_event(&other, &HeaderPolicy::default())[0].id, a[0].id);
    }

    #[test]
    fn policy_hides_headers() {
        let policy = HeaderPolicy { from: false, subject: false, snippet: false, ..HeaderPolicy::default() };
        let ev = &ExternalEvent::from_mailbox_event(&new_mail(), &policy)[0];
        let json = String::from_utf8(ev.to_json()).unwrap();
        assert!(!json.contains("Bob") && !json.contains("Lunch") && !json.contains("noon"), "{json}");
    }

    #[test]
    fn seen_and_deleted_are_also_read_and_trash() {
        let mut ev = new_mail();
        ev.kind = EventKind::FlagsSet;
        ev.flags = Flags::system(SystemFlags::SEEN.union(SystemFlags::DELETED));
        let out = ExternalEvent::from_mailbox_event(&ev, &HeaderPolicy::default());
        let kinds: Vec<_> = out.iter().map(|e| e.event).collect();
        assert_eq!(kinds, [ExternalEventKind::FlagsSet, ExternalEventKind::MessageRead, ExternalEventKind::MessageTrash]);
        assert!(out.iter().all(|e| e.subject.is_none()));
        let ids: std::collections::HashSet<_> = out.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn oversized_event_is_truncated_not_dropped() {
        let mut ev = new_mail();
        ev.kind = EventKind::MessageExpunge;
        ev.summary = None;
        ev.uids = UidSet::from_ranges((1..5000u32).map(|i| UidRange { first: i * 3, last: i * 3 }));
        let mut big = ExternalEvent::from_mailbox_event(&ev, &HeaderPolicy::default()).remove(0);
        big.snippet = Some("ü\"".repeat(3000));
        big.subject = Some("s".repeat(3000));
        let json = big.to_json_bounded(2048);
        assert!(json.len() <= 2048, "{}", json.len());
        let back = ExternalEvent::from_json(&json).unwrap();
        assert!(back.truncated);
        assert_eq!(back.uid_count, 4999);
        assert!(parse_uids(&back.uids).unwrap().contains(3));
        assert_eq!(back.id, big.id);
    }

    #[test]
    fn escaped_text_is_cut_only_as_far_as_needed() {
        let mut ev = ExternalEvent::from_mailbox_event(&new_mail(), &HeaderPolicy::default()).remove(0);
        ev.snippet = Some("Grüße aus Köln, \"quoted\" \\ ".repeat(2000));
        let json = ev.to_json_bounded(3800);
        assert!(json.len() <= 3800, "{}", json.len());
        let back = ExternalEvent::from_json(&json).unwrap();
        let kept = back.snippet.unwrap();
        assert!(kept.len() > 2500, "cut too far: {} bytes kept", kept.len());
        assert!(json.len() > 3790, "{}", json.len());
        assert_eq!(json_string_cost(&kept), serde_json::to_string(&kept).unwrap().len());
    }

    #[test]
    fn kind_names_parse() {
        for k in ExternalEventKind::ALL {
            assert_eq!(ExternalEventKind::parse(k.as_str()).unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert!(ExternalEventKind::parse("messagenew").unwrap_err().contains("MessageNew"));
    }
}
