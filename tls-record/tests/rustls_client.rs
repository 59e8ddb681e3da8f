//! The record layer against a real rustls client over an in-memory pipe:
//! rustls' ServerConnection does the handshake, gives up its secrets, and
//! the record layer carries on from there.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection, SupportedCipherSuite,
};
use tls_record::{handover_server_config, state_from_rustls, Error, Event, RecordLayer, TlsState};

fn configs(suite: SupportedCipherSuite) -> (Arc<ClientConfig>, ServerConfig) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let server = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..provider::default_provider()
    };
    let client = ClientConfig::builder_with_provider(Arc::new(client_provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(client), server)
}

/// Everything `from` has to send.
fn drain_tls(from: &mut dyn FnMut(&mut Vec<u8>) -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    while from(&mut out) > 0 {}
    out
}

fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    drain_tls(&mut |out| client.write_tls(out).unwrap())
}

/// Feeds records to the client; returns the plaintext it decrypted.
fn client_input(client: &mut ClientConnection, mut bytes: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let mut plain = Vec::new();
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).unwrap();
        client.process_new_packets()?;
        let mut buf = [0u8; 4096];
        loop {
            match client.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }
    Ok(plain)
}

/// Handshakes a client with a rustls server, then moves the server's
/// session into a record layer.
fn connect(suite: SupportedCipherSuite) -> (ClientConnection, RecordLayer) {
    let (client_config, base) = configs(suite);
    let (server_config, capture) = handover_server_config(&base);
    let mut server = ServerConnection::new(server_config).unwrap();
    let mut client = ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
    for _ in 0..10 {
        let to_server = client_output(&mut client);
        let mut slice = &to_server[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).unwrap();
        }
        server.process_new_packets().unwrap();
        let to_client = drain_tls(&mut |out| server.write_tls(out).unwrap());
        client_input(&mut client, &to_client).unwrap();
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !server.wants_write()
            && !client.wants_write()
        {
            break;
        }
    }
    assert!(capture.transferable(&server));
    let secrets = server.dangerous_extract_secrets().unwrap();
    let state = state_from_rustls(secrets, &capture, Vec::new()).unwrap();
    (client, RecordLayer::from_state(state).unwrap())
}

fn events(layer: &mut RecordLayer, bytes: &[u8]) -> Result<Vec<Event>, Error> {
    layer.enqueue_input(bytes);
    let mut all = Vec::new();
    while let Some(event) = layer.next()? {
        all.push(event);
    }
    Ok(all)
}

