//! Messages a worker sends back to the master over its channel.
//!
//! # Wire format (version 1)
//!
//! One byte [`WORKER_REPORT_VERSION`], then a [`WorkerReport`] in postcard.
//! The master → worker direction carries only [`crate::handover::Handover`]
//! records, each with the client's descriptor attached.

use serde::{Deserialize, Serialize};

/// Version byte of the [`WorkerReport`] wire format.
pub const WORKER_REPORT_VERSION: u8 = 1;

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerReport {
    /// The worker is running and accepts hand-overs.
    Ready {
        /// The worker's process id.
        pid: u32,
    },
    /// A session handed to the worker has ended (logout, timeout, error);
    /// the master releases its per-user and per-IP counts.
    SessionEnded {
        /// The master-assigned session id.
        session_id: u64,
    },
    /// The worker could not take a hand-over (bad record, no descriptor);
    /// the master treats the session as ended.
    HandoverRejected {
        /// The session id, if the record could be decoded.
        session_id: Option<u64>,
        /// Why.
        reason: String,
    },
}

/// Errors decoding a [`WorkerReport`].
#[derive(Debug, thiserror::Error)]
pub enum WorkerReportError {
    /// Empty message.
    #[error("empty worker report")]
    Empty,
    /// Unknown version byte.
    #[error("unsupported worker report version {0}")]
    UnsupportedVersion(u8),
    /// postcard failed.
    #[error("worker report encoding: {0}")]
    Codec(#[from] postcard::Error),
}

impl WorkerReport {
    /// Encodes: version byte, then postcard.
    ///
    /// # Errors
    /// postcard serialization failures (not expected for this type).
    pub fn encode(&self) -> Result<Vec<u8>, WorkerReportError> {
        let mut out = vec![WORKER_REPORT_VERSION];
        out.extend_from_slice(&postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Decodes what [`WorkerReport::encode`] produced.
    ///
    /// # Errors
    /// Empty input, other version, malformed or trailing data.
    pub fn decode(bytes: &[u8]) -> Result<Self, WorkerReportError> {
        let (&version, body) = bytes.split_first().ok_or(WorkerReportError::Empty)?;
        if version != WORKER_REPORT_VERSION {
            return Err(WorkerReportError::UnsupportedVersion(version));
        }
        let (report, rest) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(WorkerReportError::Codec(postcard::Error::DeserializeBadEncoding));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for report in [
            WorkerReport::Ready { pid: 4242 },
            WorkerReport::SessionEnded { session_id: u64::MAX },
            WorkerReport::HandoverRejected { session_id: None, reason: "no descriptor".into() },
            WorkerReport::HandoverRejected { session_id: Some(7), reason: String::new() },
        ] {
            let bytes = report.encode().unwrap();
            assert_eq!(WorkerReport::decode(&bytes).unwrap(), report);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(WorkerReport::decode(&[]), Err(WorkerReportError::Empty)));
        assert!(matches!(WorkerReport::decode(&[9, 0]), Err(WorkerReportError::UnsupportedVersion(9))));
        assert!(WorkerReport::decode(&[WORKER_REPORT_VERSION, 200]).is_err());
        let mut bytes = WorkerReport::Ready { pid: 1 }.encode().unwrap();
        bytes.push(1);
        assert!(WorkerReport::decode(&bytes).is_err());
    }
}
