//! One webhook request and what its answer means.
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! User-Agent: dormouse-push-relay/<version>
//! X-Dormouse-Event: MessageNew
//! X-Dormouse-Event-Id: 4f1c0a9e3b2d8c7f6e5a4b3c2d1e0f9a
//! X-Dormouse-Delivery-Attempt: 1
//! X-Dormouse-Signature: t=1764079200,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//!
//! <the external event JSON, at most push.max_event_bytes>
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::signature::{signature_header, SIGNATURE_HEADER};
use super::AttemptOutcome;

/// Header naming the event type.
pub const EVENT_HEADER: &str = "X-Dormouse-Event";
/// Header carrying the event id (stable across retries and redeliveries).
pub const EVENT_ID_HEADER: &str = "X-Dormouse-Event-Id";
/// Header counting the attempts of this delivery (1 = first).
pub const ATTEMPT_HEADER: &str = "X-Dormouse-Delivery-Attempt";

/// Most answer body bytes read (to keep the connection reusable); the rest
/// is dropped with the connection.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The HTTP client of the relay: rustls, no redirects followed, the
/// per-request timeout of `[push.relay] timeout_ms`.
///
/// # Errors
/// The client cannot be built (TLS set-up).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("dormouse-push-relay/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What one webhook request carries besides the URL and secret.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// RFC 5423 event name.
    pub event_name: &'a str,
    /// The event id.
    pub event_id: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The JSON body.
    pub body: &'a [u8],
}

/// Sends one signed webhook and classifies the result.
pub async fn send_webhook(
    http: &reqwest::Client,
    url: &url::Url,
    secret: &[u8],
    req: WebhookRequest<'_>,
) -> AttemptOutcome {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(EVENT_HEADER, req.event_name.to_owned());
    put(EVENT_ID_HEADER, req.event_id.to_owned());
    put(ATTEMPT_HEADER, req.attempt.to_string());
    put(SIGNATURE_HEADER, signature_header(secret, now, req.body));
    let sent = http.post(url.clone()).headers(headers).body(req.body.to_vec()).send().await;
    match sent {
        Ok(mut resp) => {
            let status = resp.status();
            let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(super::super::registration::display_url);
            // Read a bounded part of the answer so the connection can be reused.
            let mut read = 0usize;
            while read < MAX_ANSWER_BYTES {
                match resp.chunk().await {
                    Ok(Some(c)) => read += c.len(),
                    _ => break,
                }
            }
            classify_status(status, retry_after, location.as_deref())
        }
        Err(e) => classify_error(&e.without_url()),
    }
}

/// Maps an HTTP status to an outcome: 2xx delivered; 408, 429 and 5xx
/// retried (after `retry_after` if given); redirects and other 4xx permanent.
pub fn classify_status(status: StatusCode, retry_after: Option<Duration>, location: Option<&str>) -> AttemptOutcome {
    let code = status.as_u16();
    let text = format!("HTTP {code} {}", status.canonical_reason().unwrap_or(""));
    let text = text.trim_end().to_owned();
    if status.is_success() {
        AttemptOutcome::Delivered { status: code }
    } else if status.is_redirection() {
        let to = location.map(|l| format!(" to {l}")).unwrap_or_default();
        AttemptOutcome::Permanent { reason: format!("{text}: redirect{to} not followed (register the final URL)") }
    } else if code == 408 || code == 429 || status.is_server_error() {
        AttemptOutcome::Retry { reason: text, retry_after }
    } else {
        AttemptOutcome::Permanent { reason: text }
    }
}

/// Maps a transport error (already stripped of its URL) to a retry.
fn classify_error(e: &reqwest::Error) -> AttemptOutcome {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The source chain says why (refused, DNS, TLS); URLs were removed.
    let mut reason = what.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    AttemptOutcome::Retry { reason, retry_after: None }
}

/// Parses `Retry-After`: seconds, or an HTTP date (time from now; a past
/// date means no wait).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify_status(s(204), None, None), AttemptOutcome::Delivered { status: 204 });
        for c in [500, 502, 503, 408, 429] {
            assert!(matches!(classify_status(s(c), None, None), AttemptOutcome::Retry { .. }), "{c}");
        }
        let r = classify_status(s(503), Some(Duration::from_secs(7)), None);
        assert_eq!(r, AttemptOutcome::Retry { reason: "HTTP 503 Service Unavailable".into(), retry_after: Some(Duration::from_secs(7)) });
        for c in [400, 401, 404, 410, 413] {
            assert!(matches!(classify_status(s(c), None, None), AttemptOutcome::Permanent { .. }), "{c}");
        }
        match classify_status(s(302), None, Some("http://elsewhere/")) {
            AttemptOutcome::Permanent { reason } => assert!(reason.contains("302") && reason.contains("not followed"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let wait = parse_retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
