//! One load-generator client process: opens its share of the sessions from
//! one source address, each doing LOGIN, SELECT INBOX, IDLE, and reports on
//! stdout (one line per fact, read by the orchestrator):
//!
//! - `S <ok> <failed>` progress, every second while ramping;
//! - `R <ok> <failed>` once every session was tried;
//! - `E <user> <n> <mono_ns>` for every `* n EXISTS` a session got;
//! - `P <ns>` a DONE + NOOP round trip of a probe session;
//! - `X <ok>` sessions still connected when told to quit.
//!
//! Commands on stdin: `probe <rounds>` (the probe sessions each run that
//! many DONE / NOOP / IDLE rounds, waiting between rounds long enough to be
//! hibernated again), `quit` (close everything and exit).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch, Semaphore};

/// What one client process is asked to do.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub target: SocketAddr,
    pub tls_target: SocketAddr,
    pub source: Ipv4Addr,
    /// Global index of this process's first session.
    pub first: usize,
    pub count: usize,
    /// Sessions whose global index is below this use TLS (counted per
    /// process: the first `tls_count` of this process).
    pub tls_count: usize,
    pub users: usize,
    pub rate_per_sec: f64,
    pub probes: usize,
    /// Seconds a probe waits in IDLE before each round (longer than the
    /// server's hibernation timeout).
    pub probe_wait_secs: f64,
}

/// Monotonic nanoseconds, comparable across processes on this host.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Hold,
    Probe(u32),
    Quit,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Runs the client process until `quit`.
pub fn run(plan: ClientPlan) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::task::spawn_blocking(move || {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            while let Some(line) = out_rx.blocking_recv() {
                let _ = lock.write_all(line.as_bytes());
                if out_rx.is_empty() {
                    let _ = lock.flush();
                }
            }
            let _ = lock.flush();
        });
        let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let tls = tls_connector();
        // Logins in flight at once: enough to keep the server busy, few
        // enough that a slow server sees a queue, not a SYN flood.
        let in_flight = Arc::new(Semaphore::new(256));
        let interval = Duration::from_secs_f64(1.0 / plan.rate_per_sec.max(1.0));
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(plan.count);
        let mut last_report = Instant::now();
        for k in 0..plan.count {
            let due = start + interval.mul_f64(k as f64);
            tokio::time::sleep_until(due.into()).await;
            let global = plan.first + k;
            let user = global % plan.users + 1;
            let use_tls = k < plan.tls_count;
            let probe = k < plan.probes;
            let permit = Arc::clone(&in_flight).acquire_owned().await.unwrap();
            let (plan, tls, out, phase) = (plan.clone(), tls.clone(), out_tx.clone(), phase_rx.clone());
            let (ok_count, failed_count, connected_count) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&connected));
            tasks.push(tokio::spawn(async move {
                let setup = tokio::time::timeout(Duration::from_secs(120), open(&plan, user, use_tls, &tls)).await;
                drop(permit);
                let Ok(Ok(mut conn)) = setup else {
                    failed_count.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                ok_count.fetch_add(1, Ordering::Relaxed);
                connected_count.fetch_add(1, Ordering::Relaxed);
                let stayed = idle_loop(&mut conn, user, probe, plan.probe_wait_secs, &out, phase).await;
                if !stayed {
                    connected_count.fetch_sub(1, Ordering::Relaxed);
                }
            }));
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                let _ = out_tx.send(format!("S {} {}\n", ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)));
            }
        }
        // Every session tried: wait for the setups in flight.
        let _ = in_flight.acquire_many(256).await;
        let _ = out_tx.send(format!("R {} {}\n", ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)));
        let stdin = tokio::io::stdin();
        let mut commands = BufReader::new(stdin).lines();
        while let Ok(Some(line)) = commands.next_line().await {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("probe") => {
                    let rounds = words.next().and_then(|w| w.parse().ok()).unwrap_or(10);
                    let _ = phase_tx.send(Phase::Probe(rounds));
                }
                Some("quit") | None => break,
                Some(_) => {}
            }
        }
        let _ = out_tx.send(format!("X {}\n", connected.load(Ordering::Relaxed)));
        let _ = phase_tx.send(Phase::Quit);
        for t in tasks {
            let _ = t.await;
        }
        drop(out_tx);
        let _ = writer.await;
    });
}

