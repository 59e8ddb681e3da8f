//! THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3, §4).

use std::collections::HashMap;
use std::sync::Arc;

use imap_types::core::Charset;
use imap_types::search::SearchKey;

use crate::op::sort_keys::SortFields;
use crate::op::sort_syntax::ThreadAlgorithm;
use crate::session::Session;

/// One message taking part in threading.
pub(crate) struct ThreadMessage {
    /// The number to report (sequence number or UID).
    pub number: u32,
    /// Its SORT/THREAD fields.
    pub fields: Arc<SortFields>,
}

/// A thread tree node: a message, or a dummy (`None`) standing for a
/// referenced message that is not among the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadNode {
    /// Index into the messages, `None` for a dummy.
    pub message: Option<usize>,
    /// Children in order.
    pub children: Vec<ThreadNode>,
}

/// ORDEREDSUBJECT: messages grouped by base subject; within a thread and
/// among threads ordered by sent date; the first message is the parent of
/// the others.
pub(crate) fn ordered_subject(msgs: &[ThreadMessage]) -> Vec<ThreadNode> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (&msgs[a].fields, &msgs[b].fields);
        fa.base_subject.cmp(&fb.base_subject).then(fa.date.cmp(&fb.date)).then(a.cmp(&b))
    });
    let mut threads: Vec<ThreadNode> = Vec::new();
    let mut last_subject: Option<&str> = None;
    for i in order {
        let subject = msgs[i].fields.base_subject.as_str();
        let leaf = ThreadNode { message: Some(i), children: Vec::new() };
        match threads.last_mut() {
            Some(t) if last_subject == Some(subject) => t.children.push(leaf),
            _ => threads.push(leaf),
        }
        last_subject = Some(subject);
    }
    threads.sort_by_key(|a| thread_key(msgs, a));
    threads
}

/// Sort key of a (sorted) node: its message's date and position; a dummy
/// takes its first child's.
fn thread_key(msgs: &[ThreadMessage], n: &ThreadNode) -> (i64, usize) {
    match n.message {
        Some(i) => (msgs[i].fields.date, i),
        None => n.children.first().map_or((i64::MAX, usize::MAX), |c| thread_key(msgs, c)),
    }
}

/// Arena container of the REFERENCES algorithm.
#[derive(Debug, Default)]
struct Container {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Arena(Vec<Container>);

impl Arena {
    fn new_container(&mut self) -> usize {
        self.0.push(Container::default());
        self.0.len() - 1
    }

