//! LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819) answers; the syntax
//! is in `list_syntax`. Attributes follow what Dovecot 2.3 answers for the
//! same queries: `\Subscribed`, CHILDREN and special-use attributes only
//! when selected or asked for, `\NonExistent` for names without a mailbox,
//! `("CHILDINFO" ("SUBSCRIBED"))` under RECURSIVEMATCH for every listed name
//! with a subscribed descendant, and a `* STATUS` after each selectable one.

use std::collections::{BTreeMap, BTreeSet};

use super::list::wildcard_match;
use super::list_syntax::ListExtended;
use super::status::StatusError;
use crate::session::{mutf7, response, Session};

/// What we know of one name.
#[derive(Debug, Clone, Default)]
struct Entry {
    exists: bool,
    subscribed: bool,
    has_children: bool,
    special_use: Option<&'static str>,
}

/// One pattern, matched on UTF-8 names or (when not valid modified UTF-7,
/// like `&`) on the encoded names, as plain LIST does.
struct Pattern {
    full: String,
    encoded: bool,
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        if self.encoded {
            wildcard_match(&self.full, &mutf7::encode(name))
        } else {
            wildcard_match(&self.full, name)
        }
    }
}

impl Session {
    /// An extended LIST.
    pub(crate) fn op_list_extended(&mut self, cmd: &ListExtended) {
        let tag = cmd.tag.as_str();
        let Some(store) = self.store.clone() else { return };
        let (boxes, subscribed) = match store.list_mailboxes().and_then(|b| Ok((b, store.subscribed_names()?))) {
            Ok(v) => v,
            Err(e) => return self.no_store(tag, &e),
        };
        let mut entries: BTreeMap<String, Entry> = boxes
            .iter()
            .map(|b| {
                let e = Entry { exists: b.selectable, subscribed: b.subscribed, has_children: b.has_children, special_use: b.special_use };
                (b.name.clone(), e)
            })
            .collect();
        let sel = cmd.selection;
        if sel.subscribed {
            // Subscribed names without a mailbox are listed too (\NonExistent).
            for name in &subscribed {
                if !entries.contains_key(name) {
                    let prefix = format!("{name}/");
                    let has_children = boxes.iter().any(|b| b.name.starts_with(&prefix));
                    entries.insert(name.clone(), Entry { subscribed: true, has_children, ..Entry::default() });
                }
            }
        }
        let mut patterns = Vec::new();
        let mut delimiter_asked = false;
        for p in &cmd.patterns {
            if p.is_empty() {
                delimiter_asked = true;
                continue;
            }
            patterns.push(match (mutf7::decode(&cmd.reference), mutf7::decode(p)) {
                (Some(r), Some(p)) => Pattern { full: format!("{r}{p}"), encoded: false },
                _ => {
                    let full = format!("{}{}", String::from_utf8_lossy(&cmd.reference), String::from_utf8_lossy(p));
                    Pattern { full, encoded: true }
                }
            });
        }
        if delimiter_asked {
            self.out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
        }
        let matches = |name: &str| patterns.iter().any(|p| p.matches(name));
        let selected = |e: &Entry| (!sel.subscribed || e.subscribed) && (!sel.special_use || e.special_use.is_some());
        // name -> has CHILDINFO
        let mut listed: BTreeMap<String, bool> =
            entries.iter().filter(|(n, e)| selected(e) && matches(n)).map(|(n, _)| (n.clone(), false)).collect();
        if sel.recursive && sel.subscribed {
            let parents: BTreeSet<String> = entries
                .iter()
                .filter(|(_, e)| selected(e))
                .flat_map(|(n, _)| ancestors(n))
                .filter(|a| matches(a))
                .collect();
            for parent in parents {
                listed.insert(parent, true);
            }
        }
        let ret = &cmd.returns;
        let show_subscribed = sel.subscribed || ret.subscribed;
        let show_special = sel.special_use || ret.special_use;
        let mut order: Vec<(&String, &bool)> = listed.iter().collect();
        order.sort_by_key(|(n, _)| (n.as_str() != "INBOX", n.as_str()));
        for (name, childinfo) in order {
            let e = entries.get(name).cloned().unwrap_or_else(|| {
                let prefix = format!("{name}/");
                Entry { has_children: entries.keys().any(|k| k.starts_with(&prefix)), ..Entry::default() }
            });
            let mut attrs = Vec::new();
            if show_subscribed && e.subscribed {
                attrs.push("\\Subscribed");
            }
            if !e.exists {
                attrs.push("\\NonExistent");
            }
            if ret.children {
                attrs.push(if e.has_children { "\\HasChildren" } else { "\\HasNoChildren" });
            }
            if let Some(su) = e.special_use.filter(|_| show_special) {
                attrs.push(su);
            }
            let mut line = format!("* LIST ({}) \"/\" ", attrs.join(" ")).into_bytes();
            response::string(&mut line, mutf7::encode(name).as_bytes());
            if *childinfo {
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            line.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&line);
            if let Some(items) = ret.status.as_ref().filter(|_| e.exists) {
                match self.status_response(name, items) {
                    Ok(status) => self.out.extend_from_slice(&status),
                    // Gone meanwhile: RFC 5819 lets the STATUS be left out.
                    Err(StatusError::Store(err)) => tracing::debug!(mailbox = %name, error = %err, "LIST-STATUS skipped a mailbox"),
                    Err(StatusError::Unsupported) => {}
                }
            }
        }
        self.ok(tag, "List completed.");
    }
}

/// `a`, `a/b` for `a/b/c`.
fn ancestors(name: &str) -> Vec<String> {
    name.match_indices('/').map(|(i, _)| name[..i].to_string()).collect()
}