struct Conn {
    reader: BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>,
    writer: tokio::io::WriteHalf<Box<dyn Stream>>,
    line: String,
}

impl Conn {
    async fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Sends `tag command` and reads to its tagged answer; true for OK.
    async fn cmd(&mut self, tag: &str, command: &str) -> std::io::Result<bool> {
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes()).await?;
        self.until_tagged(tag).await
    }

    async fn until_tagged(&mut self, tag: &str) -> std::io::Result<bool> {
        loop {
            self.read_line().await?;
            if let Some(rest) = self.line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return Ok(rest.starts_with("OK"));
            }
        }
    }

    /// Starts IDLE: true once the server sent its continuation.
    async fn idle(&mut self) -> std::io::Result<bool> {
        self.writer.write_all(b"i IDLE\r\n").await?;
        self.read_line().await?;
        Ok(self.line.starts_with('+'))
    }
}

async fn open(plan: &ClientPlan, user: usize, use_tls: bool, tls: &tokio_rustls::TlsConnector) -> std::io::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((plan.source, 0)))?;
    let tcp = socket.connect(if use_tls { plan.tls_target } else { plan.target }).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = if use_tls {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        Box::new(tls.connect(name, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (r, w) = tokio::io::split(stream);
    // A small buffer: the client side holds many sessions too.
    let mut c = Conn { reader: BufReader::with_capacity(512, r), writer: w, line: String::new() };
    c.read_line().await?;
    let failed = || std::io::Error::other("command refused");
    if !c.cmd("a", &format!("LOGIN u{user} pass")).await? || !c.cmd("s", "SELECT INBOX").await? || !c.idle().await? {
        return Err(failed());
    }
    c.line = String::new();
    Ok(c)
}

/// Holds the session in IDLE, reporting EXISTS, until quit; returns false
/// if the server closed it first.
async fn idle_loop(c: &mut Conn, user: usize, probe: bool, wait_secs: f64, out: &mpsc::UnboundedSender<String>, mut phase: watch::Receiver<Phase>) -> bool {
    loop {
        tokio::select! {
            read = c.read_line() => {
                if read.is_err() {
                    return false;
                }
                report_exists(&c.line, user, out);
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return true;
                }
                let now = *phase.borrow();
                match now {
                    Phase::Quit => return true,
                    Phase::Probe(rounds)
                        if probe && probe_rounds(c, user, rounds, wait_secs, out).await.is_err() =>
                    {
                        return false;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// DONE + NOOP round trips, each after waiting in IDLE long enough for the
/// session to be hibernated again.
async fn probe_rounds(c: &mut Conn, user: usize, rounds: u32, wait_secs: f64, out: &mpsc::UnboundedSender<String>) -> std::io::Result<()> {
    for _ in 0..rounds {
        let wait = tokio::time::sleep(Duration::from_secs_f64(wait_secs));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                read = c.read_line() => { read?; report_exists(&c.line, user, out); }
            }
        }
        let start = Instant::now();
        c.writer.write_all(b"DONE\r\n").await?;
        c.until_tagged("i").await?;
        c.cmd("n", "NOOP").await?;
        let _ = out.send(format!("P {}\n", start.elapsed().as_nanos()));
        if !c.idle().await? {
            return Err(std::io::Error::other("IDLE refused"));
        }
    }
    Ok(())
}

fn report_exists(line: &str, user: usize, out: &mpsc::UnboundedSender<String>) {
    if let Some(n) = line.strip_prefix("* ").and_then(|r| r.trim_end().strip_suffix(" EXISTS")) {
        let _ = out.send(format!("E {user} {n} {}\n", mono_ns()));
    }
}

/// A TLS client that accepts any certificate: the benchmark talks to a
/// throwaway self-signed server on 127.0.0.1 only.
fn tls_connector() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
