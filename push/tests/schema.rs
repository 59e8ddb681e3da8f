//! `push/schema/external-event-v1.schema.json` describes what
//! `ExternalEvent` produces: every kind, truncated events, renames, hidden
//! headers; and it rejects malformed documents.

use push::{ExternalEvent, ExternalEventKind, HeaderPolicy};
use serde_json::{json, Value};
use storage_hooks::{EventKind, Flags, MailboxEvent, MailboxStatus, MessageSummary, SystemFlags, UidRange, UidSet};

const SCHEMA: &str = include_str!("../schema/external-event-v1.schema.json");
const README: &str = include_str!("../README.md");

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    jsonschema::meta::validate(&schema).expect("the schema is a valid draft 2020-12 schema");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{doc}\n{errors:#?}");
}

fn internal(kind: EventKind) -> MailboxEvent {
    let mailbox_level = matches!(
        kind,
        EventKind::MailboxCreate
            | EventKind::MailboxDelete
            | EventKind::MailboxRename
            | EventKind::MailboxSubscribe
            | EventKind::MailboxUnsubscribe
    );
    MailboxEvent {
        kind,
        user: "ünï.user@example.org".into(),
        mailbox: if kind == EventKind::MailboxRename { "Archive/2026".into() } else { "INBOX".into() },
        old_mailbox: (kind == EventKind::MailboxRename).then(|| "Old/Name".into()),
        uidvalidity: u32::MAX,
        uids: if mailbox_level {
            UidSet::new()
        } else {
            UidSet::from_ranges([UidRange { first: 1, last: 3 }, UidRange { first: 7, last: 7 }])
        },
        flags: match kind {
            EventKind::FlagsSet => {
                let mut f = Flags::system(SystemFlags::SEEN.union(SystemFlags::DELETED));
                f.keywords.push("$Important".into());
                f
            }
            EventKind::FlagsClear => Flags::system(SystemFlags::FLAGGED),
            _ => Flags::default(),
        },
        status: MailboxStatus { messages: 7, unseen: 2, uidnext: 8, highestmodseq: 31, ..Default::default() },
        modseq_before: 30,
        modseq_after: 31,
        summary: matches!(kind, EventKind::MessageNew | EventKind::MessageAppend).then(|| MessageSummary {
            from: "Bob \"the builder\" <bob@example.org>".into(),
            subject: "Lunch? ☕".into(),
            snippet: "Are you free at noon\non Friday?".into(),
        }),
        timestamp_ms: 1_764_079_200_000,
    }
}

const ALL_INTERNAL: [EventKind; 10] = [
    EventKind::MessageNew,
    EventKind::MessageAppend,
    EventKind::MessageExpunge,
    EventKind::FlagsSet,
    EventKind::FlagsClear,
    EventKind::MailboxCreate,
    EventKind::MailboxDelete,
    EventKind::MailboxRename,
    EventKind::MailboxSubscribe,
    EventKind::MailboxUnsubscribe,
];

fn to_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn every_kind_the_code_produces_is_valid() {
    let v = validator();
    let mut seen = std::collections::BTreeSet::new();
    let hidden = HeaderPolicy { from: false, subject: false, snippet: false, ..HeaderPolicy::default() };
    let only_subject = HeaderPolicy { from: false, snippet: false, ..HeaderPolicy::default() };
    for kind in ALL_INTERNAL {
        for policy in [HeaderPolicy::default(), hidden, only_subject] {
            for ev in ExternalEvent::from_mailbox_event(&internal(kind), &policy) {
                seen.insert(ev.event);
                let doc = to_value(&ev.to_json());
                assert_valid(&v, &doc);
                assert_valid(&v, &to_value(&ev.to_json_bounded(3800)));
                if ev.event == ExternalEventKind::MailboxRename {
                    assert_eq!(doc["old_mailbox"], "Old/Name");
                }
                if policy == hidden {
                    assert!(doc.get("from").is_none() && doc.get("subject").is_none() && doc.get("snippet").is_none());
                }
            }
        }
    }
    assert_eq!(seen.len(), ExternalEventKind::ALL.len(), "{seen:?}");
    // The schema's enum is exactly the 12 names, in order.
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let names: Vec<&str> = ExternalEventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(schema["properties"]["event"]["enum"], json!(names));
}

