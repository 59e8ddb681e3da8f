//! Taking a session over from rustls after its handshake.
//!
//! `dangerous_extract_secrets` gives the current AEAD keys, IVs and sequence
//! numbers but not the traffic secrets, and a KeyUpdate needs the secret
//! (RFC 8446 §7.2). rustls hands the secrets to a [`rustls::KeyLog`] during
//! the handshake, so each connection that may be handed over gets its own
//! [`SecretCapture`]; [`state_from_rustls`] then checks that the captured
//! secrets derive exactly the keys rustls extracted (so no KeyUpdate slipped
//! in between) before building the [`TlsState`].

use std::sync::{Arc, Mutex};

use rustls::{
    ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, ServerConfig, ServerConnection,
};
use zeroize::Zeroize;

use crate::keys::DirectionKeys;
use crate::state::{DirectionState, TlsState};
use crate::{CipherSuite, Error};

const CLIENT_SECRET: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_SECRET: &str = "SERVER_TRAFFIC_SECRET_0";

#[derive(Default)]
struct Captured {
    client: Option<Vec<u8>>,
    server: Option<Vec<u8>>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        for secret in [&mut self.client, &mut self.server].into_iter().flatten() {
            secret.zeroize();
        }
    }
}

/// A [`rustls::KeyLog`] that keeps one connection's TLS 1.3 application
/// traffic secrets (and nothing else), for [`state_from_rustls`].
#[derive(Default)]
pub struct SecretCapture {
    captured: Mutex<Captured>,
}

impl std::fmt::Debug for SecretCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCapture(<redacted>)")
    }
}

impl rustls::KeyLog for SecretCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let mut captured = self
            .captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match label {
            CLIENT_SECRET => captured.client = Some(secret.to_vec()),
            SERVER_SECRET => captured.server = Some(secret.to_vec()),
            _ => {}
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_SECRET || label == SERVER_SECRET
    }
}

impl SecretCapture {
    /// True if `conn` finished a TLS 1.3 handshake and both secrets were
    /// captured: only then can its state be extracted without losing the
    /// connection (extraction consumes it).
    pub fn transferable(&self, conn: &ServerConnection) -> bool {
        let captured = self
            .captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !conn.is_handshaking()
            && conn.protocol_version() == Some(ProtocolVersion::TLSv1_3)
            && captured.client.is_some()
            && captured.server.is_some()
    }
}

/// A per-connection copy of `base` that lets rustls give up the session:
/// secret extraction on, and a fresh [`SecretCapture`] as key log.
pub fn handover_server_config(base: &ServerConfig) -> (Arc<ServerConfig>, Arc<SecretCapture>) {
    let capture = Arc::new(SecretCapture::default());
    let mut config = base.clone();
    config.enable_secret_extraction = true;
    config.key_log = capture.clone();
    (Arc::new(config), capture)
}

/// Builds the [`TlsState`] of a server connection from what rustls
/// extracted and the secrets `capture` saw. `incoming` is any ciphertext
/// read from the socket that rustls has not consumed.
///
/// # Errors
/// [`Error::NotTransferable`] when the secrets are missing (TLS 1.2, or the
/// capture did not belong to this connection) or do not derive the
/// extracted keys.
pub fn state_from_rustls(
    secrets: ExtractedSecrets,
    capture: &SecretCapture,
    incoming: Vec<u8>,
) -> Result<TlsState, Error> {
    let (client, server) = {
        let captured = capture
            .captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&captured.client, &captured.server) {
            (Some(c), Some(s)) => (c.clone(), s.clone()),
            _ => {
                return Err(Error::NotTransferable(
                    "no TLS 1.3 traffic secrets captured (TLS 1.2?)".into(),
                ))
            }
        }
    };
    let (tx_seq, tx) = &secrets.tx;
    let (rx_seq, rx) = &secrets.rx;
    let suite = suite_of(tx)?;
    if suite_of(rx)? != suite {
        return Err(Error::NotTransferable(
            "directions disagree on the cipher suite".into(),
        ));
    }
    // Server side: we write with the server secret, read with the client's.
    check_matches(suite, &server, tx)?;
    check_matches(suite, &client, rx)?;
    let state = TlsState {
        suite,
        read: DirectionState {
            secret: client,
            seq: *rx_seq,
        },
        write: DirectionState {
            secret: server,
            seq: *tx_seq,
        },
        incoming,
        handshake_partial: Vec::new(),
        transmit: Vec::new(),
    };
    state.check()?;
    Ok(state)
}

fn suite_of(secrets: &ConnectionTrafficSecrets) -> Result<CipherSuite, Error> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => Ok(CipherSuite::Aes128GcmSha256),
        ConnectionTrafficSecrets::Aes256Gcm { .. } => Ok(CipherSuite::Aes256GcmSha384),
        ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => {
            Ok(CipherSuite::Chacha20Poly1305Sha256)
        }
        _ => Err(Error::NotTransferable(
            "cipher suite not supported by the record layer".into(),
        )),
    }
}

fn check_matches(
    suite: CipherSuite,
    secret: &[u8],
    extracted: &ConnectionTrafficSecrets,
) -> Result<(), Error> {
    let (key, iv) = match extracted {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => {
            return Err(Error::NotTransferable(
                "cipher suite not supported by the record layer".into(),
            ))
        }
    };
    let derived =
        DirectionKeys::derive(suite, secret).map_err(|e| Error::NotTransferable(e.to_string()))?;
    if derived.iv().as_slice() != iv.as_ref() || !derived.same_key(suite, key.as_ref()) {
        return Err(Error::NotTransferable(
            "captured secret does not derive the current keys (KeyUpdate during the handshake?)"
                .into(),
        ));
    }
    Ok(())
}
