//! Cipher suites, the TLS 1.3 key schedule steps a record layer needs after
//! the handshake (RFC 8446 §7.1 `HKDF-Expand-Label`, §7.2 the KeyUpdate
//! secret, §7.3 traffic key and IV), and sealing/opening one record with
//! `ring::aead`.

use ring::{aead, hkdf};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Length of every TLS 1.3 AEAD nonce/IV (RFC 8446 §5.3: at least 8, and all
/// three suites here use 12).
pub const IV_LEN: usize = 12;

/// The TLS 1.3 cipher suites this record layer runs (the ones rustls with the
/// ring provider negotiates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CipherSuite {
    /// TLS_AES_128_GCM_SHA256
    Aes128GcmSha256,
    /// TLS_AES_256_GCM_SHA384
    Aes256GcmSha384,
    /// TLS_CHACHA20_POLY1305_SHA256
    Chacha20Poly1305Sha256,
}

impl CipherSuite {
    fn aead(self) -> &'static aead::Algorithm {
        match self {
            CipherSuite::Aes128GcmSha256 => &aead::AES_128_GCM,
            CipherSuite::Aes256GcmSha384 => &aead::AES_256_GCM,
            CipherSuite::Chacha20Poly1305Sha256 => &aead::CHACHA20_POLY1305,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            CipherSuite::Aes128GcmSha256 | CipherSuite::Chacha20Poly1305Sha256 => hkdf::HKDF_SHA256,
            CipherSuite::Aes256GcmSha384 => hkdf::HKDF_SHA384,
        }
    }

    /// Length of a traffic secret: the suite's hash length.
    pub fn secret_len(self) -> usize {
        hkdf::KeyType::len(&self.hkdf())
    }

    /// The AEAD key length.
    pub fn key_len(self) -> usize {
        self.aead().key_len()
    }

    /// Records one key may protect before our side rekeys. AES-GCM's
    /// confidentiality limit is 2^24.5 full-size records (RFC 8446 §5.5);
    /// we stay a factor of four under 2^23 for margin. ChaCha20-Poly1305 has
    /// no practical limit, but rekeying at the same count costs nothing and
    /// keeps sequence numbers far from wrapping.
    pub fn write_record_limit(self) -> u64 {
        1 << 21
    }
}

/// `u16`-length key types for ring's HKDF output.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// RFC 8446 §7.1 `HKDF-Expand-Label(Secret, Label, Context, Length)` with an
/// empty context (all the labels a record layer needs have one).
fn expand_label(
    suite: CipherSuite,
    secret: &[u8],
    label: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let prk = hkdf::Prk::new_less_safe(suite.hkdf(), secret);
    let length = u16::try_from(out.len())
        .map_err(|_| Error::KeySchedule)?
        .to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).map_err(|_| Error::KeySchedule)?];
    let context_len = [0u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &context_len];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::KeySchedule)
}

/// RFC 8446 §7.2: `application_traffic_secret_N+1`.
pub(crate) fn next_secret(suite: CipherSuite, secret: &[u8]) -> Result<Vec<u8>, Error> {
    let mut next = vec![0u8; suite.secret_len()];
    expand_label(suite, secret, b"traffic upd", &mut next)?;
    Ok(next)
}

/// RFC 8446 §7.3: the raw AEAD key and IV of a traffic secret, for a
/// record layer outside this crate (Linux kernel TLS).
///
/// # Errors
/// A secret of the wrong length for the suite.
pub fn traffic_key_iv(
    suite: CipherSuite,
    secret: &[u8],
) -> Result<(zeroize::Zeroizing<Vec<u8>>, [u8; IV_LEN]), Error> {
    if secret.len() != suite.secret_len() {
        return Err(Error::BadState(
            "traffic secret length does not match the cipher suite",
        ));
    }
    let mut key = zeroize::Zeroizing::new(vec![0u8; suite.key_len()]);
    expand_label(suite, secret, b"key", &mut key)?;
    let mut iv = [0u8; IV_LEN];
    expand_label(suite, secret, b"iv", &mut iv)?;
    Ok((key, iv))
}

/// One direction's AEAD key and IV, derived from its traffic secret.
pub(crate) struct DirectionKeys {
    key: aead::LessSafeKey,
    iv: [u8; IV_LEN],
}

