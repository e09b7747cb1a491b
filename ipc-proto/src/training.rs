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

/// How the learning target picks the next state's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TdTarget {
    /// `max_a Q_target(s', a)`: the original DQN (world.md); overestimates values.
    Max,
    /// Double DQN: the online network chooses `a*`, the target network values it.
    #[default]
    Double,
}

/// The loss on the temporal-difference error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Mean squared error (world.md). Measured faster to competence here than Huber
    /// (BENCHMARKS.md): a death's large error is exactly what the agent must learn from.
    #[default]
    Mse,
    /// Huber (δ = 1): squared for small errors, linear beyond, so rare large errors do not swamp
    /// the update.
    Huber,
}

impl TdTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            TdTarget::Max => "max",
            TdTarget::Double => "double",
        }
    }
}

impl Loss {
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::Huber => "huber",
        }
    }
}

/// A field with a few named values (`network`, `td_target`, `loss`): the names are written once,
/// in `as_str`, and read by the browser-message validator, the field table and the offline
/// trainer's flags alike.
pub trait Choice: Copy + 'static {
    /// Every value, the default first.
    const ALL: &'static [Self];
    fn name(self) -> &'static str;

    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == s)
    }
}

macro_rules! choice {
    ($t:ty, [$($v:expr),*]) => {
        impl Choice for $t {
            const ALL: &'static [Self] = &[$($v),*];
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::from_name(s)
                    .ok_or_else(|| format!("unknown value `{s}` (one of: {})", Self::names().join(", ")))
            }
        }
    };
}
choice!(Network, [Network::Qnetwork, Network::Dueling]);
choice!(TdTarget, [TdTarget::Double, TdTarget::Max]);
choice!(Loss, [Loss::Mse, Loss::Huber]);

/// What a configuration without the learning-method fields meant (checkpoints written before
/// they existed): the original DQN of world.md.
mod original {
    pub fn td_target() -> super::TdTarget {
        super::TdTarget::Max
    }
    pub fn loss() -> super::Loss {
        super::Loss::Mse
    }
    pub fn one() -> u32 {
        1
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
    /// Double DQN or the original max target.
    #[serde(default = "original::td_target")]
    pub td_target: TdTarget,
    /// Steps of real reward before bootstrapping (1: one-step DQN).
    #[serde(default = "original::one")]
    pub n_step: u32,
    #[serde(default = "original::loss")]
    pub loss: Loss,
    /// Environment steps per gradient step (1: one update per step, as the original).
    #[serde(default = "original::one")]
    pub train_every: u32,
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
            td_target: TdTarget::Double,
            n_step: 3,
            loss: Loss::Mse,
            train_every: 1,
        }
    }
}

impl TrainingConfig {
    /// The settings that reach competence fastest on this project's machine (measured by
    /// `scripts/bench learn`, BENCHMARKS.md): `worker-training train`'s defaults and the training
    /// form's "full run" preset. Nothing is shown or paced.
    pub fn full_run() -> Self {
        Self::full_run_for(Network::Qnetwork)
    }

    /// [`TrainingConfig::full_run`] for a network. The dueling network, five times the
    /// qnetwork's size, plateaued at 300–410 greedy steps with the qnetwork's settings in every
    /// measured run; a smaller learning rate (2.5e-4), four times the replay memory (200 000) and a
    /// target copy every 10 episodes made it competent (BENCHMARKS.md, issue 16).
    pub fn full_run_for(network: Network) -> Self {
        let qnetwork = TrainingConfig {
            num_episodes: 3000,
            batch_size: 64,
            buffer_capacity: 50_000,
            show_every: 100,
            step_delay: 0.0,
            target_update: 5,
            learning_rate: 5e-4,
            ..TrainingConfig::default()
        };
        match network {
            Network::Qnetwork => qnetwork,
            Network::Dueling => TrainingConfig {
                network,
                buffer_capacity: 200_000,
                target_update: 10,
                learning_rate: 2.5e-4,
                ..qnetwork
            },
        }
    }
}

/// Inclusive bounds of the numeric `start_training` fields (protocol.md, plus sane limits for the
/// new fields), read by the metaserver's validation, by [`TrainingConfig::validate`] and by
/// [`fields`] (served at `GET /api/training/config`, from which the UI builds its form).
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
    pub const N_STEP: (u32, u32) = (1, 20);
    pub const TRAIN_EVERY: (u32, u32) = (1, 64);
}

/// A configuration outside [`limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` is outside its limits")]
pub struct OutOfLimits {
    pub field: &'static str,
}

