//! What another server needs to continue a training run — the next server after a SIGTERM (in
//! `training-run.json` beside the session store) or another cluster node (in Redis).

use crate::tokens::TokenHash;
use ipc_proto::training::TrainingConfig;
use serde::{Deserialize, Serialize};

/// A run as another server would continue it. The control token only as its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumableRun {
    pub config: TrainingConfig,
    pub paused: bool,
    /// Episodes completed when the checkpoint was taken (0: no checkpoint yet).
    pub episodes_completed: u32,
    pub control_hash: Option<TokenHash>,
    /// The holder handed the run over on purpose (SIGTERM), rather than dying.
    #[serde(default)]
    pub handed_over: bool,
}

/// A resumable run with where its checkpoint is on this machine: `training-run.json`, or a run
/// taken over from a lost cluster node (its checkpoint written here first).
#[derive(Debug, Serialize, Deserialize)]
pub struct RunWithCheckpoint {
    /// `None`: no checkpoint yet; the run starts again from its configuration.
    pub checkpoint: Option<String>,
    #[serde(flatten)]
    pub run: ResumableRun,
}
