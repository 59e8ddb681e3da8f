//! The NOTIFY (RFC 5465) state of a session and the responses it produces
//! for events on mailboxes other than the selected one.
//!
//! It lives in this crate because both holders of a session use it: the
//! IMAP worker (which parses `NOTIFY SET` and keeps a [`NotifySpec`] in its
//! session) and the hibernate process (which receives the spec in the
//! [`crate::record::HibernationRecord`] and answers bus events with the
//! same bytes a worker would write, without waking the session).
//!
//! Events on the *selected* mailbox are not rendered here: the worker's
//! selected-mailbox sync and the hibernate process's view machinery report
//! them as `EXISTS` / `EXPUNGE` / `FETCH`, as without NOTIFY.
//!
//! What is rendered for another mailbox matched by a filter:
//!
//! | storage event | NOTIFY event needed | response |
//! |---|---|---|
//! | `MessageNew`, `MessageAppend` | `MessageNew` | `* STATUS "m" (MESSAGES n UIDNEXT u UNSEEN k)` |
//! | `MessageExpunge` | `MessageExpunge` | the same STATUS |
//! | `FlagsSet`, `FlagsClear` | `FlagChange` | the same STATUS |
//! | `MailboxCreate` | `MailboxName` | `* LIST () "/" "m"` |
//! | `MailboxDelete` | `MailboxName` | `* LIST (\NonExistent) "/" "m"` |
//! | `MailboxRename` | `MailboxName` | `* LIST () "/" "new" ("OLDNAME" ("old"))` |
//! | `MailboxSubscribe` | `SubscriptionChange` | `* LIST (\Subscribed) "/" "m"` |
//! | `MailboxUnsubscribe` | `SubscriptionChange` | `* LIST () "/" "m"` |
//!
//! The STATUS values are the mailbox's status after the change, carried by
//! the event itself (no storage read); `HIGHESTMODSEQ` is added when
//! CONDSTORE is enabled.

use serde::{Deserialize, Serialize};
use storage_hooks::{EventKind, MailboxEvent};

use crate::core::render::{self, StatusItem};

/// The NOTIFY events a filter asks for (RFC 5465 §5). `AnnotationChange`
/// is refused at `NOTIFY SET`, so it has no field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// `MessageNew`.
    pub message_new: bool,
    /// `MessageExpunge`.
    pub message_expunge: bool,
    /// `FlagChange`.
    pub flag_change: bool,
    /// `MailboxName`.
    pub mailbox_name: bool,
    /// `SubscriptionChange`.
    pub subscription_change: bool,
}

impl Events {
    /// True if any message event is asked for (STATUS responses).
    pub fn any_message_event(&self) -> bool {
        self.message_new || self.message_expunge || self.flag_change
    }
}

/// Which mailboxes a filter covers (RFC 5465 §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// `inboxes`: the mailboxes mail is delivered to; here INBOX.
    Inboxes,
    /// `personal`: every mailbox of the user.
    Personal,
    /// `subscribed`: the subscribed mailboxes (followed as they change).
    Subscribed,
    /// `subtree`: these mailboxes and everything below them.
    Subtree(Vec<String>),
    /// `mailboxes`: exactly these mailboxes.
    Mailboxes(Vec<String>),
}

/// One `(filter events)` group of `NOTIFY SET` other than the selected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxGroup {
    /// The mailboxes.
    pub filter: Filter,
    /// What to report for them (all false for `NONE`).
    pub events: Events,
}

/// The `selected` / `selected-delayed` group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedGroup {
    /// `selected-delayed`: expunges wait for a command that allows them.
    pub delayed: bool,
    /// Events asked for the selected mailbox.
    pub events: Events,
    /// The fetch attributes of `MessageNew`, as the client wrote them
    /// (without the parentheses), if any.
    pub fetch_att: Option<String>,
}

/// A session's active NOTIFY state (`NOTIFY NONE` is the absence of one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySpec {
    /// The selected-mailbox group, if given.
    pub selected: Option<SelectedGroup>,
    /// The other groups, in the client's order; the first that matches a
    /// mailbox applies to it.
    pub groups: Vec<MailboxGroup>,
    /// The user's subscribed mailboxes, kept current from subscription
    /// events; only filled when a group uses `subscribed`.
    pub subscribed: Vec<String>,
}

/// True if `name` is `root` or below it (`/` separator).
fn in_subtree(name: &str, root: &str) -> bool {
    name == root
        || (name.len() > root.len() && name.starts_with(root) && name.as_bytes()[root.len()] == b'/')
        || (root.eq_ignore_ascii_case("INBOX") && name.eq_ignore_ascii_case("INBOX"))
}

fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

impl NotifySpec {
    /// True if a group uses the `subscribed` filter (the subscription list
    /// must then be carried in [`NotifySpec::subscribed`]).
    pub fn uses_subscribed(&self) -> bool {
        self.groups.iter().any(|g| g.filter == Filter::Subscribed)
    }

