//! The webhook signature header.
//!
//! ```text
//! X-Dormouse-Signature: t=1764079200,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//! ```
//!
//! `v1` is the lowercase hex HMAC-SHA256, keyed with the registration's
//! secret, of the ASCII decimal timestamp `t` (UNIX seconds when the
//! attempt was made), a `.`, and the exact request body bytes. A receiver
//! recomputes it over the raw body (before any JSON parsing), compares in
//! constant time, and rejects timestamps more than a few minutes from its
//! clock, so a captured request cannot be replayed later. Each retry is
//! signed afresh with a new `t`; de-duplicate on `X-Dormouse-Event-Id`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Dormouse-Signature";

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<secs>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is too far from the receiver's clock.
    #[error("signature timestamp {timestamp} is {skew_secs} s away from now (limit {tolerance_secs} s)")]
    Stale {
        /// The header's `t`.
        timestamp: u64,
        /// Distance from the receiver's clock.
        skew_secs: u64,
        /// The receiver's limit.
        tolerance_secs: u64,
    },
    /// The HMAC does not match.
    #[error("signature mismatch")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed with `secret` at `timestamp` (UNIX seconds).
pub fn signature_header(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Checks a header as a receiver should: well-formed, timestamp within
/// `tolerance_secs` of `now_secs`, HMAC equal (constant-time comparison).
///
/// # Errors
/// [`SignatureError`] saying which check failed.
pub fn verify_signature(
    header: &str,
    secret: &[u8],
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut digests = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => digests.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            // Unknown schemes are ignored so a future v2 can be added alongside.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if digests.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew_secs = now_secs.abs_diff(timestamp);
    if skew_secs > tolerance_secs {
        return Err(SignatureError::Stale { timestamp, skew_secs, tolerance_secs });
    }
    let expected = mac(secret, timestamp, body);
    if digests.iter().any(|d| expected.clone().verify_slice(d).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let h = signature_header(b"key", 1_764_079_200, b"{\"a\":1}");
        assert!(h.starts_with("t=1764079200,v1="));
        assert_eq!(h.len(), "t=1764079200,v1=".len() + 64);
        assert_eq!(verify_signature(&h, b"key", b"{\"a\":1}", 1_764_079_260, 300), Ok(()));
        assert_eq!(verify_signature(&h, b"other", b"{\"a\":1}", 1_764_079_200, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(&h, b"key", b"{\"a\":2}", 1_764_079_200, 300), Err(SignatureError::Mismatch));
        assert!(matches!(verify_signature(&h, b"key", b"{\"a\":1}", 1_764_080_000, 300), Err(SignatureError::Stale { .. })));
        assert_eq!(verify_signature("v1=00", b"key", b"", 0, 300), Err(SignatureError::Malformed));
        assert_eq!(verify_signature("garbage", b"key", b"", 0, 300), Err(SignatureError::Malformed));
    }

    #[test]
    fn matches_openssl() {
        // `printf '12.34' | openssl dgst -sha256 -hmac Jefe`
        assert_eq!(
            signature_header(b"Jefe", 12, b"34"),
            "t=12,v1=def14e9b8a3b3f291e98daf725f038a208fa3fb1ec5e9345925f096245033ac2"
        );
    }
}