    /// True if `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut cur = Some(b);
        let mut steps = 0;
        while let Some(c) = cur {
            if c == a {
                return true;
            }
            steps += 1;
            if steps > self.0.len() {
                return true;
            }
            cur = self.0[c].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.0[child].parent.take() {
            self.0[p].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.0[child].parent = Some(parent);
        self.0[parent].children.push(child);
    }
}

/// REFERENCES (RFC 5256 §3 "REFERENCES", steps 1-6).
pub(crate) fn references(msgs: &[ThreadMessage]) -> Vec<ThreadNode> {
    let mut arena = Arena(Vec::with_capacity(msgs.len() * 2));
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        // (1A) Link the references' containers in order, never changing a
        // link already made nor creating a loop.
        let mut prev: Option<usize> = None;
        let mut last_ref = None;
        for r in &m.fields.references {
            let c = *by_id.entry(r.as_str()).or_insert_with(|| arena.new_container());
            if let Some(p) = prev {
                if arena.0[c].parent.is_none() && !arena.is_ancestor(c, p) {
                    arena.link(p, c);
                }
            }
            prev = Some(c);
            last_ref = Some(c);
        }
        // (1B) The message's own container; a missing or duplicate
        // Message-ID gets a container of its own.
        let own = match m.fields.message_id.as_deref() {
            Some(id) => match by_id.get(id) {
                Some(&c) if arena.0[c].message.is_none() => c,
                Some(_) => arena.new_container(),
                None => {
                    let c = arena.new_container();
                    by_id.insert(id, c);
                    c
                }
            },
            None => arena.new_container(),
        };
        arena.0[own].message = Some(i);
        // (1C) The last reference is the parent (replacing a parent guessed
        // from another message's References), unless that makes a loop.
        if let Some(p) = last_ref {
            if !arena.is_ancestor(own, p) {
                arena.link(p, own);
            }
        }
    }
    // (2) The root set, in creation order (deterministic).
    let roots: Vec<usize> = (0..arena.0.len()).filter(|&c| arena.0[c].parent.is_none()).collect();
    cap_depth(&mut arena, &roots);
    // (3) The ID table is no longer needed; (4) prune dummies.
    let roots = prune(&mut arena, &roots, true);
    let mut roots: Vec<ThreadNode> = roots.iter().map(|&c| tree(&arena, c)).collect();
    // (5) Gather roots of the same base subject.
    gather_by_subject(msgs, &mut roots);
    // (6) Order siblings (and the roots) by sent date.
    sort_tree(msgs, &mut roots);
    roots
}

/// Deepest level of a thread tree; deeper replies become children of their
/// ancestor at this level. Bounds the recursion below (a reply chain of a
/// 30,000-message mailbox would otherwise overflow the stack).
const MAX_THREAD_DEPTH: usize = 200;

/// Flattens every subtree below `MAX_THREAD_DEPTH` into its ancestor there,
/// without recursion.
fn cap_depth(arena: &mut Arena, roots: &[usize]) {
    let mut stack: Vec<(usize, usize)> = roots.iter().map(|&r| (r, 0)).collect();
    while let Some((c, depth)) = stack.pop() {
        if depth + 1 < MAX_THREAD_DEPTH {
            stack.extend(arena.0[c].children.iter().map(|&k| (k, depth + 1)));
            continue;
        }
        let mut flat = Vec::new();
        let mut pending: Vec<usize> = arena.0[c].children.iter().rev().copied().collect();
        while let Some(k) = pending.pop() {
            flat.push(k);
            let grandchildren = std::mem::take(&mut arena.0[k].children);
            pending.extend(grandchildren.into_iter().rev());
            arena.0[k].parent = Some(c);
        }
        arena.0[c].children = flat;
    }
}

/// Step 4: dummies without children go; a dummy's children replace it,
/// except at the root where that happens only for a single child.
fn prune(arena: &mut Arena, list: &[usize], at_root: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(list.len());
    for &c in list {
        let children = arena.0[c].children.clone();
        let kept = prune(arena, &children, false);
        arena.0[c].children = kept.clone();
        if arena.0[c].message.is_some() {
            out.push(c);
        } else if kept.is_empty() {
            continue;
        } else if !at_root || kept.len() == 1 {
            out.extend(kept);
        } else {
            out.push(c);
        }
    }
    out
}

fn tree(arena: &Arena, c: usize) -> ThreadNode {
    ThreadNode { message: arena.0[c].message, children: arena.0[c].children.iter().map(|&k| tree(arena, k)).collect() }
}

/// The subject of a root: its message's, or its first child's for a dummy.
fn root_subject<'a>(msgs: &'a [ThreadMessage], n: &ThreadNode) -> &'a str {
    let m = n.message.or_else(|| n.children.first().and_then(|c| c.message));
    m.map_or("", |i| msgs[i].fields.base_subject.as_str())
}

fn is_reply(msgs: &[ThreadMessage], n: &ThreadNode) -> bool {
    n.message.is_some_and(|i| msgs[i].fields.is_reply_or_forward)
}

/// Step 5 of REFERENCES.
fn gather_by_subject(msgs: &[ThreadMessage], roots: &mut Vec<ThreadNode>) {
    // (5B/C) The table: for each subject, the preferred root.
    let mut table: HashMap<&str, usize> = HashMap::new();
    for (i, r) in roots.iter().enumerate() {
        let subject = root_subject(msgs, r);
        if subject.is_empty() {
            continue;
        }
        match table.get(subject) {
            None => {
                table.insert(subject, i);
            }
            Some(&t) => {
                let old = &roots[t];
                if old.message.is_some() && (r.message.is_none() || (is_reply(msgs, old) && !is_reply(msgs, r))) {
                    table.insert(subject, i);
                }
            }
        }
    }
    // (5D) Merge every other root of that subject into the table's.
    let mut slots: Vec<Option<ThreadNode>> = std::mem::take(roots).into_iter().map(Some).collect();
    for i in 0..slots.len() {
        let Some(r) = slots[i].as_ref() else { continue };
        let subject = root_subject(msgs, r);
        if subject.is_empty() {
            continue;
        }
        let Some(&t) = table.get(subject) else { continue };
        if t == i || slots[t].is_none() {
            continue;
        }
        let (Some(current), Some(target)) = (slots[i].take(), slots[t].take()) else { continue };
        let merged = match (target.message.is_none(), current.message.is_none()) {
            (true, true) => {
                let mut target = target;
                target.children.extend(current.children);
                target
            }
            (true, false) => {
                let mut target = target;
                target.children.push(current);
                target
            }
            _ if is_reply(msgs, &current) && !is_reply(msgs, &target) => {
                let mut target = target;
                target.children.push(current);
                target
            }
            _ => ThreadNode { message: None, children: vec![target, current] },
        };
        slots[t] = Some(merged);
    }
    *roots = slots.into_iter().flatten().collect();
}

