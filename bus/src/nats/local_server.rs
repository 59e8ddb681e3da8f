//! A nats-server child process of our own, for tests, benchmarks and local
//! experiments: hermetic (its own loopback port and JetStream folder) and
//! killed on drop.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server` (Debian package `nats-server`) with JetStream in a folder of
/// the caller's, on a free port of 127.0.0.1. Killed when dropped.
#[derive(Debug)]
pub struct LocalNatsServer {
    port: u16,
    store_dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl LocalNatsServer {
    /// Where Debian installs the server.
    pub const BINARY: &'static str = "/usr/sbin/nats-server";

    /// How long [`LocalNatsServer::start`] waits for the port to open.
    pub const START_TIMEOUT: Duration = Duration::from_secs(20);

    /// Starts a server with JetStream storing in `store_dir` and waits
    /// until it accepts connections.
    ///
    /// # Errors
    /// The binary cannot be started, or its port did not open within
    /// [`LocalNatsServer::START_TIMEOUT`].
    pub fn start(store_dir: &Path) -> io::Result<Self> {
        Self::start_with(store_dir, &[])
    }

    /// Like [`LocalNatsServer::start`], with more arguments (e.g. `-c FILE`).
    ///
    /// # Errors
    /// As for [`LocalNatsServer::start`].
    pub fn start_with(store_dir: &Path, extra_args: &[String]) -> io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self { port, store_dir: store_dir.to_owned(), extra_args: extra_args.to_vec(), child: None };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> io::Result<()> {
        let child = Command::new(Self::BINARY)
            .args(&self.extra_args)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Self::START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() >= deadline {
                self.stop();
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("nats-server did not open port {}", self.port)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its process id (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the server (an outage); [`LocalNatsServer::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and folder (JetStream keeps
    /// what it stored).
    ///
    /// # Errors
    /// As for [`LocalNatsServer::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
