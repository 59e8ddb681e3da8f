//! Web Push end to end against a local push service: an HTTP server on
//! 127.0.0.1 that holds the user agent's keys, checks the VAPID
//! `Authorization` header (signature, `aud`, `exp`, `sub`), the
//! `Content-Encoding`, `TTL` and `Urgency` headers, and decrypts the body
//! (RFC 8291, with the `ece` crate) before it answers.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use push::relay::AttemptOutcome;
use push::web_push::{validate_subscription, WebPushConfig, WebPushSender, MAX_ENCRYPTED_BYTES, MAX_PAYLOAD_BYTES};
use push::{ExternalEvent, ExternalEventKind, PushConfig, EXTERNAL_EVENT_VERSION};

const SUBJECT: &str = "mailto:postmaster@mail.example.org";
const TTL_SECS: u32 = 3600;

/// What the push service answers next.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// One message the push service accepted and decrypted.
#[derive(Debug, Clone)]
struct Received {
    plaintext: Vec<u8>,
    urgency: String,
}

/// The local push service: the user agent's key pair and auth secret, the
/// VAPID key it expects, and what it received.
struct PushService {
    keys: ece::EcKeyComponents,
    auth: [u8; 16],
    origin: String,
    vapid_key: Mutex<Option<String>>,
    reply: Mutex<Reply>,
    received: Mutex<Vec<Received>>,
}