    /// The events that apply to `mailbox` (not the selected one), if a group
    /// matches it.
    pub fn events_for(&self, mailbox: &str) -> Option<Events> {
        self.groups.iter().find(|g| self.matches(&g.filter, mailbox)).map(|g| g.events)
    }

    fn matches(&self, filter: &Filter, mailbox: &str) -> bool {
        match filter {
            Filter::Inboxes => mailbox.eq_ignore_ascii_case("INBOX"),
            Filter::Personal => true,
            Filter::Subscribed => self.subscribed.iter().any(|s| same_mailbox(s, mailbox)),
            Filter::Subtree(roots) => roots.iter().any(|r| in_subtree(mailbox, r)),
            Filter::Mailboxes(names) => names.iter().any(|n| same_mailbox(n, mailbox)),
        }
    }

    /// Follows `ev` (subscription list, renamed names) and appends the
    /// responses it produces for a client whose selected mailbox is
    /// `selected`. Returns true if anything was written.
    pub fn on_event(&mut self, ev: &MailboxEvent, selected: Option<&str>, condstore: bool, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        let is_selected = |name: &str| selected.is_some_and(|s| same_mailbox(s, name));
        match ev.kind {
            EventKind::MessageNew
            | EventKind::MessageAppend
            | EventKind::MessageExpunge
            | EventKind::FlagsSet
            | EventKind::FlagsClear => {
                if is_selected(&ev.mailbox) {
                    return false;
                }
                let Some(events) = self.events_for(&ev.mailbox) else { return false };
                let wanted = match ev.kind {
                    EventKind::MessageNew | EventKind::MessageAppend => events.message_new,
                    EventKind::MessageExpunge => events.message_expunge,
                    _ => events.flag_change,
                };
                if wanted {
                    status_line(out, &ev.mailbox, &ev.status, condstore);
                }
            }
            EventKind::MailboxCreate | EventKind::MailboxDelete => {
                if self.events_for(&ev.mailbox).is_some_and(|e| e.mailbox_name) {
                    let attrs = if ev.kind == EventKind::MailboxDelete { "\\NonExistent" } else { "" };
                    list_line(out, attrs, &ev.mailbox, None);
                }
                if ev.kind == EventKind::MailboxDelete {
                    self.subscribed.retain(|s| !same_mailbox(s, &ev.mailbox));
                }
            }
            EventKind::MailboxRename => {
                let old = ev.old_mailbox.as_deref().unwrap_or_default();
                let wanted = self.events_for(&ev.mailbox).is_some_and(|e| e.mailbox_name)
                    || self.events_for(old).is_some_and(|e| e.mailbox_name);
                if wanted {
                    list_line(out, "", &ev.mailbox, Some(old));
                }
                // Subscriptions follow a rename (as in storage).
                for s in self.subscribed.iter_mut() {
                    if in_subtree(s, old) {
                        *s = format!("{}{}", ev.mailbox, &s[old.len()..]);
                    }
                }
            }
            EventKind::MailboxSubscribe | EventKind::MailboxUnsubscribe => {
                let subscribe = ev.kind == EventKind::MailboxSubscribe;
                // Evaluated before the list changes, so unsubscribing a
                // mailbox matched only by `subscribed` is still reported.
                if self.events_for(&ev.mailbox).is_some_and(|e| e.subscription_change) {
                    list_line(out, if subscribe { "\\Subscribed" } else { "" }, &ev.mailbox, None);
                }
                if self.uses_subscribed() {
                    self.subscribed.retain(|s| !same_mailbox(s, &ev.mailbox));
                    if subscribe {
                        self.subscribed.push(ev.mailbox.clone());
                    }
                }
            }
        }
        out.len() > before
    }
}

/// Appends the STATUS response NOTIFY sends for a changed mailbox.
pub fn status_line(out: &mut Vec<u8>, mailbox: &str, status: &storage_hooks::MailboxStatus, condstore: bool) {
    let mut items = vec![StatusItem::Messages, StatusItem::UidNext, StatusItem::Unseen];
    if condstore {
        items.push(StatusItem::HighestModSeq);
    }
    render::status(out, &storage_hooks::mutf7::encode(mailbox), status, &items);
}

