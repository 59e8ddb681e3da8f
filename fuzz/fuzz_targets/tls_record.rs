//! Feeds arbitrary bytes to the TLS 1.3 record layer as if from a client,
//! and decodes them as a TLS state record: neither may panic, a decoded
//! state must re-encode to itself, and after an error the layer stays dead.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tls_record::{CipherSuite, DirectionState, RecordLayer, TlsState};

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = TlsState::decode(data) {
        let again = TlsState::decode(&state.encode().expect("a decoded state re-encodes"))
            .expect("re-encoded state decodes");
        assert_eq!(again, state);
        let _ = RecordLayer::from_state(state);
    }
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let suite = match split % 3 {
        0 => CipherSuite::Aes128GcmSha256,
        1 => CipherSuite::Aes256GcmSha384,
        _ => CipherSuite::Chacha20Poly1305Sha256,
    };
    let len = suite.secret_len();
    let state = TlsState {
        suite,
        read: DirectionState {
            secret: vec![1; len],
            seq: 0,
        },
        write: DirectionState {
            secret: vec![2; len],
            seq: 0,
        },
        incoming: Vec::new(),
        handshake_partial: Vec::new(),
        transmit: Vec::new(),
    };
    let mut layer = RecordLayer::from_state(state).expect("fixed state is valid");
    // Deliver in pieces of a data-chosen size to exercise partial records.
    let piece = usize::from(split / 3).max(1);
    for chunk in input.chunks(piece) {
        layer.enqueue_input(chunk);
        loop {
            match layer.next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    assert!(layer.next().is_err(), "a failed session stays failed");
                    return;
                }
            }
        }
        let _ = layer.seal(chunk);
    }
});