fn sort_tree(msgs: &[ThreadMessage], nodes: &mut [ThreadNode]) {
    for n in nodes.iter_mut() {
        sort_tree(msgs, &mut n.children);
    }
    nodes.sort_by_key(|a| thread_key(msgs, a));
}

/// Writes `(a b (c)(d))...` for the threads.
pub(crate) fn write_threads(out: &mut String, msgs: &[ThreadMessage], threads: &[ThreadNode]) {
    for t in threads {
        out.push('(');
        write_branch(out, msgs, t);
        out.push(')');
    }
}

/// A node's number, then its only child's branch after a space, or each of
/// several children in parentheses.
fn write_branch(out: &mut String, msgs: &[ThreadMessage], n: &ThreadNode) {
    let mut first = true;
    if let Some(i) = n.message {
        out.push_str(&msgs[i].number.to_string());
        first = false;
    }
    match n.children.as_slice() {
        [] => {}
        [only] if n.message.is_some() => {
            out.push(' ');
            write_branch(out, msgs, only);
        }
        children => {
            if !first {
                out.push(' ');
            }
            for c in children {
                out.push('(');
                write_branch(out, msgs, c);
                out.push(')');
            }
        }
    }
}

impl Session {
    /// THREAD alg charset criteria.
    pub(crate) fn op_thread(
        &mut self,
        tag: &str,
        algorithm: ThreadAlgorithm,
        charset: Option<&Charset<'_>>,
        criteria: &[SearchKey<'_>],
        uid: bool,
    ) {
        let Some(hits) = self.matching(tag, charset, criteria, uid) else { return };
        let Some(fields) = self.sort_fields(tag, &hits) else { return };
        let msgs: Vec<ThreadMessage> = hits
            .iter()
            .zip(fields)
            .map(|(h, f)| ThreadMessage { number: if uid { h.uid } else { h.seq }, fields: f })
            .collect();
        let threads = match algorithm {
            ThreadAlgorithm::OrderedSubject => ordered_subject(&msgs),
            ThreadAlgorithm::References => references(&msgs),
        };
        let mut line = String::from("* THREAD");
        if !threads.is_empty() {
            line.push(' ');
            write_threads(&mut line, &msgs, &threads);
        }
        line.push_str("\r\n");
        self.out.extend_from_slice(line.as_bytes());
        self.ok(tag, "Thread completed.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(number: u32, date: i64, subject: &str, id: Option<&str>, refs: &[&str]) -> ThreadMessage {
        let (base_subject, is_reply_or_forward) = crate::op::sort_keys::base_subject(subject);
        ThreadMessage {
            number,
            fields: Arc::new(SortFields {
                date,
                base_subject,
                is_reply_or_forward,
                message_id: id.map(str::to_string),
                references: refs.iter().map(|s| s.to_string()).collect(),
                ..SortFields::default()
            }),
        }
    }

    fn render(msgs: &[ThreadMessage], threads: &[ThreadNode]) -> String {
        let mut s = String::new();
        write_threads(&mut s, msgs, threads);
        s
    }

    #[test]
    fn a_long_reply_chain_is_capped_not_overflowing() {
        let n = 20_000;
        let msgs: Vec<ThreadMessage> = (0..n)
            .map(|i| {
                let id = format!("m{i}");
                let parent = format!("m{}", i.max(1) - 1);
                let refs: Vec<&str> = if i == 0 { vec![] } else { vec![parent.as_str()] };
                msg(i + 1, i64::from(i), "chain", Some(&id), &refs)
            })
            .collect();
        let threads = references(&msgs);
        assert_eq!(threads.len(), 1);
        let out = render(&msgs, &threads);
        assert!(out.starts_with("(1 2 3 "), "{}", &out[..40]);
        // Every message is still there, once.
        let mut numbers: Vec<u32> =
            out.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=n).collect::<Vec<u32>>());
    }

    #[test]
    fn references_prunes_dummies_and_gathers_subjects() {
        let msgs = vec![
            msg(1, 10, "hello", Some("a"), &[]),
            msg(2, 20, "Re: hello", Some("b"), &["a"]),
            // Parent "z" is missing: the dummy root with one child goes.
            msg(3, 5, "lonely", Some("c"), &["z"]),
            // Same subject as 1 without references, a reply: joins 1.
            msg(4, 30, "Re: hello", Some("d"), &[]),
            // Two unrelated non-replies with one subject share a dummy.
            msg(5, 40, "news", Some("e"), &[]),
            msg(6, 50, "news", Some("f"), &[]),
            // A loop in the references is ignored.
            msg(7, 60, "loop", Some("g"), &["g"]),
        ];
        assert_eq!(render(&msgs, &references(&msgs)), "(3)(1 (2)(4))((5)(6))(7)");
        assert_eq!(render(&msgs, &ordered_subject(&msgs)), "(3)(1 (2)(4))(5 6)(7)");
    }
}
