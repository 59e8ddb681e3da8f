//! The dead-letter log: `<state_dir>/dead-letter.jsonl`, one JSON object
//! per line for every (event, registration) that could not be delivered.
//!
//! ```json
//! {"time_ms":1764079200000,"registration":"r-5f0c...","user":"alice",
//!  "url":"https://hooks.example.org/mail","attempts":8,
//!  "reason":"HTTP 500 Internal Server Error","event":{...the external event...}}
//! ```
//!
//! The URL is shown without credentials and the secret never appears. The
//! file is append-only (mode 0600); rotate it with `logrotate`'s
//! `copytruncate`, or move it away (the relay reopens it by name for every
//! line, so a moved file is never written again).

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Name of the dead-letter log in the state directory.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";

/// One line of the dead-letter log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was given up, milliseconds since the UNIX epoch.
    pub time_ms: u64,
    /// Registration id (`global-N` for a configured endpoint).
    pub registration: String,
    /// The event's user.
    pub user: String,
    /// Target URL without credentials.
    pub url: String,
    /// Attempts made (0 when the queue was full).
    pub attempts: u32,
    /// Why the last attempt failed, or `queue full`.
    pub reason: String,
    /// The external event as it was (or would have been) sent.
    pub event: serde_json::Value,
}

/// Appends dead letters to the log file.
#[derive(Debug)]
pub struct DeadLetterLog {
    path: PathBuf,
    // Serializes whole lines between the relay's tasks.
    write: Mutex<()>,
}

impl DeadLetterLog {
    /// The log at `path` (created on first write).
    pub fn new(path: PathBuf) -> Self {
        DeadLetterLog { path, write: Mutex::new(()) }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line. A failure is logged, never fatal: the relay keeps
    /// delivering to healthy endpoints.
    pub fn append(&self, entry: &DeadLetter) {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = match serde_json::to_vec(entry) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "push-relay: cannot encode a dead letter");
                return;
            }
        };
        line.push(b'\n');
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "push-relay: cannot write the dead-letter log");
        }
    }
}

/// The last `n` lines of the dead-letter log at `path` (none if missing).
///
/// # Errors
/// I/O errors other than a missing file.
pub fn read_tail(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut tail = std::collections::VecDeque::with_capacity(n.min(4096));
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if n == 0 {
            continue;
        }
        if tail.len() == n {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Ok(tail.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_reads_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeadLetterLog::new(dir.path().join(DEAD_LETTER_FILE));
        assert!(read_tail(log.path(), 5).unwrap().is_empty());
        for i in 0..5 {
            log.append(&DeadLetter {
                time_ms: i,
                registration: "r-1".into(),
                user: "alice".into(),
                url: "http://h/".into(),
                attempts: 3,
                reason: format!("HTTP 50{i}"),
                event: serde_json::json!({"id": i}),
            });
        }
        let tail = read_tail(log.path(), 2).unwrap();
        assert_eq!(tail.len(), 2);
        let last: DeadLetter = serde_json::from_str(&tail[1]).unwrap();
        assert_eq!((last.time_ms, last.reason.as_str()), (4, "HTTP 504"));
    }
}
