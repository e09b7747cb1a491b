//! Checkpoints: the whole [`TrainerState`] as MessagePack, written atomically so a crash mid-write
//! leaves the previous checkpoint intact under the final name.

use crate::dqn::TrainerState;
use std::path::Path;

/// Magic prefix so a random file is refused with a clear error rather than misread.
const MAGIC: &[u8; 8] = b"HAMLETC1";

pub fn save(state: &TrainerState, path: &Path) -> anyhow::Result<()> {
    let mut bytes = MAGIC.to_vec();
    rmp_serde::encode::write_named(&mut bytes, state)?;
    hamlet_onnx::write_atomic(path, &bytes)?;
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<TrainerState> {
    let bytes = std::fs::read(path)?;
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| anyhow::anyhow!("{} is not a Hamlet checkpoint", path.display()))?;
    Ok(rmp_serde::from_slice(body)?)
}
