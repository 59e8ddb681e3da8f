//! LIST and LSUB with `*` / `%` wildcards, CHILDREN and SPECIAL-USE attributes.

use imap_types::mailbox::{ListMailbox, Mailbox};

use crate::session::{mutf7, response, Session};

impl Session {
    /// LIST / LSUB.
    pub(crate) fn op_list(&mut self, tag: &str, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) {
        let what = if lsub { "LSUB" } else { "LIST" };
        let reference = match reference {
            Mailbox::Inbox => Some("INBOX".to_string()),
            Mailbox::Other(o) => mutf7::decode(o.as_ref()),
        };
        let pattern_bytes: &[u8] = match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        let (Some(reference), Some(pattern)) = (reference, mutf7::decode(pattern_bytes)) else {
            return self.no(tag, "[CANNOT] Mailbox name is not valid modified UTF-7.");
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
        for mb in boxes {
            if lsub && !mb.subscribed {
                continue;
            }
            if !wildcard_match(&full, &mb.name) {
                continue;
            }
            let mut attrs = vec![if mb.has_children { "\\HasChildren" } else { "\\HasNoChildren" }];
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
