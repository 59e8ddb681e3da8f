//! Command syntax of NOTIFY (RFC 5465 §8):
//! `NOTIFY NONE` and `NOTIFY SET [STATUS] (filter events) ...`.
//!
//! Hand-written because imap-codec 2.0.0-alpha has no NOTIFY at all (no
//! command variant, no feature flag), and a command it does not know is
//! only a syntax error to it. So a NOTIFY command is recognized and parsed
//! here from the complete command bytes (literals inline), before the
//! bytes reach imap-codec, as SORT and LIST-EXTENDED are
//! ([`super::sort_syntax`], [`super::list_syntax`]). The fetch attributes
//! of `MessageNew` are handed to imap-codec's FETCH parser for checking.

use hibernate::notify::{Events, Filter, MailboxGroup, NotifySpec, SelectedGroup};
use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;

use super::list_syntax::Cursor;

/// A parsed NOTIFY command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notify {
    /// `NOTIFY NONE`.
    None,
    /// `NOTIFY SET`: the spec (mailbox names already in storage form) and
    /// whether `STATUS` was given.
    Set {
        /// The new NOTIFY state.
        spec: NotifySpec,
        /// `SET STATUS`: report the current status of the mailboxes now.
        status: bool,
    },
}

/// What [`parse`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotifySyntax {
    /// Not a NOTIFY command.
    NotNotify,
    /// A NOTIFY command.
    Command(String, Notify),
    /// A syntax error: tagged BAD with this text.
    Invalid(String, String),
    /// An event this server does not report: `NO [BADEVENT]` with this text.
    BadEvent(String, String),
}

/// Why an event group was refused.
enum GroupError {
    Syntax(String),
    BadEvent(String),
}

/// Parses `bytes` (one complete command) if it is a NOTIFY.
pub(crate) fn parse(bytes: &[u8]) -> NotifySyntax {
    let mut c = Cursor::new(bytes);
    let Some(tag) = c.atom().map(|t| String::from_utf8_lossy(t).into_owned()) else { return NotifySyntax::NotNotify };
    if !c.eat(b' ') || !c.atom().is_some_and(|w| w.eq_ignore_ascii_case(b"NOTIFY")) {
        return NotifySyntax::NotNotify;
    }
    let bad = |text: &str| NotifySyntax::Invalid(tag.clone(), text.to_string());
    if !c.eat(b' ') {
        return bad("NOTIFY needs NONE or SET.");
    }
    let Some(verb) = c.atom().map(<[u8]>::to_ascii_uppercase) else { return bad("NOTIFY needs NONE or SET.") };
    match verb.as_slice() {
        b"NONE" if c.at_end() => return NotifySyntax::Command(tag, Notify::None),
        b"NONE" => return bad("Unexpected characters after NOTIFY NONE."),
        b"SET" => {}
        _ => return bad("NOTIFY needs NONE or SET."),
    }
    if !c.eat(b' ') {
        return bad("NOTIFY SET needs at least one event group.");
    }
    let mut status = false;
    if c.peek() != Some(b'(') {
        if !c.atom().is_some_and(|w| w.eq_ignore_ascii_case(b"STATUS")) || !c.eat(b' ') {
            return bad("Invalid NOTIFY SET arguments (expected STATUS or an event group).");
        }
        status = true;
    }
    let mut spec = NotifySpec::default();
    loop {
        match group(&mut c, &mut spec) {
            Ok(()) => {}
            Err(GroupError::Syntax(text)) => return bad(&text),
            Err(GroupError::BadEvent(text)) => return NotifySyntax::BadEvent(tag, text),
        }
        if c.at_end() {
            break;
        }
        if !c.eat(b' ') {
            return bad("Invalid characters between NOTIFY event groups.");
        }
    }
    NotifySyntax::Command(tag, Notify::Set { spec, status })
}

