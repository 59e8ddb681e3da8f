//! SEARCH / UID SEARCH over flags, dates, sizes, headers and text, with
//! the CONDSTORE MODSEQ criterion.

use chrono::{NaiveDate, TimeZone};
use encoding_rs::Encoding;
use imap_types::core::Charset;
use imap_types::search::SearchKey;
use imap_types::sequence::SequenceSet;
use mail_parser::{Address, HeaderValue, Message, MessageParser, PartType};
use storage_hooks::{Mailbox, MessageMeta, SystemFlags};

use crate::fetch_render::mime_tree;
use crate::op::select::seq_bounds;
use crate::session::selected::Selected;
use crate::session::Session;

/// Lazily loaded message content for text criteria.
struct Content {
    raw: Vec<u8>,
    /// Header fields: lower-case name, decoded value (lower-cased).
    headers: Vec<(String, String)>,
    /// Decoded text of the body parts (lower-cased).
    body_text: String,
    /// The Date: header's day as written (RFC 3501 SENT*: time and zone
    /// are ignored).
    sent: Option<NaiveDate>,
}

fn load(mailbox: &Mailbox, uid: u32) -> Option<Content> {
    let raw = mailbox.read_message(uid).ok()?;
    let mut headers = Vec::new();
    let mut body_text = String::new();
    let mut sent = None;
    if let Some(msg) = MessageParser::default().parse(&raw) {
        if let Some(root) = msg.parts.first() {
            for h in &root.headers {
                let s = (h.offset_start as usize).min(raw.len());
                let e = (h.offset_end as usize).clamp(s, raw.len());
                let mut v = mime_tree::unfold(&raw[s..e]);
                v.push(' ');
                v.push_str(&decoded(&h.value));
                headers.push((h.name.as_str().to_ascii_lowercase(), v.to_lowercase()));
            }
        }
        sent = msg
            .date()
            .and_then(|d| NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day)));
        push_text_parts(&msg, &mut body_text, 0);
    }
    if body_text.is_empty() {
        let end = mime_tree::find_header_end(&raw);
        body_text = String::from_utf8_lossy(&raw[end..]).to_lowercase();
    }
    Some(Content { raw, headers, body_text, sent })
}

/// Appends the decoded (transfer encoding and charset) text of every text
/// part, descending into attached messages (to a sane depth).
fn push_text_parts(msg: &Message<'_>, out: &mut String, depth: usize) {
    for p in &msg.parts {
        match &p.body {
            PartType::Text(t) | PartType::Html(t) => {
                out.push_str(&t.to_lowercase());
                out.push('\n');
            }
            PartType::Message(inner) if depth < 8 => push_text_parts(inner, out, depth + 1),
            _ => {}
        }
    }
}

fn decoded(v: &HeaderValue<'_>) -> String {
    match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        HeaderValue::Address(a) => {
            let mut s = String::new();
            let mut push = |n: Option<&str>, a: Option<&str>| {
                for x in [n, a].into_iter().flatten() {
                    s.push_str(x);
                    s.push(' ');
                }
            };
            match a {
                Address::List(l) => l.iter().for_each(|x| push(x.name.as_deref(), x.address.as_deref())),
                Address::Group(g) => g.iter().for_each(|grp| {
                    push(grp.name.as_deref(), None);
                    grp.addresses.iter().for_each(|x| push(x.name.as_deref(), x.address.as_deref()));
                }),
            }
            s
        }
        _ => String::new(),
    }
}

/// One matching message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    /// Message sequence number.
    pub seq: u32,
    /// UID.
    pub uid: u32,
    /// MODSEQ.
    pub modseq: u64,
}

/// Evaluation context of one message.
struct Candidate {
    seq: u32,
    meta: MessageMeta,
    recent: bool,
    content: Option<Option<Content>>,
    /// Header fields, from the store's header cache or `content`.
    headers: Option<Option<storage_hooks::header_cache::Headers>>,
}

/// The day of an internal date in the server's local zone (RFC 3501
/// BEFORE/ON/SINCE ignore the time, in the server's zone as Dovecot does).
fn local_day(ts: i64) -> Option<NaiveDate> {
    chrono::Local.timestamp_opt(ts, 0).earliest().map(|d| d.date_naive())
}

