//! The configuration of a training run, shared by every process: the metaserver validates it
//! (through the field table, `fields.rs`), `worker-training` runs it, checkpoints keep it.

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

/// How shown episodes reach viewers (protocol.md, **Pacing**).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// The original semantic: a shown episode is sent whole, one step per `step_delay`, and the
    /// run waits while it plays.
    #[default]
    Run,
    /// The run never waits: shown episodes are recorded and replayed to viewers beside it.
    Replay,
}

impl Pacing {
    pub fn as_str(self) -> &'static str {
        match self {
            Pacing::Run => "run",
            Pacing::Replay => "replay",
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
choice!(Pacing, [Pacing::Run, Pacing::Replay]);

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
    /// Runs recorded before evaluations were a field were evaluated every 10 episodes.
    pub fn ten() -> u32 {
        10
    }
}

/// A greedy evaluation that survives the step cap with at least this return is *competent*
/// (protocol.md `stop_when_competent`; the bench's time to competence).
pub const COMPETENT_RETURN: f64 = 1000.0;

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
    /// Episodes between greedy evaluations; the saved model is the best evaluated network.
    #[serde(default = "original::ten")]
    pub eval_every: u32,
    /// End the run at the first greedy evaluation that is competent ([`COMPETENT_RETURN`]).
    #[serde(default)]
    pub stop_when_competent: bool,
    #[serde(default)]
    pub pacing: Pacing,
    /// Episodes between the time machine's snapshots of the network (0: eight spread over the
    /// run); the first network and the best are kept too.
    #[serde(default)]
    pub snapshot_every: u32,
    /// Where the run's snapshots go: the stem of their model files (`STEM.snap-eNNNNN.onnx`),
    /// chosen by the metaserver when the run starts (never by a client); `None`: none are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<String>,
}

/// What a snapshot's model file name has between the run's stem and its episode: never in a name
/// a client chooses, so snapshots are told apart from the models offered.
pub const SNAPSHOT_INFIX: &str = ".snap-e";

impl TrainingConfig {
    /// Episodes between snapshots (the time machine): `snapshot_every`, or an eighth of the run.
    pub fn snapshot_period(&self) -> u32 {
        match self.snapshot_every {
            0 => self.num_episodes.div_ceil(8).max(1),
            n => n,
        }
    }

    /// The file name of the snapshot taken after `episode` episodes, when the run keeps them.
    pub fn snapshot_file(&self, episode: u32) -> Option<String> {
        let stem = self.snapshots.as_deref()?;
        let name = format!("{stem}{SNAPSHOT_INFIX}{episode:05}.onnx");
        crate::names::is_plain_model_name(&name).then_some(name)
    }

    /// Is a greedy evaluation of `steps` and `reward` competent under this configuration?
    pub fn is_competent(&self, steps: u32, reward: f64) -> bool {
        steps >= self.max_steps && reward >= COMPETENT_RETURN
    }
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
            eval_every: 10,
            stop_when_competent: false,
            pacing: Pacing::Run,
            snapshot_every: 0,
            snapshots: None,
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
