//! Metaserver ⇄ `worker-training`, and the training configuration every process shares.
//!
//! [`config`] is the configuration of a run; [`fields`] is the one table of `start_training` fields (parsing, limits, validation and the form
//! served at `GET /api/training/config`); [`presets`] the lesson presets built on it.

use crate::browser::ServerMessage;
use serde::{Deserialize, Serialize};

pub mod config;
pub mod fields;
pub mod presets;

pub use config::*;
pub use fields::{fields, limits, FieldError, FieldSpec, OutOfLimits};
pub use presets::{presets, Preset};

/// Run control from viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunControl {
    Pause,
    Resume,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToTraining {
    /// Begin a new run. `paused`: the run waits for `Control(Resume)` before it goes beyond its
    /// first step (a replacement for a worker whose run was paused; the worker then says
    /// `paused`). Part of the start, not a `Pause` sent after it, so no episode can slip through
    /// in between.
    Start {
        config: Box<TrainingConfig>,
        #[serde(default)]
        paused: bool,
    },
    /// Continue a run from its last checkpoint (after the previous worker died or handed over).
    /// When no checkpoint there is usable, the run starts afresh from `config` (if given).
    /// `paused` as in `Start`.
    ResumeFrom {
        checkpoint: String,
        #[serde(default)]
        config: Option<Box<TrainingConfig>>,
        #[serde(default)]
        paused: bool,
    },
    Control(RunControl),
    Ping {
        seq: u64,
    },
    /// Save a checkpoint and the model so far (if a run is active), end the run, then exit.
    Shutdown,
    /// Save a checkpoint (if a run is active) and exit without ending the run: a successor
    /// resumes it (an operator's graceful restart).
    Handover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromTraining {
    Ready,
    /// For every viewer (encoded once by the metaserver). A `state_update` here must reach
    /// viewers in order (a paced episode, protocol.md **Pacing**); one in [`FromTraining::Frame`]
    /// may be replaced by a newer one.
    Message(ServerMessage),
    /// A `state_update` that a newer one may replace (latest wins): frames faster than
    /// `--viewer-fps`.
    Frame(ServerMessage),
    /// A checkpoint was written (atomically) at this path after `episode` completed episodes.
    Checkpointed {
        episode: u32,
        path: String,
    },
    /// A `ResumeFrom` succeeded: the run continues after `episode` completed episodes.
    Resumed {
        episode: u32,
    },
    /// The run ended; the worker stays up for the next one.
    RunEnded {
        model_saved: Option<String>,
        failed: Option<String>,
    },
    Pong {
        seq: u64,
    },
}