/// Appends `* LIST (attrs) "/" name` (with an `OLDNAME` item for renames).
pub fn list_line(out: &mut Vec<u8>, attrs: &str, mailbox: &str, old: Option<&str>) {
    out.extend_from_slice(b"* LIST (");
    out.extend_from_slice(attrs.as_bytes());
    out.extend_from_slice(b") \"/\" ");
    render::string(out, storage_hooks::mutf7::encode(mailbox).as_bytes());
    if let Some(old) = old {
        out.extend_from_slice(b" (\"OLDNAME\" (");
        render::string(out, storage_hooks::mutf7::encode(old).as_bytes());
        out.extend_from_slice(b"))");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_hooks::{Flags, MailboxStatus, UidSet};

    fn ev(kind: EventKind, mailbox: &str, old: Option<&str>) -> MailboxEvent {
        MailboxEvent {
            kind,
            user: "u".into(),
            mailbox: mailbox.into(),
            old_mailbox: old.map(str::to_string),
            uidvalidity: 7,
            uids: UidSet::from_range(3, 3),
            flags: Flags::default(),
            status: MailboxStatus { messages: 3, unseen: 2, uidnext: 4, uidvalidity: 7, highestmodseq: 9, ..Default::default() },
            modseq_before: 8,
            modseq_after: 9,
            summary: None,
            timestamp_ms: 0,
        }
    }

    fn all() -> Events {
        Events { message_new: true, message_expunge: true, flag_change: true, mailbox_name: true, subscription_change: true }
    }

    fn render(spec: &mut NotifySpec, e: &MailboxEvent, selected: Option<&str>) -> String {
        let mut out = Vec::new();
        spec.on_event(e, selected, false, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn other_mailboxes_get_status_and_list_lines() {
        let mut spec = NotifySpec { groups: vec![MailboxGroup { filter: Filter::Personal, events: all() }], ..Default::default() };
        assert_eq!(
            render(&mut spec, &ev(EventKind::MessageNew, "Other", None), Some("INBOX")),
            "* STATUS \"Other\" (MESSAGES 3 UIDNEXT 4 UNSEEN 2)\r\n"
        );
        // The selected mailbox is reported by the view machinery instead.
        assert_eq!(render(&mut spec, &ev(EventKind::MessageNew, "INBOX", None), Some("inbox")), "");
        assert_eq!(render(&mut spec, &ev(EventKind::MailboxCreate, "N\u{e9}", None), None), "* LIST () \"/\" \"N&AOk-\"\r\n");
        assert_eq!(
            render(&mut spec, &ev(EventKind::MailboxDelete, "Old", None), None),
            "* LIST (\\NonExistent) \"/\" \"Old\"\r\n"
        );
        assert_eq!(
            render(&mut spec, &ev(EventKind::MailboxRename, "B", Some("A")), None),
            "* LIST () \"/\" \"B\" (\"OLDNAME\" (\"A\"))\r\n"
        );
        assert_eq!(
            render(&mut spec, &ev(EventKind::MailboxSubscribe, "B", None), None),
            "* LIST (\\Subscribed) \"/\" \"B\"\r\n"
        );
        let mut out = Vec::new();
        spec.on_event(&ev(EventKind::MessageExpunge, "Other", None), None, true, &mut out);
        assert_eq!(out, b"* STATUS \"Other\" (MESSAGES 3 UIDNEXT 4 UNSEEN 2 HIGHESTMODSEQ 9)\r\n");
    }

    #[test]
    fn filters_and_events_select_what_is_sent() {
        let only_new = Events { message_new: true, message_expunge: true, ..Default::default() };
        let mut spec = NotifySpec {
            groups: vec![
                MailboxGroup { filter: Filter::Mailboxes(vec!["Quiet".into()]), events: Events::default() },
                MailboxGroup { filter: Filter::Subtree(vec!["Lists".into()]), events: only_new },
                MailboxGroup { filter: Filter::Subscribed, events: all() },
            ],
            subscribed: vec!["Sub".into()],
            ..Default::default()
        };
        // NONE for Quiet wins over later groups.
        assert_eq!(render(&mut spec, &ev(EventKind::MessageNew, "Quiet", None), None), "");
        assert!(render(&mut spec, &ev(EventKind::MessageNew, "Lists/rust", None), None).starts_with("* STATUS \"Lists/rust\""));
        assert_eq!(render(&mut spec, &ev(EventKind::MessageNew, "Listsx", None), None), "");
        assert_eq!(render(&mut spec, &ev(EventKind::FlagsSet, "Lists", None), None), "");
        assert!(render(&mut spec, &ev(EventKind::FlagsSet, "Sub", None), None).starts_with("* STATUS \"Sub\""));
        // The subscription list follows events.
        assert_eq!(render(&mut spec, &ev(EventKind::MessageNew, "Later", None), None), "");
        render(&mut spec, &ev(EventKind::MailboxSubscribe, "Later", None), None);
        assert!(render(&mut spec, &ev(EventKind::MessageNew, "Later", None), None).starts_with("* STATUS \"Later\""));
        render(&mut spec, &ev(EventKind::MailboxRename, "Moved", Some("Later")), None);
        assert_eq!(spec.subscribed, vec!["Sub".to_string(), "Moved".to_string()]);
        assert_eq!(
            render(&mut spec, &ev(EventKind::MailboxUnsubscribe, "Moved", None), None),
            "* LIST () \"/\" \"Moved\"\r\n"
        );
        assert_eq!(render(&mut spec, &ev(EventKind::MessageNew, "Moved", None), None), "");
        let inboxes = NotifySpec { groups: vec![MailboxGroup { filter: Filter::Inboxes, events: all() }], ..Default::default() };
        assert!(inboxes.events_for("INBOX").is_some() && inboxes.events_for("Other").is_none());
    }
}