#[test]
fn truncated_events_are_valid() {
    let v = validator();
    let mut ev = internal(EventKind::MessageNew);
    ev.uids = UidSet::from_ranges((1..3000u32).map(|i| UidRange { first: i * 3, last: i * 3 + 1 }));
    ev.summary = Some(MessageSummary { from: "f".repeat(256), subject: "ü".repeat(128), snippet: "\"".repeat(256) });
    for ext in ExternalEvent::from_mailbox_event(&ev, &HeaderPolicy { snippet_bytes: 256, ..HeaderPolicy::default() }) {
        let doc = to_value(&ext.to_json_bounded(1024));
        assert_eq!(doc["truncated"], true);
        assert!(ext.to_json_bounded(1024).len() <= 1024);
        assert_valid(&v, &doc);
    }
}

#[test]
fn malformed_documents_are_rejected() {
    let v = validator();
    let good = to_value(&ExternalEvent::from_mailbox_event(&internal(EventKind::MessageNew), &HeaderPolicy::default())[0].to_json());
    assert_valid(&v, &good);
    // Unknown fields are allowed (forward compatibility).
    let mut extra = good.clone();
    extra["added_in_a_later_release"] = json!({"x": 1});
    assert_valid(&v, &extra);

    let bad = |edit: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        edit(&mut doc);
        assert!(!v.is_valid(&doc), "accepted: {doc}");
    };
    bad(&|d| {
        d.as_object_mut().unwrap().remove("id");
    });
    for field in ["version", "event", "user", "mailbox", "uidvalidity", "uids", "flags", "unseen", "messages", "timestamp_ms"] {
        bad(&|d| {
            d.as_object_mut().unwrap().remove(field);
        });
    }
    bad(&|d| d["event"] = json!("MessageSent"));
    bad(&|d| d["event"] = json!("messagenew"));
    bad(&|d| d["version"] = json!(2));
    bad(&|d| d["id"] = json!("4F1C0A9E3B2D8C7F6E5A4B3C2D1E0F9A"));
    bad(&|d| d["id"] = json!("abc"));
    bad(&|d| d["uidvalidity"] = json!("1700000000"));
    bad(&|d| d["uidvalidity"] = json!(-1));
    bad(&|d| d["unseen"] = json!(1.5));
    bad(&|d| d["flags"] = json!("\\Seen"));
    bad(&|d| d["flags"] = json!([1]));
    bad(&|d| d["uids"] = json!("1:*"));
    bad(&|d| d["uids"] = json!("0"));
    bad(&|d| d["uids"] = json!("1,,2"));
    bad(&|d| d["uids"] = json!(7));
    bad(&|d| d["truncated"] = json!(false));
    bad(&|d| d["subject"] = json!(null));
    bad(&|d| d["old_mailbox"] = json!("INBOX"));
    bad(&|d| {
        d["event"] = json!("FlagsSet");
    });
    bad(&|d| {
        d.as_object_mut().unwrap().retain(|k, _| !matches!(k.as_str(), "from" | "subject" | "snippet"));
        d["event"] = json!("MailboxRename");
    });
    assert!(!v.is_valid(&json!([good])));
}

#[test]
fn readme_examples_are_valid() {
    let v = validator();
    let start = README.find("## External event format").expect("format section in push/README.md");
    let section = &README[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut examples = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for block in section[..end].split("```json\n").skip(1) {
        let json = &block[..block.find("```").expect("closed code block")];
        let doc: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_valid(&v, &doc);
        // Each example is also exactly what the code would parse.
        let parsed = ExternalEvent::from_json(json.as_bytes()).unwrap();
        kinds.insert(parsed.event);
        examples += 1;
    }
    assert!(examples >= 6, "only {examples} JSON examples found");
    assert!(kinds.contains(&ExternalEventKind::MessageNew) && kinds.contains(&ExternalEventKind::MailboxRename), "{kinds:?}");
}