/// A running push service and the subscription a browser would hand out.
struct Fixture {
    service: Arc<PushService>,
    endpoint: String,
    p256dh: String,
    auth: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let (key_pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let service = Arc::new(PushService {
            keys: key_pair.raw_components().unwrap(),
            auth,
            origin: origin.clone(),
            vapid_key: Mutex::new(None),
            reply: Mutex::new(Reply { status: 201, headers: Vec::new(), body: String::new() }),
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new().route("/push/{id}", post(receive)).with_state(Arc::clone(&service));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fixture {
            service,
            endpoint: format!("{origin}/push/subscription-1"),
            p256dh: URL_SAFE_NO_PAD.encode(key_pair.pub_as_raw().unwrap()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        }
    }

    /// A sender whose VAPID key the push service then expects.
    fn sender(&self, state_dir: &Path) -> WebPushSender {
        let cfg = WebPushConfig { subject: SUBJECT.into(), ttl_secs: TTL_SECS, ..WebPushConfig::default() };
        let sender = WebPushSender::new(&cfg, state_dir, http_client()).unwrap();
        *self.service.vapid_key.lock().unwrap() = Some(sender.vapid_public_key());
        sender
    }

    fn reply_with(&self, status: u16, headers: Vec<(&'static str, String)>, body: &str) {
        *self.service.reply.lock().unwrap() = Reply { status, headers, body: body.into() };
    }

    async fn send(&self, sender: &WebPushSender, payload: &[u8]) -> AttemptOutcome {
        sender.send(&self.endpoint, &self.p256dh, &self.auth, payload).await
    }

    fn received(&self) -> Vec<Received> {
        self.service.received.lock().unwrap().clone()
    }
}

/// How the relay builds its client: timeouts, no redirects.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The push service's handler: checks everything a real one checks, and
/// answers 400 with the reason when something is wrong (so the sender's
/// outcome names it), else decrypts, records, and sends the scripted reply.
async fn receive(State(service): State<Arc<PushService>>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap, String) {
    let checked = check_request(&service, &headers, &body);
    match checked {
        Err(reason) => (StatusCode::BAD_REQUEST, HeaderMap::new(), format!("push service check failed: {reason}")),
        Ok(received) => {
            service.received.lock().unwrap().push(received);
            let reply = service.reply.lock().unwrap().clone();
            let mut out = HeaderMap::new();
            for (name, value) in reply.headers {
                out.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
            }
            (StatusCode::from_u16(reply.status).unwrap(), out, reply.body)
        }
    }
}

fn check_request(service: &PushService, headers: &HeaderMap, body: &[u8]) -> Result<Received, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or_else(|| format!("missing header {name}"));
    if header("content-encoding")? != "aes128gcm" {
        return Err("Content-Encoding is not aes128gcm".into());
    }
    if header("ttl")? != TTL_SECS.to_string() {
        return Err(format!("TTL {} instead of {TTL_SECS}", header("ttl")?));
    }
    let urgency = header("urgency")?.to_owned();
    if !["very-low", "low", "normal", "high"].contains(&urgency.as_str()) {
        return Err(format!("bad Urgency {urgency:?}"));
    }
    let expected_key = service.vapid_key.lock().unwrap().clone().ok_or("no VAPID key expected yet")?;
    check_vapid(header("authorization")?, &expected_key, &service.origin)?;
    if body.len() > MAX_ENCRYPTED_BYTES {
        return Err(format!("body of {} bytes is above 4096", body.len()));
    }
    let plaintext = ece::decrypt(&service.keys, &service.auth, body).map_err(|e| format!("cannot decrypt: {e}"))?;
    Ok(Received { plaintext, urgency })
}

/// RFC 8292: `vapid t=<JWT>, k=<key>`; the JWT is ES256, signed by `k`,
/// with `aud` = our origin, `exp` in the next 24 hours, and `sub`.
fn check_vapid(authorization: &str, expected_key: &str, origin: &str) -> Result<(), String> {
    let rest = authorization.strip_prefix("vapid ").ok_or("Authorization scheme is not vapid")?;
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => token = Some(v),
            Some(("k", v)) => key = Some(v),
            _ => return Err(format!("unexpected Authorization part {part:?}")),
        }
    }
    let (token, key) = (token.ok_or("no t=")?, key.ok_or("no k=")?);
    if key != expected_key {
        return Err("k= is not the sender's VAPID public key".into());
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else { return Err("JWT does not have three parts".into()) };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("JWT part is not base64url: {e}"));
    let header: serde_json::Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "ES256" {
        return Err(format!("JWT alg {}", header["alg"]));
    }
    let verifying_key = VerifyingKey::from_sec1_bytes(&decode(key)?).map_err(|_| "k= is not a P-256 point")?;
    let signature = Signature::from_slice(&decode(signature)?).map_err(|_| "JWT signature is not 64 bytes")?;
    let signing_input = &token[..token.rfind('.').unwrap()];
    verifying_key.verify(signing_input.as_bytes(), &signature).map_err(|_| "JWT signature does not verify with k=")?;
    let claims: serde_json::Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    if claims["aud"] != origin {
        return Err(format!("aud {} is not {origin}", claims["aud"]));
    }
    if claims["sub"] != SUBJECT {
        return Err(format!("sub {}", claims["sub"]));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let exp = claims["exp"].as_u64().ok_or("exp is not a number")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within 24 hours of now ({now})"));
    }
    Ok(())
}

fn new_mail_event() -> ExternalEvent {
    ExternalEvent {
        version: EXTERNAL_EVENT_VERSION,
        id: "4f1c0a9e3b2d8c7f6e5a4b3c2d1e0f9a".into(),
        event: ExternalEventKind::MessageNew,
        user: "alice".into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1_700_000_000,
        uids: "7".into(),
        uid_count: 1,
        flags: Vec::new(),
        messages: 7,
        unseen: 2,
        uidnext: 8,
        highestmodseq: 31,
        timestamp_ms: 1_764_079_200_000,
        from: Some("Bob Müller <bob@example.org>".into()),
        subject: Some("Lunch? 🍜".into()),
        snippet: Some("Are you free at noon".into()),
        truncated: false,
    }
}

#[tokio::test]
async fn new_mail_arrives_decrypted_intact() {
    let fx = Fixture::start().await;
    let state = tempfile::tempdir().unwrap();
    let sender = fx.sender(state.path());
    let event = new_mail_event();
    let payload = event.to_json_bounded(PushConfig::default().max_event_bytes);
    let outcome = fx.send(&sender, &payload).await;
    assert_eq!(outcome, AttemptOutcome::Delivered { status: 201 });
    let received = fx.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].plaintext, payload);
    assert_eq!(ExternalEvent::from_json(&received[0].plaintext).unwrap(), event);
    assert_eq!(received[0].urgency, "high", "MessageNew goes out with Urgency: high");

    // Other events go out with normal urgency, and a 2xx other than 201 is delivered too.
    fx.reply_with(202, Vec::new(), "");
    let mut flags = new_mail_event();
    flags.event = ExternalEventKind::FlagsSet;
    flags.flags = vec!["\\Seen".into()];
    let outcome = fx.send(&sender, &flags.to_json()).await;
    assert_eq!(outcome, AttemptOutcome::Delivered { status: 202 });
    assert_eq!(fx.received()[1].urgency, "normal");
}