impl TrainingConfig {
    /// Checks every field against [`limits`] (for configurations read back from a file).
    pub fn validate(&self) -> Result<(), OutOfLimits> {
        let int = |field, v: u32, (lo, hi): (u32, u32)| {
            (lo..=hi)
                .contains(&v)
                .then_some(())
                .ok_or(OutOfLimits { field })
        };
        let float = |field, v: f64, (lo, hi): (f64, f64)| {
            (v.is_finite() && (lo..=hi).contains(&v))
                .then_some(())
                .ok_or(OutOfLimits { field })
        };
        int("num_episodes", self.num_episodes, limits::NUM_EPISODES)?;
        int("batch_size", self.batch_size, limits::BATCH_SIZE)?;
        int(
            "buffer_capacity",
            self.buffer_capacity,
            limits::BUFFER_CAPACITY,
        )?;
        int("show_every", self.show_every, limits::SHOW_EVERY)?;
        float("step_delay", self.step_delay, limits::STEP_DELAY)?;
        float("learning_rate", self.learning_rate, limits::LEARNING_RATE)?;
        float("gamma", self.gamma, limits::GAMMA)?;
        float("epsilon_start", self.epsilon_start, limits::EPSILON)?;
        float("epsilon_min", self.epsilon_min, limits::EPSILON)?;
        float("epsilon_decay", self.epsilon_decay, limits::EPSILON_DECAY)?;
        int("target_update", self.target_update, limits::TARGET_UPDATE)?;
        int("max_steps", self.max_steps, limits::MAX_STEPS)?;
        int(
            "checkpoint_every",
            self.checkpoint_every,
            limits::CHECKPOINT_EVERY,
        )?;
        int("n_step", self.n_step, limits::N_STEP)?;
        int("train_every", self.train_every, limits::TRAIN_EVERY)
    }
}

/// One `start_training` field as `GET /api/training/config` describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSpec {
    pub name: &'static str,
    /// A short label for a form.
    pub label: &'static str,
    /// `integer`, `number`, `choice` or `text`.
    pub kind: &'static str,
    pub default: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<&'static str>>,
    pub help: &'static str,
}

/// Every `start_training` field with its default, limits and a one-line help: the one table the
/// UI's form is built from.
pub fn fields() -> Vec<FieldSpec> {
    use serde_json::json;
    let d = TrainingConfig::default();
    let int = |name, label, default: u32, (lo, hi): (u32, u32), help| FieldSpec {
        name,
        label,
        kind: "integer",
        default: json!(default),
        min: Some(f64::from(lo)),
        max: Some(f64::from(hi)),
        choices: None,
        help,
    };
    let num = |name, label, default: f64, (lo, hi): (f64, f64), help| FieldSpec {
        name,
        label,
        kind: "number",
        default: json!(default),
        min: Some(lo),
        max: Some(hi),
        choices: None,
        help,
    };
    vec![
        int(
            "num_episodes",
            "Episodes",
            d.num_episodes,
            limits::NUM_EPISODES,
            "Episodes to train.",
        ),
        int(
            "batch_size",
            "Batch size",
            d.batch_size,
            limits::BATCH_SIZE,
            "Transitions per gradient step.",
        ),
        int(
            "buffer_capacity",
            "Replay buffer",
            d.buffer_capacity,
            limits::BUFFER_CAPACITY,
            "Replay buffer size (transitions).",
        ),
        int(
            "show_every",
            "Show every N episodes",
            d.show_every,
            limits::SHOW_EVERY,
            "Stream every N-th episode step by step.",
        ),
        num(
            "step_delay",
            "Step delay (s)",
            d.step_delay,
            limits::STEP_DELAY,
            "Seconds between steps of a shown episode.",
        ),
        FieldSpec {
            name: "network",
            label: "Network",
            kind: "choice",
            default: json!(d.network.as_str()),
            min: None,
            max: None,
            choices: Some(Network::names()),
            help: "Q-network architecture.",
        },
        num(
            "learning_rate",
            "Learning rate",
            d.learning_rate,
            limits::LEARNING_RATE,
            "Adam learning rate.",
        ),
        num(
            "gamma",
            "Discount γ",
            d.gamma,
            limits::GAMMA,
            "Discount factor for future reward.",
        ),
        num(
            "epsilon_start",
            "ε start",
            d.epsilon_start,
            limits::EPSILON,
            "Exploration rate at the start.",
        ),
        num(
            "epsilon_min",
            "ε floor",
            d.epsilon_min,
            limits::EPSILON,
            "Lowest exploration rate.",
        ),
        num(
            "epsilon_decay",
            "ε decay per episode",
            d.epsilon_decay,
            limits::EPSILON_DECAY,
            "ε is multiplied by this after each episode.",
        ),
        int(
            "target_update",
            "Target copy every N episodes",
            d.target_update,
            limits::TARGET_UPDATE,
            "Episodes between copies into the target network.",
        ),
        int(
            "max_steps",
            "Step cap per episode",
            d.max_steps,
            limits::MAX_STEPS,
            "Step cap per episode.",
        ),
        int(
            "checkpoint_every",
            "Checkpoint every N episodes",
            d.checkpoint_every,
            limits::CHECKPOINT_EVERY,
            "Episodes between checkpoints (a crashed run resumes from the last).",
        ),
        FieldSpec {
            name: "td_target",
            label: "Target",
            kind: "choice",
            default: json!(d.td_target.as_str()),
            min: None,
            max: None,
            choices: Some(TdTarget::names()),
            help: "double: Double DQN (the online network picks the next action, the target \
                   network values it); max: the original DQN, which overestimates.",
        },
        int(
            "n_step",
            "n-step return",
            d.n_step,
            limits::N_STEP,
            "Steps of real reward summed before bootstrapping (1: one-step DQN).",
        ),
        FieldSpec {
            name: "loss",
            label: "Loss",
            kind: "choice",
            default: json!(d.loss.as_str()),
            min: None,
            max: None,
            choices: Some(Loss::names()),
            help: "mse: squared error (the original); huber: large errors (a death's −100) count linearly.",
        },
        int(
            "train_every",
            "Steps per update",
            d.train_every,
            limits::TRAIN_EVERY,
            "Environment steps per gradient step (1: learn after every step).",
        ),
        FieldSpec {
            name: "seed",
            label: "Seed",
            kind: "integer",
            default: serde_json::Value::Null,
            min: Some(0.0),
            max: None,
            choices: None,
            help: "Random seed (blank: a random one); the same seed repeats a run exactly.",
        },
        FieldSpec {
            name: "model_name",
            label: "Model name",
            kind: "text",
            default: serde_json::Value::Null,
            min: None,
            max: None,
            choices: None,
            help: "File name for the saved model (blank: a unique generated name).",
        },
    ]
}

