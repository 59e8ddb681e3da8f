//! The master's plaintext proxy for TLS 1.2 sessions handed to a worker.
//!
//! A TLS 1.3 session's state moves to the worker (`tls_handover`); a TLS 1.2
//! one cannot (the record layer the workers run is TLS 1.3 only). So, like
//! Dovecot's `imap-login` proxying for `imap`, the master keeps such a TLS
//! connection after login and hands the worker one end of a UNIX stream
//! socket pair; this task copies decrypted bytes between the TLS stream and
//! the other end.
//!
//! Shutdown: when the worker closes its end (LOGOUT, timeout, worker
//! death), the TLS side gets `close_notify` and is closed after a short grace
//! period for the client's own close; when the client closes, the worker's
//! end gets EOF and the session ends there.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

/// How long the proxy waits for the client to close after the worker did.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Bytes moved by a finished proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyTotals {
    /// Client to worker.
    pub to_worker: u64,
    /// Worker to client.
    pub to_client: u64,
    /// True if a restart closed the session with a BYE of its own.
    pub retired: bool,
}

/// Copies between the client's TLS stream and the worker's socket until
/// both sides are done; see the module docs for the close rules. Once
/// `stopping` is true the proxy does not wait for the client's close after
/// the worker side closed (the server is going away). When `retire` turns
/// true (a restart: this master leaves, and a session relayed by it cannot
/// move) the proxy stops relaying the worker's side, sends the client
/// [`super::session_driver::RESTART_BYE`] and closes ([`ProxyTotals::retired`]).
pub async fn run<S>(
    tls: S,
    worker: UnixStream,
    mut stopping: watch::Receiver<bool>,
    mut retire: watch::Receiver<bool>,
) -> ProxyTotals
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let (mut worker_read, mut worker_write) = worker.into_split();
    let mut totals = ProxyTotals::default();
    let mut retire_wait = retire.clone();
    {
        let to_worker = &mut totals.to_worker;
        let upstream = async {
            let mut buf = vec![0u8; 8 * 1024];
            loop {
                match tls_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if worker_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        *to_worker += n as u64;
                    }
                }
            }
            let _ = worker_write.shutdown().await;
        };
        let to_client = &mut totals.to_client;
        let retired = &mut totals.retired;
        let downstream = async {
            let mut buf = vec![0u8; 8 * 1024];
            loop {
                let read = tokio::select! {
                    read = worker_read.read(&mut buf) => read,
                    () = super::shutdown::stopped(&mut retire) => {
                        let _ = tls_write.write_all(super::session_driver::RESTART_BYE).await;
                        *retired = true;
                        break;
                    }
                };
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tls_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        *to_client += n as u64;
                    }
                }
            }
            // Sends close_notify and FIN.
            let _ = tls_write.shutdown().await;
        };
        tokio::pin!(upstream);
        tokio::pin!(downstream);
        tokio::select! {
            () = &mut upstream => {
                // Client is done sending; let the worker finish its answers.
                downstream.await;
            }
            () = &mut downstream => {
                // Worker is done; give the client a moment to close cleanly.
                tokio::select! {
                    _ = tokio::time::timeout(CLOSE_GRACE, upstream) => {}
                    () = super::shutdown::stopped(&mut stopping) => {}
                    () = super::shutdown::stopped(&mut retire_wait) => {}
                }
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_ends_when_worker_closes() {
        let (client_side, proxy_side) = tokio::io::duplex(1024);
        let (worker_end, proxy_worker_end) = UnixStream::pair().unwrap();
        let ((_stop, stopping), (_retire, retire)) = (watch::channel(false), watch::channel(false));
        let proxy = tokio::spawn(run(proxy_side, proxy_worker_end, stopping, retire));
        let (mut client_read, mut client_write) = tokio::io::split(client_side);
        let (mut worker_read, mut worker_write) = worker_end.into_split();

        client_write.write_all(b"a1 NOOP\r\n").await.unwrap();
        let mut got = [0u8; 9];
        worker_read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"a1 NOOP\r\n");

        worker_write.write_all(b"a1 OK done\r\n").await.unwrap();
        let mut answer = [0u8; 12];
        client_read.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"a1 OK done\r\n");

        drop(worker_write);
        drop(worker_read);
        let mut rest = Vec::new();
        client_read.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "worker close must end the client stream");
        drop(client_write);
        drop(client_read);
        let totals = tokio::time::timeout(Duration::from_secs(10), proxy).await.unwrap().unwrap();
        assert_eq!(totals, ProxyTotals { to_worker: 9, to_client: 12, retired: false });
    }

    #[tokio::test]
    async fn a_restart_closes_the_client_with_a_bye_of_its_own() {
        let (client_side, proxy_side) = tokio::io::duplex(1024);
        let (worker_end, proxy_worker_end) = UnixStream::pair().unwrap();
        let (retire_tx, retire) = watch::channel(false);
        let (_stop, stopping) = watch::channel(false);
        let proxy = tokio::spawn(run(proxy_side, proxy_worker_end, stopping, retire));
        let (mut client_read, client_write) = tokio::io::split(client_side);
        retire_tx.send_replace(true);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client_read.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, crate::server::session_driver::RESTART_BYE);
        drop(client_write);
        drop(client_read);
        let totals = tokio::time::timeout(Duration::from_secs(10), proxy).await.unwrap().unwrap();
        assert!(totals.retired);
        drop(worker_end);
    }

    #[tokio::test]
    async fn client_close_reaches_worker_as_eof() {
        let (client_side, proxy_side) = tokio::io::duplex(1024);
        let (mut worker_end, proxy_worker_end) = UnixStream::pair().unwrap();
        let ((_stop, stopping), (_retire, retire)) = (watch::channel(false), watch::channel(false));
        let proxy = tokio::spawn(run(proxy_side, proxy_worker_end, stopping, retire));
        drop(client_side);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), worker_end.read_to_end(&mut rest)).await.unwrap().unwrap();
        drop(worker_end);
        tokio::time::timeout(Duration::from_secs(10), proxy).await.unwrap().unwrap();
    }
}
