//! SORT (RFC 5256) with SORT=DISPLAY keys (RFC 5957) and ESORT results
//! (RFC 5267 `RETURN (MIN MAX COUNT ALL)`).

use std::cmp::Ordering;
use std::sync::Arc;

use imap_types::core::Charset;
use imap_types::search::SearchKey;

use crate::op::esearch::ReturnOptions;
use crate::op::search::Hit;
use crate::op::sort_keys::SortFields;
use crate::op::sort_syntax::{SortCriterion, SortKey};
use crate::session::selected::Selected;
use crate::session::Session;

/// What a sort compares of one message besides its fields.
struct Row {
    hit: Hit,
    size: u64,
    internal_date: i64,
    fields: Arc<SortFields>,
}

fn compare(key: SortKey, a: &Row, b: &Row) -> Ordering {
    match key {
        SortKey::Arrival => a.internal_date.cmp(&b.internal_date),
        SortKey::Cc => a.fields.cc.cmp(&b.fields.cc),
        SortKey::Date => a.fields.date.cmp(&b.fields.date),
        SortKey::From => a.fields.from.cmp(&b.fields.from),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => a.fields.base_subject.cmp(&b.fields.base_subject),
        SortKey::To => a.fields.to.cmp(&b.fields.to),
        SortKey::DisplayFrom => a.fields.display_from.cmp(&b.fields.display_from),
        SortKey::DisplayTo => a.fields.display_to.cmp(&b.fields.display_to),
    }
}

/// Orders `rows` by the sort program; messages equal by every key keep
/// mailbox order, also under REVERSE (RFC 5256 §3, as Dovecot does).
fn sort_rows(rows: &mut [Row], criteria: &[SortCriterion]) {
    rows.sort_by(|a, b| {
        for c in criteria {
            let o = compare(c.key, a, b);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.hit.seq.cmp(&b.hit.seq)
    });
}

impl Session {
    /// The SORT/THREAD fields of `hits` (cached in the shared mailbox);
    /// `None` after answering `tag` with NO.
    pub(crate) fn sort_fields(&mut self, tag: &str, hits: &[Hit]) -> Option<Vec<Arc<SortFields>>> {
        let sel = self.selected.as_ref()?;
        let shared = sel.shared.clone();
        let mut g = match Selected::lock_mailbox(&shared, &sel.status) {
            Ok(g) => g,
            Err(e) => {
                self.no_store(tag, &e);
                return None;
            }
        };
        let g = &mut *g;
        Some(hits.iter().map(|h| g.sort_cache.get(&g.mailbox, h.uid)).collect())
    }

    /// SORT / UID SORT, with `ret` for ESORT's `RETURN (...)`.
    pub(crate) fn op_sort(
        &mut self,
        tag: &str,
        criteria: &[SortCriterion],
        ret: Option<ReturnOptions>,
        charset: Option<&Charset<'_>>,
        search: &[SearchKey<'_>],
        uid: bool,
    ) {
        let modseq = search.iter().any(crate::op::search::uses_modseq);
        let Some(hits) = self.matching(tag, charset, search, uid) else { return };
        let Some(fields) = self.sort_fields(tag, &hits) else { return };
        let Some(sel) = self.selected.as_ref() else { return };
        let (sizes, dates): (Vec<u64>, Vec<i64>) = {
            let g = crate::session::shared_mailbox::lock(&sel.shared);
            hits.iter().map(|h| g.mailbox.message(h.uid).map_or((0, 0), |m| (m.size, m.internal_date))).unzip()
        };
        let mut rows: Vec<Row> = hits
            .iter()
            .zip(fields)
            .zip(sizes.into_iter().zip(dates))
            .map(|((hit, fields), (size, internal_date))| Row { hit: *hit, size, internal_date, fields })
            .collect();
        sort_rows(&mut rows, criteria);
        let numbers: Vec<u32> = rows.iter().map(|r| if uid { r.hit.uid } else { r.hit.seq }).collect();
        let max_modseq = rows.iter().map(|r| r.hit.modseq).max().unwrap_or(0);
        let line = match ret {
            Some(r) => {
                let ends = rows.first().zip(rows.last()).map(|(a, b)| (a.hit.modseq, b.hit.modseq));
                let reported = crate::op::esearch::returned_modseq(r, ends, max_modseq);
                esort_line(tag, uid, &numbers, r, modseq.then_some(reported))
            }
            None => crate::op::esearch::numbers_line("SORT", &numbers, modseq.then_some(max_modseq)),
        };
        self.out.extend_from_slice(line.as_bytes());
        self.ok(tag, "Sort completed.");
    }
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n] [MODSEQ n]`
/// where MIN/MAX are the first/last in sort order and ALL keeps the sort
/// order (RFC 5267 §3.2; Dovecot's order of the items).
fn esort_line(tag: &str, uid: bool, sorted: &[u32], r: ReturnOptions, modseq: Option<u64>) -> String {
    let mut line = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        line.push_str(" UID");
    }
    if let (true, Some(min)) = (r.min, sorted.first()) {
        line.push_str(&format!(" MIN {min}"));
    }
    if let (true, Some(max)) = (r.max, sorted.last()) {
        line.push_str(&format!(" MAX {max}"));
    }
    if r.all && !sorted.is_empty() {
        line.push_str(&format!(" ALL {}", crate::session::response::number_set(sorted)));
    }
    if r.count {
        line.push_str(&format!(" COUNT {}", sorted.len()));
    }
    if let (Some(m), false) = (modseq, sorted.is_empty()) {
        line.push_str(&format!(" MODSEQ {m}"));
    }
    line.push_str("\r\n");
    line
}
