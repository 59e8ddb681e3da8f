//! A Web Push subscription as a browser's `PushSubscription.toJSON()`
//! gives it (`endpoint`, `keys.p256dh`, `keys.auth`), checked and decoded.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// Longest endpoint URL accepted; real push services use a few hundred bytes.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// Length of the user agent's uncompressed P-256 public key (RFC 8291 §3.2).
const P256DH_LEN: usize = 65;

/// Length of the authentication secret (RFC 8291 §3.2).
const AUTH_LEN: usize = 16;

/// base64url, with or without `=` padding (browsers omit it, some
/// libraries keep it).
const BASE64URL_ANY_PADDING: GeneralPurpose =
    GeneralPurpose::new(&alphabet::URL_SAFE, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

/// A subscription whose URL and keys passed [`validate_subscription`].
#[derive(Clone)]
pub(crate) struct Subscription {
    /// The push resource.
    pub(crate) endpoint: url::Url,
    /// Its origin, the VAPID `aud` claim (RFC 8292 §2), e.g.
    /// `https://fcm.googleapis.com` or `http://127.0.0.1:8080`.
    pub(crate) audience: String,
    /// The user agent's public key (uncompressed point).
    pub(crate) p256dh: [u8; P256DH_LEN],
    /// The authentication secret.
    pub(crate) auth: [u8; AUTH_LEN],
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys never reach logs.
        f.debug_struct("Subscription").field("audience", &self.audience).finish_non_exhaustive()
    }
}

/// Checks a subscription before it is stored: the endpoint is an `https://`
/// URL (plain `http://` only to `localhost`, `127.0.0.1` or `[::1]`, for
/// tests and local development), `p256dh` is base64url (padded or not) of
/// a 65-byte uncompressed P-256 point that lies on the curve, and `auth`
/// is base64url of 16 bytes.
///
/// # Errors
/// A message saying which field is wrong and why.
pub fn validate_subscription(endpoint: &str, p256dh: &str, auth: &str) -> Result<(), String> {
    Subscription::parse(endpoint, p256dh, auth).map(|_| ())
}

impl Subscription {
    /// Parses and checks the three fields (see [`validate_subscription`]).
    pub(crate) fn parse(endpoint: &str, p256dh: &str, auth: &str) -> Result<Subscription, String> {
        let endpoint = parse_endpoint(endpoint)?;
        let audience = endpoint.origin().ascii_serialization();
        let p256dh = decode_fixed::<P256DH_LEN>("p256dh", p256dh)?;
        if p256dh[0] != 0x04 {
            return Err(format!("p256dh must be an uncompressed P-256 point (first byte 0x04), first byte is {:#04x}", p256dh[0]));
        }
        p256::PublicKey::from_sec1_bytes(&p256dh).map_err(|_| "p256dh is not a point on the P-256 curve".to_owned())?;
        let auth = decode_fixed::<AUTH_LEN>("auth", auth)?;
        Ok(Subscription { endpoint, audience, p256dh, auth })
    }
}

fn parse_endpoint(endpoint: &str) -> Result<url::Url, String> {
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(format!("endpoint URL is {} bytes long, at most {MAX_ENDPOINT_LEN} are accepted", endpoint.len()));
    }
    let url = url::Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint:?} is not a valid URL: {e}"))?;
    let host = url.host_str().ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if matches!(host, "localhost" | "127.0.0.1" | "[::1]") => {}
        "http" => return Err(format!("endpoint {endpoint:?} must use https:// (plain http:// only to localhost, 127.0.0.1 or [::1])")),
        other => return Err(format!("endpoint {endpoint:?} has scheme {other:?}; a push service URL starts with https://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint URL must not contain a user name or password".to_owned());
    }
    Ok(url)
}

/// Decodes base64url (also accepting the standard alphabet's `+` and `/`,
/// which hand-rolled `btoa` encodings produce) into exactly `N` bytes.
fn decode_fixed<const N: usize>(field: &str, value: &str) -> Result<[u8; N], String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    let normalized: String = value.chars().map(|c| match c {
        '+' => '-',
        '/' => '_',
        c => c,
    }).collect();
    let bytes = BASE64URL_ANY_PADDING.decode(normalized).map_err(|e| format!("{field} is not base64url: {e}"))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| format!("{field} must decode to {N} bytes, got {}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_alphabet_and_padding_are_accepted() {
        let bytes: Vec<u8> = (0..16).map(|i| 0xf0 | i).collect();
        let padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(padded.contains('/') || padded.contains('+') || padded.ends_with('='), "{padded}");
        assert_eq!(decode_fixed::<16>("auth", &padded).unwrap().to_vec(), bytes);
        let unpadded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(decode_fixed::<16>("auth", &unpadded).unwrap().to_vec(), bytes);
    }

    #[test]
    fn audience_keeps_a_non_default_port() {
        let url = parse_endpoint("http://127.0.0.1:8443/push/abc").unwrap();
        assert_eq!(url.origin().ascii_serialization(), "http://127.0.0.1:8443");
        let url = parse_endpoint("https://fcm.googleapis.com:443/fcm/send/x").unwrap();
        assert_eq!(url.origin().ascii_serialization(), "https://fcm.googleapis.com");
    }
}
