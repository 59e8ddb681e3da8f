//! FETCH / UID FETCH: all RFC 3501 items, BODY[section]<partial>, MODSEQ,
//! CHANGEDSINCE and VANISHED (RFC 7162).

use imap_types::command::FetchModifier;
use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_types::sequence::SequenceSet;
use imap_types::IntoStatic;
use storage_hooks::{FlagOp, Flags, MessageMeta, SystemFlags, UidRange, UidSet};

use crate::fetch_render::{mime_tree, section, structure};
use crate::session::response::{flag_list, literal, number_set};
use crate::session::selected::Selected;
use crate::session::Session;

/// A message's raw bytes and MIME tree, loaded on first use.
struct Loaded {
    raw: Vec<u8>,
    tree: Option<mime_tree::MimeNode>,
}

impl Loaded {
    fn tree(&mut self) -> &mime_tree::MimeNode {
        if self.tree.is_none() {
            self.tree = Some(mime_tree::parse(&self.raw));
        }
        // Set just above.
        self.tree.as_ref().expect("tree parsed above")
    }
}

/// Output size after which a FETCH yields to the driver (bounded memory
/// for `FETCH 1:* BODY[]` on big mailboxes); `next` continues the job.
const OUTPUT_CHUNK: usize = 256 * 1024;

/// A FETCH in progress across several `next` calls.
#[derive(Debug)]
pub(crate) struct FetchJob {
    tag: String,
    items: Vec<MessageDataItemName<'static>>,
    indices: std::collections::VecDeque<usize>,
    uid: bool,
    changed_since: Option<u64>,
    sets_seen: bool,
    needs_body: bool,
    missing: bool,
    /// Some message's file was gone (expunged by another session, not yet
    /// reported here): its data items were sent as NIL.
    expunged: bool,
}

/// INTERNALDATE as `"25-Nov-2026 11:45:48 +0000"`.
pub(crate) fn internal_date(ts: i64) -> String {
    match chrono::DateTime::from_timestamp(ts, 0) {
        Some(d) => d.format("%d-%b-%Y %H:%M:%S +0000").to_string(),
        None => "01-Jan-1970 00:00:00 +0000".to_string(),
    }
}