fn app_data(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::ApplicationData(d) => d.clone(),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

fn client_send(client: &mut ClientConnection, data: &[u8]) -> Vec<u8> {
    // In pieces: the client buffers at most 64 KB of unsent records.
    let mut out = Vec::new();
    for piece in data.chunks(16 * 1024) {
        client.writer().write_all(piece).unwrap();
        out.extend(client_output(client));
    }
    out
}

const SUITES: [SupportedCipherSuite; 3] = [
    provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
    provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
    provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

#[test]
fn data_both_ways_in_every_suite() {
    for suite in SUITES {
        let (mut client, mut layer) = connect(suite);
        let got = events(&mut layer, &client_send(&mut client, b"a1 NOOP\r\n")).unwrap();
        assert_eq!(app_data(&got), b"a1 NOOP\r\n", "{suite:?}");
        let answer = layer.seal(b"a1 OK NOOP completed\r\n").unwrap();
        assert_eq!(
            client_input(&mut client, &answer).unwrap(),
            b"a1 OK NOOP completed\r\n"
        );

        // Larger than one record each way: fragmentation at 2^14.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let got = events(&mut layer, &client_send(&mut client, &big)).unwrap();
        assert_eq!(app_data(&got), big);
        let sealed = layer.seal(&big).unwrap();
        assert_eq!(
            sealed.len(),
            big.len() + 7 * 22,
            "seven records of 5 + 1 + 16 bytes overhead"
        );
        assert_eq!(client_input(&mut client, &sealed).unwrap(), big);
    }
}

#[test]
fn partial_records_survive_a_state_round_trip_at_every_byte() {
    let (mut client, mut layer) = connect(SUITES[0]);
    let wire = client_send(&mut client, b"a2 SELECT INBOX\r\n");
    let mut plain = Vec::new();
    for byte in &wire {
        // Each byte arrives in "another process": the partial record moves
        // with the state.
        let state = TlsState::decode(&layer.into_state().encode().unwrap()).unwrap();
        layer = RecordLayer::from_state(state).unwrap();
        plain.extend(app_data(
            &events(&mut layer, std::slice::from_ref(byte)).unwrap(),
        ));
    }
    assert_eq!(plain, b"a2 SELECT INBOX\r\n");
    assert_eq!(layer.buffered_input(), 0);
    // Sequence numbers continue across owners: the client accepts what the
    // last owner writes.
    let before = layer.write_seq();
    let out = layer.seal(b"* 3 EXISTS\r\n").unwrap();
    assert_eq!(layer.write_seq(), before + 1);
    assert_eq!(client_input(&mut client, &out).unwrap(), b"* 3 EXISTS\r\n");
}

#[test]
fn client_key_update_is_answered() {
    for suite in SUITES {
        let (mut client, mut layer) = connect(suite);
        client.refresh_traffic_keys().unwrap();
        let wire = client_send(&mut client, b"after update\r\n");
        let got = events(&mut layer, &wire).unwrap();
        assert_eq!(got[0], Event::KeyUpdate { answered: true }, "{suite:?}");
        assert_eq!(app_data(&got[1..]), b"after update\r\n");
        assert_eq!(layer.read_seq(), 1, "the read key restarted at 0");
        assert!(layer.has_transmit(), "our KeyUpdate is queued");
        // The answer goes out ahead of the next data; the client follows.
        let out = layer.seal(b"ok\r\n").unwrap();
        assert_eq!(layer.write_seq(), 1, "the write key restarted at 0");
        assert_eq!(client_input(&mut client, &out).unwrap(), b"ok\r\n");
        // And again, to see the second generation of secrets work.
        client.refresh_traffic_keys().unwrap();
        let got = events(&mut layer, &client_send(&mut client, b"x")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            client_input(&mut client, &layer.seal(b"y").unwrap()).unwrap(),
            b"y"
        );
    }
}

#[test]
fn server_key_update_request_is_followed_by_the_client() {
    let (mut client, mut layer) = connect(SUITES[2]);
    let out = layer.key_update(true).unwrap();
    assert_eq!(layer.write_seq(), 0);
    assert!(client_input(&mut client, &out).unwrap().is_empty());
    // rustls answers with its own KeyUpdate before its next data.
    let got = events(&mut layer, &client_send(&mut client, b"z")).unwrap();
    assert_eq!(
        got,
        vec![
            Event::KeyUpdate { answered: false },
            Event::ApplicationData(b"z".to_vec())
        ]
    );
    assert!(!layer.has_transmit());
}

#[test]
fn write_side_rekeys_at_its_record_limit() {
    let (mut client, mut layer) = connect(SUITES[0]);
    layer.set_write_record_limit(3);
    let mut rekeys = 0;
    for i in 0..20u32 {
        let line = format!("* {i} EXISTS\r\n");
        let before = layer.write_seq();
        let out = layer.seal(line.as_bytes()).unwrap();
        if layer.write_seq() < before {
            rekeys += 1;
        }
        assert!(layer.write_seq() <= 3, "never more than the limit per key");
        // The client's read side follows each KeyUpdate, else this fails.
        assert_eq!(client_input(&mut client, &out).unwrap(), line.as_bytes());
    }
    assert!(
        rekeys >= 6,
        "20 records under a limit of 3 rekey at least 6 times, saw {rekeys}"
    );
}

#[test]
fn close_notify_both_ways() {
    let (mut client, mut layer) = connect(SUITES[1]);
    client.send_close_notify();
    let got = events(&mut layer, &client_output(&mut client)).unwrap();
    assert_eq!(got, vec![Event::CloseNotify]);
    assert!(layer.is_closed());
    // Input after the peer's close is ignored.
    assert!(events(&mut layer, b"\x17\x03\x03\x00\x20garbage")
        .unwrap()
        .is_empty());
    let out = layer.close_notify().unwrap();
    client_input(&mut client, &out).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        client.reader().read(&mut buf).unwrap(),
        0,
        "clean EOF at the client"
    );
    assert!(matches!(layer.seal(b"late"), Err(Error::Closed)));
}

#[test]
fn forged_record_gets_bad_record_mac_and_ends_the_session() {
    let (mut client, mut layer) = connect(SUITES[0]);
    let mut wire = client_send(&mut client, b"a3 LOGOUT\r\n");
    let last = wire.len() - 1;
    wire[last] ^= 0x40;
    assert!(matches!(
        events(&mut layer, &wire),
        Err(Error::BadRecordMac)
    ));
    let alert = layer.take_transmit();
    assert!(!alert.is_empty());
    assert_eq!(
        client_input(&mut client, &alert),
        Err(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadRecordMac
        ))
    );
    assert!(matches!(layer.next(), Err(Error::Closed)));
    assert!(matches!(layer.seal(b"x"), Err(Error::Closed)));
}

#[test]
fn replayed_record_is_refused() {
    let (mut client, mut layer) = connect(SUITES[2]);
    let wire = client_send(&mut client, b"once");
    assert_eq!(app_data(&events(&mut layer, &wire).unwrap()), b"once");
    assert!(matches!(
        events(&mut layer, &wire),
        Err(Error::BadRecordMac)
    ));
}

#[test]
fn oversized_and_unprotected_records_get_alerts() {
    let (mut client, mut layer) = connect(SUITES[0]);
    let header = [23u8, 3, 3, 0x48, 0x01]; // 2^14 + 2049 bytes
    assert!(matches!(
        events(&mut layer, &header),
        Err(Error::RecordOverflow)
    ));
    assert_eq!(
        client_input(&mut client, &layer.take_transmit()),
        Err(rustls::Error::AlertReceived(
            rustls::AlertDescription::RecordOverflow
        ))
    );

    let (mut client, mut layer) = connect(SUITES[0]);
    assert!(matches!(
        events(&mut layer, &[22, 3, 3, 0, 4, 1, 0, 0, 0]),
        Err(Error::UnexpectedMessage(_))
    ));
    assert_eq!(
        client_input(&mut client, &layer.take_transmit()),
        Err(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnexpectedMessage
        ))
    );
}

#[test]
fn client_alert_is_reported_without_an_answer() {
    let (mut client, mut layer) = connect(SUITES[0]);
    // A fatal alert from the client: rustls sends one when it sees garbage.
    let mut garbage = layer.seal(b"hello").unwrap();
    garbage[7] ^= 1;
    assert!(client_input(&mut client, &garbage).is_err());
    let alert = client_output(&mut client);
    assert!(matches!(
        events(&mut layer, &alert),
        Err(Error::PeerAlert(20))
    ));
    assert!(!layer.has_transmit(), "no alert in answer to an alert");
}
