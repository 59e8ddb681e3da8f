//! Sends one event to one Web Push subscription: RFC 8291 encryption, RFC
//! 8292 VAPID authorization, RFC 8030 delivery, and the push service's
//! answer mapped to an [`AttemptOutcome`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::relay::AttemptOutcome;
use crate::web_push::subscription::Subscription;
use crate::web_push::vapid::VapidSigner;
use crate::web_push::{WebPushConfig, WebPushError};
use crate::ExternalEventKind;

/// Body size every push service must accept (RFC 8291 §4: one record of
/// at most 4096 octets, header included).
pub const MAX_ENCRYPTED_BYTES: usize = 4096;

/// Largest payload [`WebPushSender::send`] encrypts. The `ece` crate pads
/// the plaintext (plus its one-byte delimiter) to a multiple of 128 bytes
/// inside a single record: 86 bytes of header (salt, record size, key id)
/// + 31 × 128 bytes + 16 bytes of AEAD tag = 4070 ≤ 4096. One byte more
///   would need a 32nd block and a second record, which push services refuse.
///   `[push] max_event_bytes` (3800 by default) stays below it.
pub const MAX_PAYLOAD_BYTES: usize = 31 * 128 - 1;

/// Longest excerpt of a push service's error body kept in a reason.
const REASON_BODY_MAX: usize = 200;

/// File name of the VAPID key under the relay's state directory when
/// `[push.webpush] vapid_key_file` is empty.
pub const DEFAULT_VAPID_KEY_FILE: &str = "vapid-private.pem";

/// RFC 8030 §5.3 `Urgency`: how soon the push service should wake the
/// device (battery against latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Wake only on power and Wi-Fi.
    VeryLow,
    /// Wake on power or Wi-Fi.
    Low,
    /// Wake unless the battery is low.
    Normal,
    /// Wake at once, even on low battery.
    High,
}

impl Urgency {
    /// The header value, e.g. `"normal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }

    /// The urgency for an external-event JSON payload: `high` for
    /// `MessageNew` (a person is waiting for the mail), `normal` for
    /// everything else (flag, expunge and mailbox changes only keep a
    /// client's view in sync), and `normal` for payloads that are not an
    /// event.
    pub fn for_event_json(payload: &[u8]) -> Urgency {
        /// Only the field we need; serde skips the rest.
        #[derive(Deserialize)]
        struct EventName {
            event: Option<ExternalEventKind>,
        }
        match serde_json::from_slice::<EventName>(payload) {
            Ok(EventName { event: Some(ExternalEventKind::MessageNew) }) => Urgency::High,
            _ => Urgency::Normal,
        }
    }
}

/// Encrypts and sends events to Web Push subscriptions.
#[derive(Debug)]
pub struct WebPushSender {
    vapid: VapidSigner,
    ttl_secs: u32,
    http: reqwest::Client,
}

impl WebPushSender {
    /// A sender with the VAPID key from `cfg.vapid_key_file` (empty means
    /// `<state_dir>/vapid-private.pem`), created on first use, and `http`
    /// for the requests (the caller sets timeouts and disables redirects).
    ///
    /// # Errors
    /// [`WebPushError`] for an unreadable or invalid key file, a key file
    /// that cannot be created, or an invalid `subject`.
    pub fn new(cfg: &WebPushConfig, state_dir: &Path, http: reqwest::Client) -> Result<WebPushSender, WebPushError> {
        let path = vapid_key_path(cfg, state_dir);
        let vapid = VapidSigner::load_or_create(&path, &cfg.subject)?;
        Ok(WebPushSender { vapid, ttl_secs: cfg.ttl_secs, http })
    }

    /// The VAPID public key: base64url of the uncompressed P-256 point, what
    /// a web app passes as `applicationServerKey` to `pushManager.subscribe`.
    pub fn vapid_public_key(&self) -> String {
        self.vapid.public_key().to_owned()
    }