impl DirectionKeys {
    /// RFC 8446 §7.3: `key = HKDF-Expand-Label(secret, "key", "", key_length)`,
    /// `iv = HKDF-Expand-Label(secret, "iv", "", iv_length)`.
    pub(crate) fn derive(suite: CipherSuite, secret: &[u8]) -> Result<Self, Error> {
        if secret.len() != suite.secret_len() {
            return Err(Error::BadState(
                "traffic secret length does not match the cipher suite",
            ));
        }
        let mut key = zeroize::Zeroizing::new(vec![0u8; suite.key_len()]);
        expand_label(suite, secret, b"key", &mut key)?;
        let mut iv = [0u8; IV_LEN];
        expand_label(suite, secret, b"iv", &mut iv)?;
        let unbound = aead::UnboundKey::new(suite.aead(), &key).map_err(|_| Error::KeySchedule)?;
        Ok(DirectionKeys {
            key: aead::LessSafeKey::new(unbound),
            iv,
        })
    }

    /// The derived IV (to check a derivation against what rustls extracted).
    pub(crate) fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }

    /// RFC 8446 §5.3: the 64-bit sequence number, big-endian, left-padded to
    /// the IV length and XORed with the IV.
    fn nonce(&self, seq: u64) -> aead::Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[IV_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        aead::Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypts `inner` (TLSInnerPlaintext) in place, appending the tag;
    /// `header` is the record header used as additional data.
    pub(crate) fn seal(
        &self,
        seq: u64,
        header: &[u8; 5],
        inner: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.key
            .seal_in_place_append_tag(self.nonce(seq), aead::Aad::from(header), inner)
            .map_err(|_| Error::KeySchedule)
    }

    /// Decrypts a record's payload in place; returns the plaintext length.
    pub(crate) fn open(
        &self,
        seq: u64,
        header: &[u8; 5],
        payload: &mut [u8],
    ) -> Result<usize, Error> {
        self.key
            .open_in_place(self.nonce(seq), aead::Aad::from(header), payload)
            .map(|plain| plain.len())
            .map_err(|_| Error::BadRecordMac)
    }

    /// Checks that `key` encrypts like ours: seals a probe with both and
    /// compares (ring keys cannot be read back).
    pub(crate) fn same_key(&self, suite: CipherSuite, key: &[u8]) -> bool {
        let Ok(unbound) = aead::UnboundKey::new(suite.aead(), key) else {
            return false;
        };
        let other = aead::LessSafeKey::new(unbound);
        let seal = |k: &aead::LessSafeKey| {
            let mut probe = b"key check".to_vec();
            k.seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(self.iv),
                aead::Aad::empty(),
                &mut probe,
            )
            .map(|()| probe)
        };
        matches!((seal(&self.key), seal(&other)), (Ok(a), Ok(b)) if a == b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8448 §3 (simple 1-RTT handshake), server application traffic
    /// secret and the write key and IV derived from it.
    #[test]
    fn rfc8448_server_application_keys() {
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let keys = DirectionKeys::derive(CipherSuite::Aes128GcmSha256, &secret).unwrap();
        assert_eq!(keys.iv().to_vec(), hex("cf782b88dd83549aadf1e984"));
        assert!(keys.same_key(
            CipherSuite::Aes128GcmSha256,
            &hex("9f02283b6c9c07efc26bb9f2ac92e356")
        ));
        assert!(!keys.same_key(
            CipherSuite::Aes128GcmSha256,
            &hex("9f02283b6c9c07efc26bb9f2ac92e357")
        ));
    }

    #[test]
    fn key_update_changes_keys_and_is_deterministic() {
        let secret = vec![7u8; 48];
        let next = next_secret(CipherSuite::Aes256GcmSha384, &secret).unwrap();
        assert_eq!(next.len(), 48);
        assert_ne!(next, secret);
        assert_eq!(
            next,
            next_secret(CipherSuite::Aes256GcmSha384, &secret).unwrap()
        );
    }

    #[test]
    fn wrong_secret_length_is_refused() {
        assert!(matches!(
            DirectionKeys::derive(CipherSuite::Aes128GcmSha256, &[0u8; 48]),
            Err(Error::BadState(_))
        ));
    }
}
