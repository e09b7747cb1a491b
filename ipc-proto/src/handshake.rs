//! The worker's first frame. The metaserver hands each spawned worker a one-time token through the
//! environment; a connection whose first frame lacks the right token, kind or protocol version is
//! refused with a reason and dropped.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the frames in this crate.
pub const PROTOCOL_VERSION: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    Inference,
    Training,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Inference => "inference",
            WorkerKind::Training => "training",
        }
    }
}

/// First frame, worker → metaserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub kind: WorkerKind,
    pub pid: u32,
    pub token: String,
}

/// Answer to [`Hello`], metaserver → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum HelloReply {
    Accepted,
    Refused { reason: String },
}

/// Why a [`Hello`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("protocol version {got} is not {want}")]
    Version { got: u32, want: u32 },
    #[error("worker kind {got:?} is not the expected {want:?}")]
    Kind { got: WorkerKind, want: WorkerKind },
    #[error("bad token")]
    Token,
}

impl Hello {
    /// Checks this hello against what the metaserver expects from the process it spawned.
    pub fn verify(&self, kind: WorkerKind, token: &str) -> Result<(), HandshakeError> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                got: self.protocol_version,
                want: PROTOCOL_VERSION,
            });
        }
        if self.kind != kind {
            return Err(HandshakeError::Kind {
                got: self.kind,
                want: kind,
            });
        }
        if !secret_eq(&self.token, token) {
            return Err(HandshakeError::Token);
        }
        Ok(())
    }
}

/// Compares a presented secret with the expected one in constant time (`subtle`); an empty
/// expected secret never matches.
pub fn secret_eq(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}
