//! Records written by an earlier build decode with this one: in a restart
//! the previous generation (possibly an older build) passes descriptors and
//! session records to this one. The fixtures are the bytes of each version
//! as the build that introduced it encoded them; `DORMOUSE_WRITE_FIXTURES=1`
//! writes the current version's file if it does not exist yet (an old file
//! must never change).

use std::path::PathBuf;

use imap::handover::{Handover, Transport, HANDOVER_VERSION};
use imap::server::generation::{GenerationMessage, HibernateProcess, Inherited, GENERATION_VERSION};
use imap::session::{EnabledExtensions, HandOver};

fn fixture(name: &str, version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}-v{version}.bin"))
}

fn write_if_new(path: &std::path::Path, bytes: &[u8]) {
    if std::env::var_os("DORMOUSE_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(path, bytes).unwrap();
    }
}

fn handover() -> Handover {
    Handover {
        session_id: (2 << 40) + 5,
        peer: "192.0.2.7:51234".parse().unwrap(),
        local: "[::1]:993".parse().unwrap(),
        transport: Transport::Tls { implicit: true },
        authenticated_at_ms: 1_764_000_000_000,
        tls: Some(tls_record::TlsState {
            suite: tls_record::CipherSuite::Chacha20Poly1305Sha256,
            read: tls_record::DirectionState { secret: vec![1; 32], seq: 3 },
            write: tls_record::DirectionState { secret: vec![2; 32], seq: 4 },
            incoming: vec![23, 3, 3],
            handshake_partial: vec![24],
            transmit: Vec::new(),
        }),
        session: HandOver {
            user: "alice@example.org".into(),
            maildir: "/srv/mail/alice/Maildir".into(),
            enabled: EnabledExtensions { condstore: true, qresync: false },
            tls_active: true,
            pending_input: b"a2 SELECT INBOX\r\na3 FETCH 1:* (FLAGS)\r\n".to_vec(),
        },
    }
}

fn generation_messages() -> Vec<GenerationMessage> {
    vec![
        GenerationMessage::Hello { generation: 4, old_pid: 4242, hibernate: vec![HibernateProcess { index: 1, pid: 99 }] },
        GenerationMessage::Descriptor(Inherited::ImapListener { addr: "0.0.0.0:993".parse().unwrap(), implicit_tls: true }),
        GenerationMessage::Ready { pid: 5151 },
        GenerationMessage::Finished { moved: 10_000, lost: 1, duration_ms: 350, total_moved: 20_000, total_lost: 1 },
    ]
}

#[test]
fn every_saved_handover_version_decodes() {
    write_if_new(&fixture("handover", HANDOVER_VERSION), &handover().encode().unwrap());
    let mut found = 0;
    for version in 1..=HANDOVER_VERSION {
        let Ok(bytes) = std::fs::read(fixture("handover", version)) else { continue };
        found += 1;
        assert_eq!(Handover::decode(&bytes).unwrap_or_else(|e| panic!("version {version}: {e}")), handover());
    }
    assert!(fixture("handover", HANDOVER_VERSION).exists() && found >= 1, "current version not saved");
}

#[test]
fn every_saved_generation_message_version_decodes() {
    let encoded: Vec<u8> = generation_messages().iter().flat_map(|m| {
        let bytes = m.encode();
        let mut framed = (bytes.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        framed
    }).collect();
    write_if_new(&fixture("generation", GENERATION_VERSION), &encoded);
    for version in 1..=GENERATION_VERSION {
        let Ok(bytes) = std::fs::read(fixture("generation", version)) else { continue };
        let mut rest = &bytes[..];
        let mut decoded = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            decoded.push(GenerationMessage::decode(&rest[4..4 + len]).unwrap_or_else(|e| panic!("version {version}: {e}")));
            rest = &rest[4 + len..];
        }
        assert_eq!(decoded, generation_messages(), "version {version}");
    }
    assert!(fixture("generation", GENERATION_VERSION).exists(), "current version not saved");
}
