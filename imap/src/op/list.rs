//! LIST and LSUB with `*` / `%` wildcards, CHILDREN and SPECIAL-USE attributes.

use imap_types::mailbox::{ListMailbox, Mailbox};

use crate::session::{mutf7, response, Session};

impl Session {
    /// LIST / LSUB.
    pub(crate) fn op_list(&mut self, tag: &str, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) {
        let what = if lsub { "LSUB" } else { "LIST" };
        let pattern_bytes: &[u8] = match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        // A pattern is not a mailbox name: any atom characters may appear
        // (RFC 3501 `list-mailbox`). One that is not valid modified UTF-7
        // (`&` alone, `&'+,`) is matched against the encoded names instead,
        // so it is answered (with what matches, usually nothing), never refused.
        let reference_bytes: &[u8] = match reference {
            Mailbox::Inbox => b"INBOX",
            Mailbox::Other(o) => o.as_ref(),
        };
        let reference = mutf7::decode(reference_bytes);
        let decoded = match (reference, mutf7::decode(pattern_bytes)) {
            (Some(r), Some(p)) => Some((r, p)),
            _ => None,
        };
        let (reference, pattern, match_encoded) = match decoded {
            Some((r, p)) => (r, p, false),
            None => (
                String::from_utf8_lossy(reference_bytes).into_owned(),
                String::from_utf8_lossy(pattern_bytes).into_owned(),
                true,
            ),
        };
        if pattern.is_empty() && !lsub {
            self.out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            return self.ok(tag, "List completed.");
        }
        let full = format!("{reference}{pattern}");
        let Some(store) = self.store.clone() else { return };
        let boxes = match store.list_mailboxes() {
            Ok(b) => b,
            Err(e) => return self.no_store(tag, &e),
        };
        let matches = |name: &str| {
            if match_encoded {
                wildcard_match(&full, &mutf7::encode(name))
            } else {
                wildcard_match(&full, name)
            }
        };
        if lsub {
            for name in implied_lsub_parents(&boxes, &matches) {
                let mut line = b"* LSUB (\\Noselect) \"/\" ".to_vec();
                response::string(&mut line, mutf7::encode(&name).as_bytes());
                line.extend_from_slice(b"\r\n");
                self.out.extend_from_slice(&line);
            }
        }
        for mb in &boxes {
            if lsub && !mb.subscribed {
                continue;
            }
            if !matches(&mb.name) {
                continue;
            }
            let mut attrs = Vec::new();
            if !mb.selectable {
                // A parent that exists only through its children (Maildir++
                // keeps `.a.b` when `a` goes): as Dovecot answers.
                attrs.push("\\Noselect");
            }
            attrs.push(if mb.has_children { "\\HasChildren" } else { "\\HasNoChildren" });
            if let Some(su) = mb.special_use {
                attrs.push(su);
            }
            if lsub {
                // RFC 3501 LSUB does not carry CHILDREN/SPECIAL-USE attributes.
                attrs.clear();
            }
            let mut line = format!("* {what} ({}) \"/\" ", attrs.join(" ")).into_bytes();
            response::string(&mut line, mutf7::encode(&mb.name).as_bytes());
            line.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&line);
        }
        self.ok(tag, &format!("{} completed.", if lsub { "Lsub" } else { "List" }));
    }
}

/// RFC 3501 §6.3.9: when `foo/bar` is subscribed but `foo` is not, an LSUB
/// whose pattern matches `foo` but not `foo/bar` (`%`) returns `foo` with
/// `\Noselect`. Each such parent once, in name order.
fn implied_lsub_parents(boxes: &[storage_hooks::MailboxInfo], matches: &dyn Fn(&str) -> bool) -> Vec<String> {
    let subscribed: std::collections::BTreeSet<&str> =
        boxes.iter().filter(|b| b.subscribed).map(|b| b.name.as_str()).collect();
    let mut parents = std::collections::BTreeSet::new();
    for name in &subscribed {
        if matches(name) {
            continue;
        }
        let mut end = 0;
        while let Some(pos) = name[end..].find('/') {
            let parent = &name[..end + pos];
            if !subscribed.contains(parent) && matches(parent) {
                parents.insert(parent.to_string());
            }
            end += pos + 1;
        }
    }
    parents.into_iter().collect()
}

/// IMAP LIST matching: `*` matches anything, `%` anything but the hierarchy
/// separator `/`. INBOX matches case-insensitively. Runs in O(n*m).
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name) = if name == "INBOX" || name.starts_with("INBOX/") {
        // Compare the INBOX part case-insensitively.
        let p = if pattern.len() >= 5 && pattern.is_char_boundary(5) && pattern[..5].eq_ignore_ascii_case("INBOX") {
            format!("INBOX{}", &pattern[5..])
        } else {
            pattern.to_string()
        };
        (p, name.to_string())
    } else {
        (pattern.to_string(), name.to_string())
    };
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // dp[j] = pattern prefix of length i matches name prefix of length j
    let mut dp = vec![false; n.len() + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' => {
                let mut any = false;
                for j in 0..=n.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            '%' => {
                for j in 0..=n.len() {
                    next[j] = dp[j] || (j > 0 && next[j - 1] && n[j - 1] != '/');
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = dp[j - 1] && n[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[n.len()]
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "a/b"));
        assert!(!wildcard_match("%", "a/b"));
        assert!(wildcard_match("a/%", "a/b"));
        assert!(wildcard_match("inbox", "INBOX"));
        assert!(wildcard_match("%", "INBOX"));
        assert!(!wildcard_match("b*", "a/b"));
        assert!(wildcard_match("*a*a*a*b", "aaaaaaaaaaaaab"));
    }
}