#[tokio::test]
async fn oversized_event_goes_out_truncated_and_decrypts() {
    let fx = Fixture::start().await;
    let state = tempfile::tempdir().unwrap();
    let sender = fx.sender(state.path());
    let mut event = new_mail_event();
    // Multi-byte text (cut on a character boundary). No `"` or `\` here:
    // `to_json_bounded` sizes the cut by the escaping cost of the whole
    // field, so a long quote-heavy snippet is cut to nothing (reported).
    let huge = "Grüße aus Köln – bis später! ".repeat(2000);
    event.snippet = Some(huge.clone());
    let max = PushConfig::default().max_event_bytes;
    let payload = event.to_json_bounded(max);
    assert!(payload.len() <= max && payload.len() <= MAX_PAYLOAD_BYTES, "{}", payload.len());

    let outcome = fx.send(&sender, &payload).await;
    assert_eq!(outcome, AttemptOutcome::Delivered { status: 201 });
    let received = fx.received();
    assert_eq!(received.len(), 1, "the event is sent, not dropped");
    let back = ExternalEvent::from_json(&received[0].plaintext).unwrap();
    assert!(back.truncated);
    assert_eq!(back.id, event.id);
    let snippet = back.snippet.unwrap();
    assert!(!snippet.is_empty() && snippet.len() < huge.len() && huge.starts_with(&snippet), "{}", snippet.len());
    assert_eq!(back.subject, event.subject);
}

