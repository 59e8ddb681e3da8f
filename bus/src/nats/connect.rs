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
    let fail = |reason: String| BusError::NatsConnect { url: cfg.url.clone(), reason };
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