impl Session {
    /// FETCH.
    pub(crate) fn op_fetch(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        items: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) {
        let mut items: Vec<MessageDataItemName<'_>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => m.expand(),
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v.clone(),
        };
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        if vanished && (!uid || !self.enabled.qresync || changed_since.is_none()) {
            return self.bad(tag, "VANISHED needs UID FETCH, QRESYNC enabled and CHANGEDSINCE.");
        }
        if changed_since.is_some() || items.iter().any(|i| matches!(i, MessageDataItemName::ModSeq)) {
            self.enable_condstore_implicitly();
        }
        if changed_since.is_some() && !items.iter().any(|i| matches!(i, MessageDataItemName::ModSeq)) {
            items.push(MessageDataItemName::ModSeq);
        }
        if items.iter().any(|i| matches!(i, MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. })) {
            return self.bad(tag, "BINARY is not supported.");
        }
        if self.changes_pending {
            self.sync_selected(uid);
        }
        let Some(sel) = self.selected.as_mut() else { return };
        let idx = match sel.resolve(set, uid) {
            Ok(i) => i,
            Err(_) => return self.bad(tag, "Invalid message sequence number."),
        };
        if let (true, Some(since)) = (vanished, changed_since) {
            // RFC 7162 3.2.6: UIDs in the requested set expunged after `since`.
            let gone = Selected::lock_mailbox(&sel.shared, &sel.status).and_then(|g| g.mailbox.expunged_since(since));
            if let Ok(Some(gone)) = gone {
                let star = sel.status.uidnext.saturating_sub(1);
                let in_set: Vec<u32> = gone
                    .iter()
                    .filter(|&u| {
                        set.0.as_ref().iter().any(|s| {
                            let (a, b) = crate::op::select::seq_bounds(s, star);
                            (a.min(b)..=a.max(b)).contains(&u)
                        })
                    })
                    .filter(|&u| sel.seq_of(u).is_none())
                    .collect();
                if !in_set.is_empty() {
                    self.out.extend_from_slice(format!("* VANISHED (EARLIER) {}\r\n", number_set(&in_set)).as_bytes());
                }
            }
        }
        let sets_seen = !sel.read_only
            && items.iter().any(|i| match i {
                MessageDataItemName::BodyExt { peek, .. } => !peek,
                MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => true,
                _ => false,
            });
        let needs_body = items.iter().any(|i| {
            matches!(
                i,
                MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Body
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::Envelope
            )
        });
        let job = FetchJob {
            tag: tag.to_string(),
            items: items.into_iter().map(IntoStatic::into_static).collect(),
            indices: idx.into(),
            uid,
            changed_since,
            sets_seen,
            needs_body,
            missing: false,
            expunged: false,
        };
        self.fetch_job = Some(Box::new(job));
        self.continue_fetch();
    }

    /// Renders FETCH responses until the output chunk is full or the job
    /// is done (then the tagged response). Called again by `next`.
    pub(crate) fn continue_fetch(&mut self) {
        let Some(mut job) = self.fetch_job.take() else { return };
        while let Some(i) = job.indices.pop_front() {
            self.fetch_one(&mut job, i);
            if self.out.len() >= OUTPUT_CHUNK {
                if !job.indices.is_empty() {
                    self.fetch_job = Some(job);
                    return;
                }
                break;
            }
        }
        if job.tag.is_empty() {
            // An internal FETCH (NOTIFY MessageNew): no tagged response.
        } else if job.missing {
            self.no(&job.tag, "Some of the requested messages no longer exist.");
        } else if job.expunged {
            // RFC 2180 4.1.3 with the RFC 5530 code, as Dovecot answers.
            self.ok(&job.tag, "[EXPUNGEISSUED] Some messages were already expunged.");
        } else {
            self.ok(&job.tag, "Fetch completed.");
        }
    }

    /// One `* n FETCH (...)` line.
    fn fetch_one(&mut self, job: &mut FetchJob, i: usize) {
        let enabled = self.enabled;
        let (uid, changed_since, sets_seen, needs_body) = (job.uid, job.changed_since, job.sets_seen, job.needs_body);
        let items = &job.items;
        let Some(sel) = self.selected.as_mut() else { return };
        if i >= sel.view.len() {
            return;
        }
        let seq = i + 1;
        let entry = sel.view[i].clone();
        if changed_since.is_some_and(|c| entry.modseq <= c) {
            return;
        }
        let shared = sel.shared.clone();
        let Ok(mut g) = Selected::lock_mailbox(&shared, &sel.status) else {
            job.missing = true;
            return;
        };
        // Size and date come from the shared mailbox; a message gone from
        // it (expunge not reported to this client yet) still has the UID
        // and flags the client knows.
        let needs_stored = items.iter().any(|i| matches!(i, MessageDataItemName::InternalDate | MessageDataItemName::Rfc822Size));
        // A message whose file is gone (another session expunged it) is
        // answered with NIL data, like Dovecot does (RFC 2180 4.1.3).
        let (size, date, mut gone) = match g.mailbox.message(entry.uid) {
            Some(m) => (m.size, m.internal_date, false),
            None => (0, 0, needs_stored || needs_body),
        };
        let meta = MessageMeta { uid: entry.uid, flags: entry.flags(), modseq: entry.modseq, size, internal_date: date, recent: false };
        let mut loaded = None;
        if needs_body && !gone {
            match g.mailbox.read_message(meta.uid) {
                Ok(raw) => loaded = Some(Loaded { raw, tree: None }),
                Err(storage_hooks::StoreError::NoSuchMessage(_)) => gone = true,
                Err(e) => {
                    tracing::warn!(uid = meta.uid, error = %e, "reading a message for FETCH failed");
                    job.missing = true;
                    return;
                }
            }
        }
        job.expunged |= gone;
        let mut meta = meta;
        let mut flags_changed = false;
        if sets_seen && !meta.flags.system.contains(SystemFlags::SEEN) && !entry.expunged && !gone {
            let one = UidSet::from_ranges([UidRange { first: meta.uid, last: meta.uid }]);
            if let Ok(r) = g.mailbox.store_flags(&one, FlagOp::Add, &Flags::system(SystemFlags::SEEN), None) {
                sel.status = g.mailbox.status();
                for (u, f, m) in r.changed {
                    sel.set_flags(u, &f, m, &mut g.keyword_sets);
                    if u == meta.uid {
                        meta.flags = f;
                        meta.modseq = m;
                        flags_changed = true;
                    }
                }
            }
        }
        drop(g);
        let recent = sel.recent.contains(meta.uid);
        let mut o = format!("* {seq} FETCH (").into_bytes();
        let mut first = true;
        let mut sep = |o: &mut Vec<u8>| {
            if !first {
                o.push(b' ');
            }
            first = false;
        };
        let wants_uid = items.iter().any(|i| matches!(i, MessageDataItemName::Uid));
        if uid || wants_uid || enabled.qresync && changed_since.is_some() {
            sep(&mut o);
            o.extend_from_slice(format!("UID {}", meta.uid).as_bytes());
        }
        let wants_flags = items.iter().any(|i| matches!(i, MessageDataItemName::Flags));
        for item in items.iter() {
            match item {
                MessageDataItemName::Uid => {}
                MessageDataItemName::Flags => {
                    sep(&mut o);
                    o.extend_from_slice(b"FLAGS ");
                    flag_list(&mut o, &meta.flags, recent);
                }
                _ if gone && nil_when_gone(item) => {
                    sep(&mut o);
                    nil_item(&mut o, item);
                }
                MessageDataItemName::InternalDate => {
                    sep(&mut o);
                    o.extend_from_slice(format!("INTERNALDATE \"{}\"", internal_date(meta.internal_date)).as_bytes());
                }
                MessageDataItemName::Rfc822Size => {
                    sep(&mut o);
                    o.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes());
                }
                MessageDataItemName::ModSeq => {
                    sep(&mut o);
                    o.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes());
                }
                MessageDataItemName::Envelope => {
                    let Some(l) = loaded.as_mut() else { continue };
                    sep(&mut o);
                    o.extend_from_slice(b"ENVELOPE ");
                    let end = mime_tree::find_header_end(&l.raw);
                    structure::envelope(&mut o, &l.raw[..end]);
                }
                MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                    let Some(l) = loaded.as_mut() else { continue };
                    let ext = matches!(item, MessageDataItemName::BodyStructure);
                    sep(&mut o);
                    o.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                    let tree = l.tree().clone();
                    structure::body_structure(&mut o, &l.raw, &tree, ext);
                }
                MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Header | MessageDataItemName::Rfc822Text => {
                    let Some(l) = loaded.as_mut() else { continue };
                    let end = mime_tree::find_header_end(&l.raw);
                    let (name, bytes): (&[u8], &[u8]) = match item {
                        MessageDataItemName::Rfc822 => (b"RFC822 ", &l.raw),
                        MessageDataItemName::Rfc822Header => (b"RFC822.HEADER ", &l.raw[..end]),
                        _ => (b"RFC822.TEXT ", &l.raw[end..]),
                    };
                    sep(&mut o);
                    o.extend_from_slice(name);
                    literal(&mut o, bytes);
                }
                MessageDataItemName::BodyExt { section: sec, partial, .. } => {
                    let Some(l) = loaded.as_mut() else { continue };
                    let raw = l.raw.clone();
                    let tree = l.tree();
                    let data = section::extract(&raw, tree, sec.as_ref());
                    sep(&mut o);
                    o.extend_from_slice(format!("BODY[{}]", section::section_name(sec.as_ref())).as_bytes());
                    // A part that does not exist is an empty string, as in Dovecot.
                    match (Some(data.unwrap_or_default()), partial) {
                        (None, _) => {}
                        (Some(d), None) => {
                            o.push(b' ');
                            literal(&mut o, &d);
                        }
                        (Some(d), Some((start, len))) => {
                            let s = (*start as usize).min(d.len());
                            let e = s.saturating_add(len.get() as usize).min(d.len());
                            o.extend_from_slice(format!("<{start}> ").as_bytes());
                            literal(&mut o, &d[s..e]);
                        }
                    }
                }
                MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {}
            }
        }
        if flags_changed && !wants_flags {
            sep(&mut o);
            o.extend_from_slice(b"FLAGS ");
            flag_list(&mut o, &meta.flags, recent);
        }
        o.extend_from_slice(b")\r\n");
        self.out.extend_from_slice(&o);
    }
}