#[tokio::test]
async fn payload_above_the_limit_is_refused_before_sending() {
    let fx = Fixture::start().await;
    let state = tempfile::tempdir().unwrap();
    let sender = fx.sender(state.path());
    // The largest payload still fits one record and decrypts.
    let largest = vec![b'a'; MAX_PAYLOAD_BYTES];
    assert_eq!(fx.send(&sender, &largest).await, AttemptOutcome::Delivered { status: 201 });
    assert_eq!(fx.received()[0].plaintext, largest);
    let outcome = fx.send(&sender, &vec![b'a'; MAX_PAYLOAD_BYTES + 1]).await;
    match outcome {
        AttemptOutcome::Permanent { reason } => assert!(reason.contains("limit") && reason.contains(&MAX_PAYLOAD_BYTES.to_string()), "{reason}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert_eq!(fx.received().len(), 1, "nothing was sent");
}

#[tokio::test]
async fn push_service_answers_map_to_outcomes() {
    let fx = Fixture::start().await;
    let state = tempfile::tempdir().unwrap();
    let sender = fx.sender(state.path());
    let payload = new_mail_event().to_json();

    fx.reply_with(410, Vec::new(), "subscription expired");
    match fx.send(&sender, &payload).await {
        AttemptOutcome::Gone { reason } => assert!(reason.contains("410") && reason.contains("subscription expired"), "{reason}"),
        other => panic!("410: {other:?}"),
    }
    fx.reply_with(404, Vec::new(), "");
    assert!(matches!(fx.send(&sender, &payload).await, AttemptOutcome::Gone { .. }));

    fx.reply_with(500, Vec::new(), "oops");
    match fx.send(&sender, &payload).await {
        AttemptOutcome::Retry { reason, retry_after } => {
            assert!(reason.contains("500"), "{reason}");
            assert_eq!(retry_after, None);
        }
        other => panic!("500: {other:?}"),
    }
    fx.reply_with(429, vec![("retry-after", "42".into())], "slow down");
    assert_eq!(
        fx.send(&sender, &payload).await,
        AttemptOutcome::Retry { reason: format!("push service {} answered 429 Too Many Requests: slow down", fx.service.origin), retry_after: Some(Duration::from_secs(42)) }
    );
    fx.reply_with(503, vec![("retry-after", httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(300)))], "");
    match fx.send(&sender, &payload).await {
        AttemptOutcome::Retry { retry_after: Some(d), .. } => assert!(d > Duration::from_secs(200) && d <= Duration::from_secs(300), "{d:?}"),
        other => panic!("503 with a date: {other:?}"),
    }
    fx.reply_with(413, Vec::new(), "");
    match fx.send(&sender, &payload).await {
        AttemptOutcome::Permanent { reason } => assert!(reason.contains("too large"), "{reason}"),
        other => panic!("413: {other:?}"),
    }
    fx.reply_with(301, vec![("location", "https://elsewhere.example/".into())], "");
    match fx.send(&sender, &payload).await {
        AttemptOutcome::Permanent { reason } => assert!(reason.contains("redirect") && reason.contains("elsewhere.example"), "{reason}"),
        other => panic!("301: {other:?}"),
    }
    fx.reply_with(403, Vec::new(), "{\"reason\":\"VAPID key mismatch\"}");
    match fx.send(&sender, &payload).await {
        AttemptOutcome::Permanent { reason } => assert!(reason.contains("403") && reason.contains("VAPID key mismatch"), "{reason}"),
        other => panic!("403: {other:?}"),
    }
    // Every one of these requests passed the service's checks and decrypted.
    assert_eq!(fx.received().len(), 8);
    assert!(fx.received().iter().all(|r| r.plaintext == payload));
}

#[tokio::test]
async fn unreachable_service_is_retried() {
    let fx = Fixture::start().await;
    let state = tempfile::tempdir().unwrap();
    let sender = fx.sender(state.path());
    // A port with nothing listening: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let outcome = sender.send(&format!("http://127.0.0.1:{port}/push/x"), &fx.p256dh, &fx.auth, b"{}").await;
    match outcome {
        AttemptOutcome::Retry { reason, retry_after: None } => assert!(reason.contains("connection failed"), "{reason}"),
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_subscription_is_not_sent() {
    let fx = Fixture::start().await;
    let state = tempfile::tempdir().unwrap();
    let sender = fx.sender(state.path());
    let outcome = sender.send(&fx.endpoint, &fx.p256dh, "c2hvcnQ", b"{}").await;
    match outcome {
        AttemptOutcome::Permanent { reason } => assert!(reason.contains("auth must decode to 16 bytes"), "{reason}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(fx.received().is_empty());
}

#[test]
fn validate_subscription_accepts_browser_subscriptions() {
    let (key_pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
    let point = key_pair.pub_as_raw().unwrap();
    let p256dh = URL_SAFE_NO_PAD.encode(&point);
    let auth_b64 = URL_SAFE_NO_PAD.encode(auth);
    validate_subscription("https://fcm.googleapis.com/fcm/send/abc:def", &p256dh, &auth_b64).unwrap();
    validate_subscription("http://localhost:8080/push/1", &p256dh, &auth_b64).unwrap();
    validate_subscription("http://127.0.0.1:9/push/1", &p256dh, &auth_b64).unwrap();
    let padded = base64::engine::general_purpose::URL_SAFE;
    validate_subscription("https://updates.push.services.mozilla.com/wpush/v2/x", &padded.encode(&point), &padded.encode(auth)).unwrap();
}

#[test]
fn validate_subscription_rejects_bad_input_clearly() {
    let (key_pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
    let point = key_pair.pub_as_raw().unwrap();
    let p256dh = URL_SAFE_NO_PAD.encode(&point);
    let auth_b64 = URL_SAFE_NO_PAD.encode(auth);
    let url = "https://push.example.net/sub/1";
    let err = |endpoint: &str, p256dh: &str, auth: &str| validate_subscription(endpoint, p256dh, auth).unwrap_err();

    assert!(err("not a url", &p256dh, &auth_b64).contains("not a valid URL"));
    assert!(err("ftp://push.example.net/x", &p256dh, &auth_b64).contains("https://"));
    assert!(err("http://push.example.net/x", &p256dh, &auth_b64).contains("must use https://"));
    assert!(err("https://user:pw@push.example.net/x", &p256dh, &auth_b64).contains("user name or password"));
    assert!(err(&format!("https://push.example.net/{}", "a".repeat(3000)), &p256dh, &auth_b64).contains("at most"));

    let short = URL_SAFE_NO_PAD.encode(&point[..64]);
    assert!(err(url, &short, &auth_b64).contains("p256dh must decode to 65 bytes, got 64"));
    let compressed_len = URL_SAFE_NO_PAD.encode(&point[..33]);
    assert!(err(url, &compressed_len, &auth_b64).contains("65 bytes"));
    let mut not_uncompressed = point.clone();
    not_uncompressed[0] = 0x02;
    assert!(err(url, &URL_SAFE_NO_PAD.encode(&not_uncompressed), &auth_b64).contains("uncompressed"));
    let mut off_curve = point.clone();
    off_curve[64] ^= 0x01;
    assert!(err(url, &URL_SAFE_NO_PAD.encode(&off_curve), &auth_b64).contains("not a point on the P-256 curve"));
    assert!(err(url, "***", &auth_b64).contains("p256dh is not base64url"));

    assert!(err(url, &p256dh, &URL_SAFE_NO_PAD.encode(&auth[..15])).contains("auth must decode to 16 bytes, got 15"));
    assert!(err(url, &p256dh, "!!!!").contains("auth is not base64url"));
    assert!(err(url, &p256dh, "").contains("auth is empty"));
}

#[test]
fn vapid_key_is_created_once_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("push");
    let cfg = WebPushConfig::default();
    let first = WebPushSender::new(&cfg, &state_dir, http_client()).unwrap();
    let path = state_dir.join("vapid-private.pem");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    let second = WebPushSender::new(&cfg, &state_dir, http_client()).unwrap();
    assert_eq!(first.vapid_public_key(), second.vapid_public_key());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem, "the key file is not rewritten");
    let key = URL_SAFE_NO_PAD.decode(first.vapid_public_key()).unwrap();
    assert_eq!((key.len(), key[0]), (65, 0x04), "applicationServerKey is an uncompressed point");
    let leftovers: Vec<_> = std::fs::read_dir(&state_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["vapid-private.pem"], "no temp files left behind");

    // An explicit vapid_key_file is used (and made) instead of the state dir's.
    let explicit = WebPushConfig { vapid_key_file: state.path().join("keys/vapid.pem"), ..WebPushConfig::default() };
    let third = WebPushSender::new(&explicit, &state_dir, http_client()).unwrap();
    assert!(state.path().join("keys/vapid.pem").exists());
    assert_ne!(third.vapid_public_key(), first.vapid_public_key());
    assert_eq!(WebPushSender::new(&explicit, Path::new("/nonexistent"), http_client()).unwrap().vapid_public_key(), third.vapid_public_key());
}

#[test]
fn invalid_key_file_gives_a_clear_error() {
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("vapid-private.pem");
    let cfg = WebPushConfig::default();

    std::fs::write(&path, "hello, not a key\n").unwrap();
    let msg = WebPushSender::new(&cfg, state.path(), http_client()).unwrap_err().to_string();
    assert!(msg.contains("invalid VAPID key file") && msg.contains(&path.display().to_string()) && msg.contains("no PEM"), "{msg}");

    std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let msg = WebPushSender::new(&cfg, state.path(), http_client()).unwrap_err().to_string();
    assert!(msg.contains("invalid VAPID key file") && msg.contains("PKCS#8"), "{msg}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "a bad key is never overwritten");

    // Unreadable: a directory where the file should be.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let msg = WebPushSender::new(&cfg, state.path(), http_client()).unwrap_err().to_string();
    assert!(msg.contains("cannot read VAPID key file"), "{msg}");

    let bad_subject = WebPushConfig { subject: "postmaster@example.org".into(), ..WebPushConfig::default() };
    let msg = WebPushSender::new(&bad_subject, state.path(), http_client()).unwrap_err().to_string();
    assert!(msg.contains("mailto:"), "{msg}");
}
