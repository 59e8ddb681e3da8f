//! Records written by an earlier build decode with this one: a restart hands
//! hibernated sessions from an older generation's hibernate process to this
//! generation's workers, so a record version this build reads must keep
//! decoding. The fixtures are the bytes of each version as the build that
//! introduced it encoded them; `DORMOUSE_WRITE_FIXTURES=1` writes the
//! current version's file (only when the version is new: an old file must
//! never change).

use std::path::PathBuf;

use hibernate::notify::{Events, Filter, MailboxGroup, NotifySpec, SelectedGroup};
use hibernate::record::{ClientTransport, DeflateState, Extensions, HibernationRecord, SelectedView, RECORD_VERSION};
use storage_hooks::{UidRange, UidSet};

/// The kinds of saved record: plain TCP, TLS, and (from version 4) a
/// compressed session over TLS.
const KINDS: [&str; 3] = ["plain", "tls", "deflate"];

fn fixture(version: u8, kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/hibernation-record-v{version}-{kind}.bin"))
}

/// The session every fixture holds (field values chosen to cover every
/// field, with odd bytes in names and pending input).
fn expected(version: u8, kind: &str) -> HibernationRecord {
    let tls = kind != "plain";
    HibernationRecord {
        session_id: (3 << 40) + 17,
        user: "alice@example.org".into(),
        maildir: "/srv/mail/alice/Maildir".into(),
        peer: "192.0.2.7:51234".parse().unwrap(),
        local: "[::1]:993".parse().unwrap(),
        transport: if tls { ClientTransport::Tls { implicit: true } } else { ClientTransport::PlainTcp },
        authenticated_at_ms: 1_764_000_000_000,
        enabled: Extensions { condstore: true, qresync: tls },
        idle_tag: Some("A0007".into()),
        selected: Some(SelectedView {
            mailbox: "Archive/2024 \"x\" \u{e9}".into(),
            read_only: false,
            uidvalidity: 1_764_000_000,
            uids: UidSet::from_ranges([UidRange { first: 1, last: 1000 }, UidRange { first: 1003, last: 1003 }]),
            highest_modseq_seen: 5000,
        }),
        pending_input: b"DONE\r\nA2 UID FETCH 1:* (FLAGS)\r\n\xff\x00".to_vec(),
        tls: tls.then(|| tls_record::TlsState {
            suite: tls_record::CipherSuite::Aes128GcmSha256,
            read: tls_record::DirectionState { secret: vec![5; 32], seq: 1 },
            write: tls_record::DirectionState { secret: vec![6; 32], seq: 40 },
            incoming: vec![23, 3, 3, 0, 30, 1, 2],
            handshake_partial: Vec::new(),
            transmit: vec![23, 3, 3, 0, 17],
        }),
        // Version 3 added the NOTIFY state.
        notify: (version >= 3).then(|| NotifySpec {
            selected: Some(SelectedGroup {
                delayed: true,
                events: Events { message_new: true, message_expunge: true, ..Default::default() },
                fetch_att: Some("UID FLAGS".into()),
            }),
            groups: vec![
                MailboxGroup { filter: Filter::Subscribed, events: Events { mailbox_name: true, ..Default::default() } },
                MailboxGroup {
                    filter: Filter::Subtree(vec!["Lists".into(), "Caf\u{e9}".into()]),
                    events: Events { message_new: true, message_expunge: true, flag_change: true, ..Default::default() },
                },
                MailboxGroup { filter: Filter::Mailboxes(vec!["Spam".into()]), events: Events::default() },
            ],
            subscribed: vec!["INBOX".into(), "Lists/rust".into()],
        }),
        // Version 4 added the COMPRESS=DEFLATE state.
        deflate: (kind == "deflate").then(|| DeflateState {
            window: (0..32 * 1024u32).map(|i| (i % 251) as u8).collect(),
            input_tail: vec![0x4a, 0x2c, 0x00],
            unsent: vec![0, 5, 0, 0xfa, 0xff, b'*', b' ', b'1', b'\r', b'\n'],
        }),
    }
}

#[test]
fn every_saved_record_version_decodes_to_the_same_session() {
    if std::env::var_os("DORMOUSE_WRITE_FIXTURES").is_some() {
        for kind in KINDS {
            let path = fixture(RECORD_VERSION, kind);
            if !path.exists() {
                std::fs::write(&path, expected(RECORD_VERSION, kind).encode().unwrap()).unwrap();
            }
        }
    }
    let mut found = 0;
    for version in 1..=RECORD_VERSION {
        for kind in KINDS {
            let Ok(bytes) = std::fs::read(fixture(version, kind)) else { continue };
            found += 1;
            assert_eq!(bytes[0], version);
            let record = HibernationRecord::decode(&bytes).unwrap_or_else(|e| panic!("version {version} {kind}: {e}"));
            assert_eq!(record, expected(version, kind), "version {version} {kind}");
        }
    }
    // At least the current version is saved (every kind).
    assert!(KINDS.iter().all(|k| fixture(RECORD_VERSION, k).exists()), "current version not saved");
    assert!(found >= 3);
}
