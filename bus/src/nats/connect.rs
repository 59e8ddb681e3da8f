//! Building a NATS connection from [`NatsConfig`].

use std::future::Future;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};

use crate::{BusError, NatsConfig};

/// Connects with the credentials and TLS settings of `cfg`; `on_event` sees
/// connection events (disconnect, reconnect, slow consumer). The client
/// reconnects forever (delay growing to 2 s) after the first connection.
///
/// # Errors
/// [`BusError::NatsConnect`] for inconsistent credentials, an unreadable
/// credentials file, no URL, or no server reachable within 5 s.
pub async fn connect<F, Fut>(cfg: &NatsConfig, on_event: F) -> Result<Client, BusError>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + Sync + 'static,
{
    let fail = |reason: String| BusError::NatsConnect { url: redacted_url(&cfg.url), reason };
    let mut opts = ConnectOptions::new()
        .name(&cfg.client_name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| Duration::from_millis((50 * attempts as u64).min(2_000)))
        .event_callback(on_event);
    match (&cfg.user, &cfg.password) {
        (Some(u), Some(p)) => opts = opts.user_and_password(u.clone(), p.clone()),
        (None, None) => {}
        _ => return Err(fail("nats.user and nats.password must be given together".into())),
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.clone());
    }
    if let Some(seed) = &cfg.nkey_seed {
        opts = opts.nkey(seed.clone());
    }
    if let Some(path) = &cfg.credentials_file {
        opts = opts.credentials_file(path).await.map_err(|e| fail(format!("credentials file {}: {e}", path.display())))?;
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if cfg.require_tls {
        opts = opts.require_tls(true);
    }
    let urls: Vec<String> = cfg.url.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    if urls.is_empty() {
        return Err(fail("no server URL".into()));
    }
    opts.connect(urls.as_slice()).await.map_err(|e| fail(e.to_string()))
}

/// `url` (one or several, comma separated) with any `user:password@` or
/// `token@` part replaced by `<redacted>@`, for logs and displays.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = one.split_once("://").map_or(("", one), |(s, r)| (s, r));
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let sep = if scheme.is_empty() { "" } else { "://" };
                    format!("{scheme}{sep}<redacted>@{}", &rest[at + 1..])
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits until the server has processed everything this connection sent so
/// far (subscriptions included): publishes to a fresh inbox subscription and
/// waits for the message to come back. `Client::flush` only flushes the
/// socket, which does not order us against other connections.
pub(crate) async fn round_trip(client: &Client) -> Result<(), String> {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
    client.publish(inbox, bytes::Bytes::new()).await.map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("connection closed during round trip".into()),
        Err(_) => Err("no answer from the server within 10 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(redacted_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted_url("nats://u:hunter2@h:4222"), "nats://<redacted>@h:4222");
        assert_eq!(redacted_url("tls://tok@h, nats://a:b@g:1"), "tls://<redacted>@h, nats://<redacted>@g:1");
        assert_eq!(redacted_url("u:p@h:4222"), "<redacted>@h:4222");
        assert_eq!(redacted_url("nats://h/x@y"), "nats://h/x@y");
    }
}
