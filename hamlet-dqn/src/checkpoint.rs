//! Checkpoints: the whole [`TrainerState`] as MessagePack behind a magic prefix and the SHA-256 of
//! the MessagePack, written atomically so a crash mid-write leaves the previous checkpoint intact
//! under the final name. The one before it is kept as `NAME.prev`, so a checkpoint that is corrupt
//! on disk (truncated, bit-flipped) costs one checkpoint interval, not the run.
//!
//! Everything read back is checked before use: the checksum first (a flipped bit in a weight
//! would otherwise load as a valid, different network), then — for a file whose checksum was
//! computed over hostile contents — the configuration against its limits, every layer and
//! optimiser moment against the architecture's shapes. A bad file is a clear error, never a
//! network whose sizes disagree with its weights.

use crate::dqn::TrainerState;
use crate::nn::ShapeError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Magic prefix so a random file is refused with a clear error rather than misread.
const MAGIC: &[u8; 8] = b"HAMLETC2";
/// The prefix of the format before checksums (issue 32), refused by name.
const MAGIC_WITHOUT_CHECKSUM: &[u8; 8] = b"HAMLETC1";
const CHECKSUM_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a Hamlet checkpoint")]
    NotACheckpoint(String),
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot encode the checkpoint: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Where the checkpoint before the latest one is kept.
pub fn previous(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".prev");
    PathBuf::from(p)
}

pub fn save(state: &TrainerState, path: &Path) -> Result<(), CheckpointError> {
    let body = rmp_serde::encode::to_vec_named(state)?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + CHECKSUM_LEN + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&Sha256::digest(&body));
    bytes.extend_from_slice(&body);
    let io = |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        std::fs::rename(path, previous(path)).map_err(io)?;
    }
    hamlet_onnx::write_atomic(path, &bytes).map_err(io)
}

/// Reads and checks one checkpoint file.
pub fn load(path: &Path) -> Result<TrainerState, CheckpointError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: shown.clone(),
        source,
    })?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: shown.clone(),
        reason,
    };
    if bytes.starts_with(MAGIC_WITHOUT_CHECKSUM) {
        return Err(corrupt(
            "written by an older Hamlet, without a checksum".into(),
        ));
    }
    let sealed = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| CheckpointError::NotACheckpoint(shown.clone()))?;
    if sealed.len() < CHECKSUM_LEN {
        return Err(corrupt("truncated before its checksum".into()));
    }
    let (checksum, body) = sealed.split_at(CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(corrupt("its checksum does not match its contents".into()));
    }
    let state: TrainerState = rmp_serde::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
    state
        .config
        .validate()
        .map_err(|e| corrupt(format!("configuration: {e}")))?;
    check_shapes(&state).map_err(|e| corrupt(e.to_string()))?;
    Ok(state)
}

fn check_shapes(s: &TrainerState) -> Result<(), ShapeError> {
    s.online.validate()?;
    s.target.validate()?;
    let best = s.best.as_ref().map(|b| &b.net);
    if let Some(b) = best {
        b.validate()?;
    }
    let archs = [Some(&s.online), Some(&s.target), best];
    if archs.iter().flatten().any(|n| n.arch() != s.config.network) {
        return Err(ShapeError {
            arch: s.config.network.as_str(),
            reason: "the networks are not of the configured architecture".into(),
        });
    }
    s.adam.validate(&s.online)
}

/// The newest usable checkpoint: `path`, else the one before it. The error, when both fail, is
/// the latest one's.
pub fn load_latest(path: &Path) -> Result<(TrainerState, PathBuf), CheckpointError> {
    match load(path) {
        Ok(s) => Ok((s, path.to_owned())),
        Err(e) => match load(&previous(path)) {
            Ok(s) => Ok((s, previous(path))),
            Err(_) => Err(e),
        },
    }
}

/// Removes a run's checkpoints (after the run ended normally).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(previous(path));
}