    /// Sends `payload` (an external event's JSON, at most
    /// [`MAX_PAYLOAD_BYTES`]) to one subscription, with `Urgency` from
    /// [`Urgency::for_event_json`].
    ///
    /// Outcomes: 2xx `Delivered`; 404/410 `Gone`; 408, 429, 5xx, timeouts
    /// and connection errors `Retry` (with the `Retry-After` the service
    /// sent); 413, redirects, other 4xx, an invalid subscription or an
    /// oversized payload `Permanent`.
    pub async fn send(&self, endpoint: &str, p256dh: &str, auth: &str, payload: &[u8]) -> AttemptOutcome {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return AttemptOutcome::Permanent {
                reason: format!(
                    "payload of {} bytes is above the Web Push limit of {MAX_PAYLOAD_BYTES} bytes (one {MAX_ENCRYPTED_BYTES}-byte encrypted record, RFC 8291)",
                    payload.len()
                ),
            };
        }
        let sub = match Subscription::parse(endpoint, p256dh, auth) {
            Ok(sub) => sub,
            Err(e) => return AttemptOutcome::Permanent { reason: format!("invalid Web Push subscription: {e}") },
        };
        let body = match ece::encrypt(&sub.p256dh, &sub.auth, payload) {
            Ok(body) => body,
            Err(e) => return AttemptOutcome::Permanent { reason: format!("Web Push encryption failed: {e}") },
        };
        if body.len() > MAX_ENCRYPTED_BYTES {
            return AttemptOutcome::Permanent {
                reason: format!("encrypted Web Push body of {} bytes is above the {MAX_ENCRYPTED_BYTES}-byte limit", body.len()),
            };
        }
        let urgency = Urgency::for_event_json(payload);
        let request = self
            .http
            .post(sub.endpoint.clone())
            .header("TTL", self.ttl_secs.to_string())
            .header("Urgency", urgency.as_str())
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(AUTHORIZATION, self.vapid.authorization(&sub.audience))
            .body(body);
        match request.send().await {
            Ok(response) => outcome_of_response(&sub.audience, response).await,
            Err(e) => outcome_of_error(&sub.audience, &e),
        }
    }
}

/// Where the VAPID key lives for this configuration.
pub fn vapid_key_path(cfg: &WebPushConfig, state_dir: &Path) -> std::path::PathBuf {
    if cfg.vapid_key_file.as_os_str().is_empty() {
        state_dir.join(DEFAULT_VAPID_KEY_FILE)
    } else {
        cfg.vapid_key_file.clone()
    }
}

async fn outcome_of_response(origin: &str, mut response: reqwest::Response) -> AttemptOutcome {
    let status = response.status();
    if status.is_success() {
        return AttemptOutcome::Delivered { status: status.as_u16() };
    }
    let retry_after = retry_after(response.headers());
    let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let excerpt = body_excerpt(&mut response).await;
    let said = if excerpt.is_empty() { String::new() } else { format!(": {excerpt}") };
    let reason = format!("push service {origin} answered {status}{said}");
    match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => AttemptOutcome::Gone { reason },
        StatusCode::PAYLOAD_TOO_LARGE => AttemptOutcome::Permanent { reason: format!("{reason} (payload too large)") },
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => AttemptOutcome::Retry { reason, retry_after },
        s if s.is_server_error() => AttemptOutcome::Retry { reason, retry_after },
        s if s.is_redirection() => AttemptOutcome::Permanent {
            reason: format!("{reason} (redirect to {}; push endpoints are not followed)", location.as_deref().unwrap_or("nowhere")),
        },
        _ => AttemptOutcome::Permanent { reason },
    }
}

fn outcome_of_error(origin: &str, e: &reqwest::Error) -> AttemptOutcome {
    // The error's own Display names the full endpoint URL, whose path is a
    // bearer capability: the reason names the origin and the root cause only.
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let reason = if detail.is_empty() { format!("push service {origin}: {what}") } else { format!("push service {origin}: {what}: {detail}") };
    if e.is_builder() {
        AttemptOutcome::Permanent { reason }
    } else {
        AttemptOutcome::Retry { reason, retry_after: None }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The start of an error body, one line of printable text, for the reason.
async fn body_excerpt(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < REASON_BODY_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(REASON_BODY_MAX)]).into_owned();
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_payload_fits_one_record() {
        let (keys, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        let public = keys.pub_as_raw().unwrap();
        let body = ece::encrypt(&public, &auth, &[b'x'; MAX_PAYLOAD_BYTES]).unwrap();
        assert!(body.len() <= MAX_ENCRYPTED_BYTES, "{}", body.len());
        let over = ece::encrypt(&public, &auth, &[b'x'; MAX_PAYLOAD_BYTES + 1]).unwrap();
        assert!(over.len() > MAX_ENCRYPTED_BYTES, "{}", over.len());
    }

    #[test]
    fn urgency_is_high_only_for_new_mail() {
        assert_eq!(Urgency::for_event_json(br#"{"version":1,"event":"MessageNew"}"#), Urgency::High);
        assert_eq!(Urgency::for_event_json(br#"{"event":"FlagsSet","x":[1]}"#), Urgency::Normal);
        assert_eq!(Urgency::for_event_json(b"not json"), Urgency::Normal);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "17".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(17)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