/// True for the items a message whose file is gone cannot answer.
fn nil_when_gone(item: &MessageDataItemName<'_>) -> bool {
    !matches!(
        item,
        MessageDataItemName::Uid
            | MessageDataItemName::Flags
            | MessageDataItemName::ModSeq
            | MessageDataItemName::Binary { .. }
            | MessageDataItemName::BinarySize { .. }
    )
}

/// `NAME NIL` for an item of a message whose file is gone.
fn nil_item(o: &mut Vec<u8>, item: &MessageDataItemName<'_>) {
    let name = match item {
        MessageDataItemName::InternalDate => "INTERNALDATE".to_string(),
        MessageDataItemName::Rfc822Size => "RFC822.SIZE".to_string(),
        MessageDataItemName::Envelope => "ENVELOPE".to_string(),
        MessageDataItemName::Body => "BODY".to_string(),
        MessageDataItemName::BodyStructure => "BODYSTRUCTURE".to_string(),
        MessageDataItemName::Rfc822 => "RFC822".to_string(),
        MessageDataItemName::Rfc822Header => "RFC822.HEADER".to_string(),
        MessageDataItemName::Rfc822Text => "RFC822.TEXT".to_string(),
        MessageDataItemName::BodyExt { section: sec, partial, .. } => match partial {
            None => format!("BODY[{}]", section::section_name(sec.as_ref())),
            Some((start, _)) => format!("BODY[{}]<{start}>", section::section_name(sec.as_ref())),
        },
        _ => return,
    };
    o.extend_from_slice(name.as_bytes());
    o.extend_from_slice(b" NIL");
}