/// One `(filter events)` group, added to `spec`.
fn group(c: &mut Cursor<'_>, spec: &mut NotifySpec) -> Result<(), GroupError> {
    let syntax = |t: &str| GroupError::Syntax(t.to_string());
    if !c.eat(b'(') {
        return Err(syntax("A NOTIFY event group must start with '('."));
    }
    let word = c.atom().map(|w| String::from_utf8_lossy(w).to_ascii_lowercase()).unwrap_or_default();
    let filter = match word.as_str() {
        "selected" | "selected-delayed" => None,
        "inboxes" => Some(Filter::Inboxes),
        "personal" => Some(Filter::Personal),
        "subscribed" => Some(Filter::Subscribed),
        "subtree" | "mailboxes" => {
            if !c.eat(b' ') {
                return Err(syntax("Missing mailbox names in the NOTIFY filter."));
            }
            let names = mailbox_names(c).ok_or_else(|| syntax("Invalid mailbox names in the NOTIFY filter."))?;
            Some(if word == "subtree" { Filter::Subtree(names) } else { Filter::Mailboxes(names) })
        }
        "" => return Err(syntax("Missing NOTIFY filter.")),
        other => return Err(syntax(&format!("Unknown NOTIFY filter {other}."))),
    };
    if !c.eat(b' ') {
        return Err(syntax("Missing events in the NOTIFY event group."));
    }
    let mut events = Events::default();
    let mut fetch_att = None;
    if c.eat(b'(') {
        loop {
            let name = c.atom().map(|w| String::from_utf8_lossy(w).to_ascii_lowercase()).unwrap_or_default();
            match name.as_str() {
                "messagenew" => {
                    events.message_new = true;
                    if c.peek() == Some(b' ') && c.peek_at(1) == Some(b'(') {
                        c.eat(b' ');
                        fetch_att = Some(fetch_attributes(c)?);
                    }
                }
                "messageexpunge" => events.message_expunge = true,
                "flagchange" => events.flag_change = true,
                "mailboxname" => events.mailbox_name = true,
                "subscriptionchange" => events.subscription_change = true,
                "annotationchange" | "mailboxmetadatachange" | "servermetadatachange" => {
                    return Err(GroupError::BadEvent(format!("[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Event {name} is not supported.")))
                }
                "" => return Err(syntax("Invalid NOTIFY event list.")),
                other => {
                    return Err(GroupError::BadEvent(format!(
                        "[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Unknown event {other}."
                    )))
                }
            }
            if c.eat(b')') {
                break;
            }
            if !c.eat(b' ') {
                return Err(syntax("Invalid NOTIFY event list."));
            }
        }
    } else if !c.atom().is_some_and(|w| w.eq_ignore_ascii_case(b"NONE")) {
        return Err(syntax("NOTIFY events must be a list or NONE."));
    }
    if !c.eat(b')') {
        return Err(syntax("A NOTIFY event group must end with ')'."));
    }
    // RFC 5465 §5: MessageNew and MessageExpunge go together, and
    // FlagChange needs both.
    if events.message_new != events.message_expunge || (events.flag_change && !events.message_new) {
        return Err(syntax("MessageNew and MessageExpunge must be given together, and FlagChange needs both."));
    }
    match filter {
        None => {
            if events.mailbox_name || events.subscription_change {
                return Err(syntax("Only message events can be asked for the selected mailbox."));
            }
            if spec.selected.is_some() {
                return Err(syntax("The selected mailbox is given more than once."));
            }
            spec.selected = Some(SelectedGroup { delayed: word == "selected-delayed", events, fetch_att });
        }
        Some(filter) => {
            if fetch_att.is_some() {
                return Err(syntax("Fetch attributes are only allowed for the selected mailbox."));
            }
            spec.groups.push(MailboxGroup { filter, events });
        }
    }
    Ok(())
}

/// `mailbox` or `(mailbox *(SP mailbox))`, decoded to storage names.
fn mailbox_names(c: &mut Cursor<'_>) -> Option<Vec<String>> {
    let one = |c: &mut Cursor<'_>| -> Option<String> {
        let raw = c.string()?;
        if raw.eq_ignore_ascii_case(b"INBOX") {
            return Some("INBOX".to_string());
        }
        crate::session::mutf7::decode(&raw).map(|n| n.trim_end_matches('/').to_string())
    };
    if !c.eat(b'(') {
        return Some(vec![one(c)?]);
    }
    let mut names = Vec::new();
    loop {
        names.push(one(c)?);
        if c.eat(b')') {
            return Some(names);
        }
        if !c.eat(b' ') {
            return None;
        }
    }
}