/// A configuration for a lesson, offered by the training form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preset {
    pub name: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    /// The fields this preset sets; the rest keep their defaults.
    pub config: serde_json::Value,
}

/// Lesson presets; the first is what the form starts with.
pub fn presets() -> Vec<Preset> {
    use serde_json::json;
    vec![
        Preset {
            name: "demo",
            label: "1-minute demo",
            description:
                "Learns visibly within a minute: a few episodes shown, most run at full speed.",
            config: json!({"num_episodes": 300, "batch_size": 64, "buffer_capacity": 50000,
                           "target_update": 5, "learning_rate": 5e-4,
                           "show_every": 25, "step_delay": 0.02}),
        },
        Preset {
            name: "watch",
            label: "Watch it learn",
            description:
                "Training runs at full speed; the newest shown episode is replayed at a watchable \
                 pace, so the class sees behaviour change.",
            config: json!({"num_episodes": 1500, "batch_size": 64, "buffer_capacity": 50000,
                           "target_update": 5, "learning_rate": 5e-4,
                           "show_every": 5, "step_delay": 0.05}),
        },
        Preset {
            name: "full",
            label: "Full run",
            description:
                "The offline trainer's settings, nothing paced: the fastest way to a competent agent.",
            config: full_run_fields(Network::Qnetwork),
        },
        Preset {
            name: "full-dueling",
            label: "Full run, dueling network",
            description: "The offline trainer's settings for the dueling network (value and \
                 advantage streams), nothing paced: it needs several times longer than the \
                 qnetwork to become competent.",
            config: full_run_fields(Network::Dueling),
        },
    ]
}

/// [`TrainingConfig::full_run_for`] as `start_training` fields (the seed and model name left to
/// the form).
fn full_run_fields(network: Network) -> serde_json::Value {
    let mut v =
        serde_json::to_value(TrainingConfig::full_run_for(network)).expect("a config serialises");
    if let Some(m) = v.as_object_mut() {
        m.remove("seed");
        m.remove("model_name");
    }
    v
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
    /// For every viewer (encoded once by the metaserver).
    Message(ServerMessage),
    /// A greedy evaluation of the network after `episode` episodes: how long it survived and
    /// what it earned (for `GET /api/training/history`).
    Evaluated {
        episode: u32,
        steps: u32,
        reward: f64,
    },
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