fn in_set(set: &SequenceSet, n: u32, star: u32) -> bool {
    set.0.as_ref().iter().any(|s| {
        let (a, b) = seq_bounds(s, star);
        (a.min(b)..=a.max(b)).contains(&n)
    })
}

struct Evaluator<'a> {
    mailbox: &'a Mailbox,
    max_seq: u32,
    max_uid: u32,
    /// Charset of the search strings (SEARCH CHARSET), UTF-8 by default.
    charset: &'static Encoding,
    /// The session's wall-clock time (Unix seconds), for WITHIN.
    now: i64,
}

impl Evaluator<'_> {
    fn content<'c>(&self, c: &'c mut Candidate) -> Option<&'c Content> {
        if c.content.is_none() {
            c.content = Some(load(self.mailbox, c.meta.uid));
        }
        c.content.as_ref().and_then(Option::as_ref)
    }

    /// The header fields of `c`, parsed once per message and process: a
    /// later SEARCH on header fields opens no file (see
    /// `storage_hooks::header_cache`).
    fn headers(&self, c: &mut Candidate) -> Option<storage_hooks::header_cache::Headers> {
        if c.headers.is_none() {
            let cached = self.mailbox.cached_headers(c.meta.uid);
            let headers = match cached {
                Some(h) => Some(h),
                None => {
                    let parsed: Option<storage_hooks::header_cache::Headers> = self.content(c).map(|ct| ct.headers.clone().into());
                    if let Some(h) = &parsed {
                        self.mailbox.cache_headers(c.meta.uid, h.clone());
                    }
                    parsed
                }
            };
            c.headers = Some(headers);
        }
        c.headers.clone().flatten()
    }

    /// A search string decoded from the command's charset, lower-cased.
    fn needle(&self, bytes: &[u8]) -> String {
        self.charset.decode_without_bom_handling(bytes).0.to_lowercase()
    }

    fn header_contains(&self, c: &mut Candidate, name: &str, needle: &[u8]) -> bool {
        let needle = self.needle(needle);
        let name = name.to_ascii_lowercase();
        self.headers(c).is_some_and(|h| h.iter().any(|(n, v)| *n == name && (needle.is_empty() || v.contains(&needle))))
    }

    fn matches(&self, key: &SearchKey<'_>, c: &mut Candidate) -> bool {
        let f = &c.meta.flags;
        let has = |x: SystemFlags| f.system.contains(x);
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.matches(k, c)),
            SearchKey::SequenceSet(s) => in_set(s, c.seq, self.max_seq),
            SearchKey::Uid(s) => in_set(s, c.meta.uid, self.max_uid),
            SearchKey::All => true,
            SearchKey::Answered => has(SystemFlags::ANSWERED),
            SearchKey::Unanswered => !has(SystemFlags::ANSWERED),
            SearchKey::Deleted => has(SystemFlags::DELETED),
            SearchKey::Undeleted => !has(SystemFlags::DELETED),
            SearchKey::Draft => has(SystemFlags::DRAFT),
            SearchKey::Undraft => !has(SystemFlags::DRAFT),
            SearchKey::Flagged => has(SystemFlags::FLAGGED),
            SearchKey::Unflagged => !has(SystemFlags::FLAGGED),
            SearchKey::Seen => has(SystemFlags::SEEN),
            SearchKey::Unseen => !has(SystemFlags::SEEN),
            SearchKey::Recent => c.recent,
            SearchKey::Old => !c.recent,
            SearchKey::New => c.recent && !has(SystemFlags::SEEN),
            SearchKey::Keyword(k) => keyword(f, k.as_ref()),
            SearchKey::Unkeyword(k) => !keyword(f, k.as_ref()),
            SearchKey::Larger(n) => c.meta.size > u64::from(*n),
            SearchKey::Smaller(n) => c.meta.size < u64::from(*n),
            SearchKey::Before(d) => local_day(c.meta.internal_date).is_some_and(|t| t < *d.as_ref()),
            SearchKey::On(d) => local_day(c.meta.internal_date).is_some_and(|t| t == *d.as_ref()),
            SearchKey::Since(d) => local_day(c.meta.internal_date).is_some_and(|t| t >= *d.as_ref()),
            SearchKey::SentBefore(d) => self.sent(c).is_some_and(|t| t < *d.as_ref()),
            SearchKey::SentOn(d) => self.sent(c).is_some_and(|t| t == *d.as_ref()),
            SearchKey::SentSince(d) => self.sent(c).is_some_and(|t| t >= *d.as_ref()),
            SearchKey::From(s) => self.header_contains(c, "from", s.as_ref()),
            SearchKey::To(s) => self.header_contains(c, "to", s.as_ref()),
            SearchKey::Cc(s) => self.header_contains(c, "cc", s.as_ref()),
            SearchKey::Bcc(s) => self.header_contains(c, "bcc", s.as_ref()),
            SearchKey::Subject(s) => self.header_contains(c, "subject", s.as_ref()),
            SearchKey::Header(name, value) => {
                let name = String::from_utf8_lossy(name.as_ref()).into_owned();
                self.header_contains(c, &name, value.as_ref())
            }
            SearchKey::Body(s) => {
                let needle = self.needle(s.as_ref());
                self.content(c).is_some_and(|ct| ct.body_text.contains(&needle))
            }
            SearchKey::Text(s) => {
                let needle = self.needle(s.as_ref());
                self.content(c).is_some_and(|ct| {
                    ct.body_text.contains(&needle)
                        || ct.headers.iter().any(|(n, v)| n.contains(&needle) || v.contains(&needle))
                        || String::from_utf8_lossy(&ct.raw).to_lowercase().contains(&needle)
                })
            }
            SearchKey::Not(k) => !self.matches(k, c),
            SearchKey::Or(a, b) => self.matches(a, c) || self.matches(b, c),
            SearchKey::ModSequence { modseq, .. } => c.meta.modseq >= *modseq,
            // RFC 5032, as Dovecot: YOUNGER is SINCE and OLDER is BEFORE
            // with the instant `now - n` (seconds, not days).
            SearchKey::Younger(n) => c.meta.internal_date >= self.now - i64::from(n.get()),
            SearchKey::Older(n) => c.meta.internal_date <= self.now - i64::from(n.get()),
        }
    }

    fn sent(&self, c: &mut Candidate) -> Option<NaiveDate> {
        self.content(c).and_then(|ct| ct.sent)
    }
}