/// `(fetch-att *(SP fetch-att))` after `MessageNew`: returns the text
/// between the parentheses, checked with imap-codec's FETCH parser.
fn fetch_attributes(c: &mut Cursor<'_>) -> Result<String, GroupError> {
    let invalid = || GroupError::Syntax("Invalid fetch attributes after MessageNew.".to_string());
    let raw = c.balanced().ok_or_else(invalid)?;
    let inner = &raw[1..raw.len() - 1];
    let probe = [&b"X FETCH 1 ("[..], inner, b")\r\n"].concat();
    match CommandCodec::default().decode(&probe) {
        Ok((b"", _)) => String::from_utf8(inner.to_vec()).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(line: &str) -> (NotifySpec, bool) {
        match parse(line.as_bytes()) {
            NotifySyntax::Command(_, Notify::Set { spec, status }) => (spec, status),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_filter_and_event() {
        let (spec, status) = set(
            "a NOTIFY SET STATUS (selected (MessageNew (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM)]) MessageExpunge FlagChange)) \
             (subtree (Lists \"Caf&AOk-\") (MessageNew MessageExpunge)) (mailboxes INBOX NONE) (personal (MailboxName SubscriptionChange)) \
             (inboxes (MessageNew MessageExpunge)) (subscribed (MailboxName))\r\n",
        );
        assert!(status);
        let sel = spec.selected.unwrap();
        assert!(!sel.delayed && sel.events.flag_change);
        assert_eq!(sel.fetch_att.as_deref(), Some("UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM)]"));
        assert_eq!(spec.groups.len(), 5);
        assert_eq!(spec.groups[0].filter, Filter::Subtree(vec!["Lists".into(), "Caf\u{e9}".into()]));
        assert_eq!(spec.groups[1], MailboxGroup { filter: Filter::Mailboxes(vec!["INBOX".into()]), events: Events::default() });
        assert!(spec.groups[2].events.mailbox_name && spec.groups[2].events.subscription_change);
        assert_eq!(spec.groups[3].filter, Filter::Inboxes);
        assert_eq!(spec.groups[4].filter, Filter::Subscribed);
        let (spec, status) = set("b notify set (SELECTED-DELAYED (MessageNew MessageExpunge))\r\n");
        assert!(!status && spec.selected.unwrap().delayed);
        assert_eq!(parse(b"c NOTIFY NONE\r\n"), NotifySyntax::Command("c".into(), Notify::None));
        assert_eq!(parse(b"c NOOP\r\n"), NotifySyntax::NotNotify);
        let (spec, _) = set("d NOTIFY SET (mailboxes {5}\r\nOther (MessageNew MessageExpunge))\r\n");
        assert_eq!(spec.groups[0].filter, Filter::Mailboxes(vec!["Other".into()]));
    }

    #[test]
    fn refuses_bad_syntax_and_unsupported_events() {
        for line in [
            "a NOTIFY\r\n",
            "a NOTIFY SET\r\n",
            "a NOTIFY SET STATUS\r\n",
            "a NOTIFY NONE x\r\n",
            "a NOTIFY SET (personal)\r\n",
            "a NOTIFY SET (personal (MessageNew))\r\n",
            "a NOTIFY SET (personal (FlagChange))\r\n",
            "a NOTIFY SET (nowhere (MessageNew MessageExpunge))\r\n",
            "a NOTIFY SET (selected (MailboxName))\r\n",
            "a NOTIFY SET (selected NONE) (selected NONE)\r\n",
            "a NOTIFY SET (selected (MessageNew (NOSUCHATT) MessageExpunge))\r\n",
            "a NOTIFY SET (personal (MessageNew (UID) MessageExpunge))\r\n",
            "a NOTIFY SET (subtree (MessageNew MessageExpunge))\r\n",
            "a NOTIFY SET (personal (MailboxName)) junk\r\n",
        ] {
            assert!(matches!(parse(line.as_bytes()), NotifySyntax::Invalid(..)), "{line}");
        }
        for line in ["a NOTIFY SET (personal (AnnotationChange))\r\n", "a NOTIFY SET (personal (Whatever))\r\n"] {
            assert!(matches!(parse(line.as_bytes()), NotifySyntax::BadEvent(..)), "{line}");
        }
    }
}
