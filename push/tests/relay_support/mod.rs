//! A local HTTP receiver for the relay tests, and helpers to build relays
//! and events.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use push::relay::{Relay, RelayConfig, RelaySettings};
use push::{ExternalEvent, HeaderPolicy, Registration, Target};
use storage_hooks::{EventKind, Flags, MailboxEvent, MailboxStatus, MessageSummary, UidSet};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// `X-Dormouse-Event`.
    pub event: String,
    /// `X-Dormouse-Event-Id`.
    pub event_id: String,
    /// `X-Dormouse-Delivery-Attempt`.
    pub attempt: u32,
    /// `X-Dormouse-Signature`.
    pub signature: String,
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The body as an external event.
    pub fn event(&self) -> ExternalEvent {
        ExternalEvent::from_json(&self.body).unwrap()
    }
}

/// How the receiver answers requests to one path.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 OK.
    Ok,
    /// `status` for the first `n` requests, then 200.
    FailTimes(usize, u16),
    /// Always `status`.
    Status(u16),
    /// 302 to `location`.
    Redirect(String),
    /// Waits this long, then 200.
    Slow(Duration),
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Received>>,
    behaviour: Mutex<HashMap<String, Behaviour>>,
    counts: Mutex<HashMap<String, usize>>,
}

/// An HTTP server on 127.0.0.1 recording every request.
#[derive(Clone)]
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Receiver {
    /// Starts a receiver on a free port (in the current runtime).
    pub async fn start() -> Receiver {
        let state = Arc::new(State::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move { handle(st, uri, headers, body).await }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, state }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sets how `path` answers.
    pub fn set(&self, path: &str, b: Behaviour) {
        self.state.behaviour.lock().unwrap().insert(path.to_owned(), b);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits (up to 20 s) until `path` got at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.requests_to(path);
            if got.len() >= n || start.elapsed() > Duration::from_secs(20) {
                assert!(got.len() >= n, "{path}: {} requests after 20 s, wanted {n}: {got:#?}", got.len());
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn handle(st: Arc<State>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    st.requests.lock().unwrap().push(Received {
        path: path.clone(),
        event: header("x-dormouse-event"),
        event_id: header("x-dormouse-event-id"),
        attempt: header("x-dormouse-delivery-attempt").parse().unwrap_or(0),
        signature: header("x-dormouse-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let n = {
        let mut counts = st.counts.lock().unwrap();
        let c = counts.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    let behaviour = st.behaviour.lock().unwrap().get(&path).cloned().unwrap_or(Behaviour::Ok);
    let code = |c: u16| StatusCode::from_u16(c).unwrap();
    match behaviour {
        Behaviour::Ok => StatusCode::OK.into_response(),
        Behaviour::FailTimes(times, status) if n <= times => code(status).into_response(),
        Behaviour::FailTimes(..) => StatusCode::NO_CONTENT.into_response(),
        Behaviour::Status(status) => code(status).into_response(),
        Behaviour::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Relay settings for tests: small backoff, short timeout.
pub fn test_config() -> RelayConfig {
    RelayConfig {
        timeout_ms: 2_000,
        max_attempts: 4,
        backoff_initial_ms: 20,
        backoff_max_ms: 100,
        ..RelayConfig::default()
    }
}

/// A relay on `state_dir` with `cfg`.
pub fn relay(state_dir: &Path, cfg: RelayConfig) -> Relay {
    Relay::new(&RelaySettings {
        relay: cfg,
        max_event_bytes: 3800,
        state_dir: state_dir.to_path_buf(),
        remember_delivered: false,
        webpush: push::web_push::WebPushConfig::default(),
    })
        .unwrap()
}

/// A webhook registration.
pub fn webhook(user: &str, url: &str, secret: &str, events: &[&str]) -> Registration {
    let events: Vec<String> = events.iter().map(|s| s.to_string()).collect();
    Registration::new(user, &events, Target::Webhook { url: url.into(), secret: secret.into() }).unwrap()
}

/// A new-mail event of `user` with UID `uid`.
pub fn new_mail(user: &str, uid: u32) -> ExternalEvent {
    let ev = MailboxEvent {
        kind: EventKind::MessageNew,
        user: user.into(),
        mailbox: "INBOX".into(),
        old_mailbox: None,
        uidvalidity: 1_700_000_000,
        uids: UidSet::from_range(uid, uid),
        flags: Flags::default(),
        status: MailboxStatus { messages: uid, unseen: uid, uidnext: uid + 1, highestmodseq: u64::from(uid), ..Default::default() },
        modseq_before: u64::from(uid) - 1,
        modseq_after: u64::from(uid),
        summary: Some(MessageSummary { from: "Bob <bob@example.org>".into(), subject: format!("message {uid}"), snippet: "hello".into() }),
        timestamp_ms: 1_764_079_200_000 + u64::from(uid),
    };
    ExternalEvent::from_mailbox_event(&ev, &HeaderPolicy::default()).remove(0)
}

/// Now in UNIX seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Waits (up to 20 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The dead-letter log's lines as JSON.
pub fn dead_letters(relay: &Relay) -> Vec<serde_json::Value> {
    push::relay::dead_letter::read_tail(relay.dead_letter_path(), usize::MAX)
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