fn keyword(f: &storage_hooks::Flags, k: &str) -> bool {
    match SystemFlags::from_imap_name(k) {
        Some(sys) => f.system.contains(sys),
        None => f.keywords.iter().any(|x| x == k),
    }
}

pub(crate) fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(k) => k.as_ref().iter().any(uses_modseq),
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        _ => false,
    }
}

/// The answer to a charset encoding_rs does not know.
pub(crate) const BADCHARSET: &str = "[BADCHARSET (UTF-8 US-ASCII ISO-8859-1 WINDOWS-1252)] Unsupported charset.";

/// The encoding of a SEARCH/SORT/THREAD charset name: any label the WHATWG
/// Encoding Standard (encoding_rs) knows; UTF-8 when none is given (clients
/// send UTF-8 without naming it). `None` for an unknown name.
pub(crate) fn search_charset(charset: Option<&Charset<'_>>) -> Option<&'static Encoding> {
    match charset {
        None => Some(encoding_rs::UTF_8),
        Some(cs) => Encoding::for_label(cs.as_ref().as_bytes()),
    }
}

impl Session {
    /// The messages matching `criteria` in the selected mailbox, in
    /// sequence order; `None` after answering `tag` with NO (unknown
    /// charset, storage error). Shared by SEARCH, SORT and THREAD.
    pub(crate) fn matching(
        &mut self,
        tag: &str,
        charset: Option<&Charset<'_>>,
        criteria: &[SearchKey<'_>],
        uid: bool,
    ) -> Option<Vec<Hit>> {
        let Some(encoding) = search_charset(charset) else {
            self.no(tag, BADCHARSET);
            return None;
        };
        if criteria.iter().any(uses_modseq) {
            self.enable_condstore_implicitly();
        }
        if self.changes_pending {
            self.sync_selected(uid);
        }
        let sel = self.selected.as_ref()?;
        let shared = sel.shared.clone();
        let g = match Selected::lock_mailbox(&shared, &sel.status) {
            Ok(g) => g,
            Err(e) => {
                self.no_store(tag, &e);
                return None;
            }
        };
        let ev = Evaluator {
            mailbox: &g.mailbox,
            max_seq: u32::try_from(sel.view.len()).unwrap_or(u32::MAX),
            max_uid: sel.view.last().map_or(0, |e| e.uid),
            charset: encoding,
            now: self.wall_now(),
        };
        let mut hits = Vec::new();
        for (i, e) in sel.view.iter().enumerate() {
            // Size and date from the shared mailbox (0 for a message gone
            // from it whose expunge this client was not told yet).
            let (size, internal_date) = g.mailbox.message(e.uid).map_or((0, 0), |m| (m.size, m.internal_date));
            let meta = MessageMeta { uid: e.uid, flags: e.flags(), modseq: e.modseq, size, internal_date, recent: false };
            let mut c = Candidate {
                seq: u32::try_from(i + 1).unwrap_or(u32::MAX),
                meta,
                recent: sel.recent.contains(e.uid),
                content: None,
                headers: None,
            };
            if criteria.iter().all(|k| ev.matches(k, &mut c)) {
                hits.push(Hit { seq: c.seq, uid: e.uid, modseq: e.modseq });
            }
        }
        Some(hits)
    }

    /// SEARCH [CHARSET x] criteria.
    pub(crate) fn op_search(&mut self, tag: &str, charset: Option<&Charset<'_>>, criteria: &[SearchKey<'_>], uid: bool) {
        let modseq = criteria.iter().any(uses_modseq);
        // SEARCHRES: a SAVE that fails leaves `$` empty (RFC 5182 §2.1).
        let save = self.search_return.filter(|r| r.save);
        if save.is_some() {
            self.set_saved_result(Vec::new());
        }
        let Some(found) = self.matching(tag, charset, criteria, uid) else { return };
        if let Some(r) = save {
            self.save_search_result(r, &found);
        }
        let hits: Vec<u32> = found.iter().map(|h| if uid { h.uid } else { h.seq }).collect();
        // MODSEQ of the first and of the last match (for RETURN MIN / MAX).
        let end_modseqs = found.first().zip(found.last()).map(|(a, b)| (a.modseq, b.modseq));
        let max_modseq = found.iter().map(|h| h.modseq).max().unwrap_or(0);
        let line = match self.search_return.take() {
            Some(r) if r.save_only() => String::new(),
            Some(r) => {
                let reported = crate::op::esearch::returned_modseq(r, end_modseqs, max_modseq);
                esearch_line(tag, uid, &hits, r, modseq.then_some(reported))
            }
            None => crate::op::esearch::numbers_line("SEARCH", &hits, modseq.then_some(max_modseq)),
        };
        self.out.extend_from_slice(line.as_bytes());
        self.ok(tag, "Search completed.");
    }
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [COUNT n] [ALL set] [MODSEQ n]`.
pub(crate) fn esearch_line(tag: &str, uid: bool, hits: &[u32], r: crate::op::esearch::ReturnOptions, modseq: Option<u64>) -> String {
    let mut line = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        line.push_str(" UID");
    }
    if let (true, Some(min)) = (r.min, hits.first()) {
        line.push_str(&format!(" MIN {min}"));
    }
    if let (true, Some(max)) = (r.max, hits.last()) {
        line.push_str(&format!(" MAX {max}"));
    }
    if r.count {
        line.push_str(&format!(" COUNT {}", hits.len()));
    }
    if r.all && !hits.is_empty() {
        line.push_str(&format!(" ALL {}", crate::session::response::number_set(hits)));
    }
    if let (Some(m), false) = (modseq, hits.is_empty()) {
        line.push_str(&format!(" MODSEQ {m}"));
    }
    line.push_str("\r\n");
    line
}
