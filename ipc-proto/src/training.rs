//! Metaserver ⇄ `worker-training`, and the training configuration every process shares.

use crate::browser::ServerMessage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    #[default]
    Qnetwork,
    Dueling,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Qnetwork => "qnetwork",
            Network::Dueling => "dueling",
        }
    }
}

/// A validated `start_training` request, with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    pub num_episodes: u32,
    pub batch_size: u32,
    pub buffer_capacity: u32,
    pub show_every: u32,
    /// Seconds between steps of shown episodes.
    pub step_delay: f64,
    pub network: Network,
    pub learning_rate: f64,
    pub gamma: f64,
    pub epsilon_start: f64,
    pub epsilon_min: f64,
    pub epsilon_decay: f64,
    /// Episodes between hard copies into the target network.
    pub target_update: u32,
    pub max_steps: u32,
    pub seed: u64,
    /// File stem for the saved model; `None`: a unique generated name.
    pub model_name: Option<String>,
    /// Episodes between checkpoints.
    pub checkpoint_every: u32,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            num_episodes: 100,
            batch_size: 32,
            buffer_capacity: 10_000,
            show_every: 5,
            step_delay: 0.2,
            network: Network::Qnetwork,
            learning_rate: 1e-3,
            gamma: 0.99,
            epsilon_start: 1.0,
            epsilon_min: 0.05,
            epsilon_decay: 0.995,
            target_update: 10,
            max_steps: 500,
            seed: 0,
            model_name: None,
            checkpoint_every: 5,
        }
    }
}

/// Inclusive bounds of the numeric `start_training` fields (protocol.md, plus sane limits for the
/// new fields). One table, read by the metaserver's validation and the UI's form.
pub mod limits {
    pub const NUM_EPISODES: (u32, u32) = (1, 100_000);
    pub const BATCH_SIZE: (u32, u32) = (1, 1024);
    pub const BUFFER_CAPACITY: (u32, u32) = (100, 1_000_000);
    pub const SHOW_EVERY: (u32, u32) = (1, 100_000);
    pub const STEP_DELAY: (f64, f64) = (0.0, 5.0);
    pub const LEARNING_RATE: (f64, f64) = (1e-6, 1.0);
    pub const GAMMA: (f64, f64) = (0.0, 1.0);
    pub const EPSILON: (f64, f64) = (0.0, 1.0);
    pub const EPSILON_DECAY: (f64, f64) = (0.5, 1.0);
    pub const TARGET_UPDATE: (u32, u32) = (1, 100_000);
    pub const MAX_STEPS: (u32, u32) = (1, 100_000);
    pub const CHECKPOINT_EVERY: (u32, u32) = (1, 100_000);
}

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
    /// Begin a new run.
    Start(Box<TrainingConfig>),
    /// Continue a run from its last checkpoint (after the previous worker died).
    ResumeFrom {
        checkpoint: String,
    },
    Control(RunControl),
    Ping {
        seq: u64,
    },
    /// Save a checkpoint and the model so far (if a run is active), then exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromTraining {
    Ready,
    /// For every viewer (encoded once by the metaserver).
    Message(ServerMessage),
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
