//! Browser-facing JSON messages (`protocol.md`), server → client. Workers produce them as typed
//! values; only the metaserver turns them into JSON text.

use crate::training::config::TrainingConfig;
use crate::wire::{Activations, StateUpdate, WireMeters};
use serde::{Deserialize, Serialize};

/// Where episodes start: world.md's (4, 4), or a uniformly drawn empty cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    #[default]
    Fixed,
    Random,
}

/// Machine-readable reason in an `error` frame (`code`); the `message` is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// A binary WebSocket frame (the protocol is text only).
    BinaryFrame,
    /// `command` missing or not one we know.
    UnknownCommand,
    /// A field has the wrong type.
    InvalidField,
    /// A number outside its allowed range, or not finite.
    OutOfRange,
    /// `load_model` named something that is not a plain file name from the listing.
    InvalidModelName,
    /// The named model is not in the models directory.
    ModelNotFound,
    /// The model file exists but cannot be used (unreadable, wrong shapes).
    InvalidModel,
    /// The worker behind this session failed.
    WorkerFailed,
    /// `start_training` while a run is in progress.
    TrainingInProgress,
    /// A training command that needs a run when none is active.
    NotTraining,
    /// The training run failed.
    TrainingFailed,
    /// `--max-sessions` reached.
    TooManySessions,
    /// The client sends faster than it may.
    RateLimited,
    /// The server is shutting down.
    ShuttingDown,
    /// `set_detail` for a model without hidden-layer outputs.
    NoActivations,
    /// Run control from a viewer who neither started the run nor holds its control token.
    NotRunOwner,
    /// Another connection presented this session's resume token and took it over (close 4001).
    SessionTakenOver,
    /// A watcher's command: watch links are read-only.
    ReadOnly,
    /// A watch link that leads to no session (unknown or expired).
    UnknownWatchLink,
    /// `--max-watchers` watchers already watch this session.
    TooManyWatchers,
    /// `start_training` from a non-operator where `--start-training operators`, or a request
    /// beyond what students may start (`--max-student-episodes`); `take_control` from a
    /// non-operator.
    OperatorsOnly,
    /// A cluster node cannot reach Redis: resume, watch links and cluster training are
    /// unavailable until it can (cluster.md); running sessions are unaffected.
    StoreUnavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub message: String,
    pub code: ErrorCode,
}

/// First frame of an inference session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    pub available_models: Vec<String>,
    pub session_id: String,
    pub model: Option<String>,
    pub playing: bool,
    pub speed: f64,
    pub max_steps: u32,
    /// The owner's secret way back into this session (sessions.md); never sent to watchers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// The secret of the read-only share link; owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_token: Option<String>,
    /// The connection came back to an existing session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// Why a presented resume token did not lead back (`unknown_or_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_error: Option<String>,
    /// A watcher's `connected`: the id of the session it watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watching: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// **new**: the session's teaching settings (with `speed` above), so a reloaded page or a
    /// watcher shows them.
    #[serde(default)]
    pub epsilon: f64,
    #[serde(default)]
    pub start_mode: StartMode,
    #[serde(default)]
    pub detail: bool,
    /// **new**: the session's last ≤ 100 episode ends, oldest first (for the survival chart after
    /// a reload).
    #[serde(default)]
    pub recent_episodes: Vec<EpisodeSummary>,
}

/// A session's teaching settings (protocol.md `settings`): sent to the owner and every watcher
/// whenever one changes (`connected` carries the same fields).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub speed: f64,
    #[serde(default)]
    pub epsilon: f64,
    #[serde(default)]
    pub start_mode: StartMode,
    /// `state_update`s carry activations.
    #[serde(default)]
    pub detail: bool,
}

impl Connected {
    /// The settings this `connected` carries.
    pub fn settings(&self) -> Settings {
        Settings {
            speed: self.speed,
            epsilon: self.epsilon,
            start_mode: self.start_mode,
            detail: self.detail,
        }
    }

    /// Brings the settings up to date.
    pub fn set_settings(&mut self, s: Settings) {
        self.speed = s.speed;
        self.epsilon = s.epsilon;
        self.start_mode = s.start_mode;
        self.detail = s.detail;
    }
}

/// One finished episode of a session, as `connected.recent_episodes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeSummary {
    pub episode: u32,
    pub length: u32,
    pub reward: f64,
    pub reason: EndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
}

impl From<&EpisodeEnd> for EpisodeSummary {
    fn from(e: &EpisodeEnd) -> Self {
        EpisodeSummary {
            episode: e.episode,
            length: e.steps,
            reward: e.total_reward,
            reason: e.reason,
            meter: e.meter.clone(),
        }
    }
}

/// The answer to one connection's `probe` ("what if"): the session's model on the edited
/// observation. The session itself is unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub q_values: Vec<f32>,
    /// The greedy action.
    pub action: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Activations>,
    /// What was evaluated: the meters (browser scale) and the agent's cell.
    pub meters: WireMeters,
    pub position: Position,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub x: i32,
    pub y: i32,
}

/// Reply to the inference `status` command: `connected` fields plus where the session is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session_id: String,
    pub model: Option<String>,
    pub playing: bool,
    pub speed: f64,
    pub max_steps: u32,
    pub episode: u32,
    pub step: u32,
    pub cumulative_reward: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStart {
    pub episode: u32,
    /// Inference: the model playing this episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Training: ε at the start of this episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Training with `pacing: replay`: this episode is a recording played beside the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<bool>,
    /// With `replay`: the episode training has reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_episode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    MeterDepleted,
    Reset,
    MaxSteps,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeEnd {
    pub episode: u32,
    pub steps: u32,
    pub total_reward: f64,
    pub reason: EndReason,
    /// For `meter_depleted`: which meter reached 0 (`energy`, `hygiene` or `satiation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
}

/// What a model file says about itself (`metadata_props`) plus file facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelDetails {
    pub name: String,
    pub arch: Option<String>,
    pub obs_dim: Option<u32>,
    pub n_actions: Option<u32>,
    pub bytes: u64,
    /// Seconds since the Unix epoch.
    pub modified: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes_trained: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_avg_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_avg_length: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// **new**: what the model achieved — steps survived and return of its greedy evaluation
    /// (the UI names models by these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy_return: Option<f64>,
    /// **new**: the training room whose run produced it (rooms.md), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLoaded {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRestarted {
    pub reason: String,
    pub resumed_episode: u32,
    pub resumed_step: u32,
}

/// Latest `episode_complete` of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeComplete {
    pub episode: u32,
    pub reward: f64,
    pub length: u32,
    pub loss: f64,
    pub epsilon: f64,
    pub avg_reward_5: f64,
    pub avg_length_5: f64,
    pub avg_loss_5: f64,
    pub buffer_size: u32,
    /// **new**: why the episode ended (`meter_depleted` or `max_steps`)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    /// …and for `meter_depleted`, which meter (`energy`, `hygiene` or `satiation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<String>,
}

/// A greedy evaluation of the network being trained (protocol.md: every `eval_every`
/// episodes): one episode with no random moves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Episodes completed when it was taken.
    pub episode: u32,
    pub steps: u32,
    #[serde(rename = "return")]
    pub reward: f64,
}

impl Evaluation {
    /// Survival first, then return (protocol.md: how the best model is chosen).
    pub fn better_than(&self, other: &Evaluation) -> bool {
        (self.steps, self.reward) > (other.steps, other.reward)
    }
}

/// **new** `evaluation` message: a greedy evaluation, and the best so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub episode: u32,
    pub steps: u32,
    #[serde(rename = "return")]
    pub reward: f64,
    pub best: Evaluation,
    /// It survives `max_steps` with a return of at least 1000.
    pub competent: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStatus {
    pub is_training: bool,
    pub current_episode: u32,
    pub total_episodes: u32,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<TrainingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_episode: Option<EpisodeComplete>,
    /// **new**, per viewer: whether this connection may pause, resume or stop the run (it
    /// started it, or is an operator). A holder of the run's control token may too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_control: Option<bool>,
    /// **new**: the best greedy evaluation of the run so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Evaluation>,
    /// **new**, per viewer: this connection counts as an operator (loopback or the admin token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStarted {
    pub num_episodes: u32,
    pub config: TrainingConfig,
    /// Only in the starter's copy: the secret that lets any connection control the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingComplete {
    pub model_saved: Option<String>,
    pub final_avg_reward: f64,
    pub final_avg_length: f64,
    /// **new**: true when the run was ended early by `stop`.
    #[serde(default)]
    pub stopped: bool,
    /// **new**: the greedy evaluation of the saved network (the best of the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Evaluation>,
    /// **new**: the run ended because an evaluation was competent (`stop_when_competent`).
    #[serde(default)]
    pub competent: bool,
}

/// **new** `control_granted`: this connection now controls the run (an operator's
/// `take_control`); the token replaces the one the starter had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlGranted {
    pub control_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRestarted {
    pub reason: String,
    pub resumed_from_episode: u32,
}

/// A room's `start_training` waits for a free training slot (rooms.md "The pool"): its place in
/// the queue, from 1. `training_started` follows when a slot frees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub room: String,
    pub position: u32,
}

/// Every server → browser message; `"type"` is the snake_case variant name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Connected(Connected),
    SessionStatus(SessionStatus),
    EpisodeStart(EpisodeStart),
    StateUpdate(Box<StateUpdate>),
    EpisodeEnd(EpisodeEnd),
    ModelLoaded(ModelLoaded),
    Error(ErrorMsg),
    WorkerRestarted(WorkerRestarted),
    TrainingStatus(Box<TrainingStatus>),
    TrainingStarted(Box<TrainingStarted>),
    EpisodeComplete(EpisodeComplete),
    TrainingComplete(TrainingComplete),
    Paused {},
    Resumed {},
    TrainingRestarted(TrainingRestarted),
    Evaluation(Evaluated),
    ControlGranted(ControlGranted),
    Settings(Settings),
    ProbeResult(Box<ProbeResult>),
    Queued(Queued),
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error(ErrorMsg {
            message: message.into(),
            code,
        })
    }

    /// The `"type"` string, for metrics labels and logs (a bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Connected(_) => "connected",
            ServerMessage::SessionStatus(_) => "session_status",
            ServerMessage::EpisodeStart(_) => "episode_start",
            ServerMessage::StateUpdate(_) => "state_update",
            ServerMessage::EpisodeEnd(_) => "episode_end",
            ServerMessage::ModelLoaded(_) => "model_loaded",
            ServerMessage::Error(_) => "error",
            ServerMessage::WorkerRestarted(_) => "worker_restarted",
            ServerMessage::TrainingStatus(_) => "training_status",
            ServerMessage::TrainingStarted(_) => "training_started",
            ServerMessage::EpisodeComplete(_) => "episode_complete",
            ServerMessage::TrainingComplete(_) => "training_complete",
            ServerMessage::Paused {} => "paused",
            ServerMessage::Resumed {} => "resumed",
            ServerMessage::TrainingRestarted(_) => "training_restarted",
            ServerMessage::Evaluation(_) => "evaluation",
            ServerMessage::ControlGranted(_) => "control_granted",
            ServerMessage::Settings(_) => "settings",
            ServerMessage::ProbeResult(_) => "probe_result",
            ServerMessage::Queued(_) => "queued",
        }
    }

    /// `state_update` frames may be dropped for a slow viewer; everything else must arrive.
    pub fn is_droppable(&self) -> bool {
        matches!(self, ServerMessage::StateUpdate(_))
    }

    /// [`to_json`](Self::to_json) with `"room"` first when a room is given (rooms.md: every
    /// `/ws/training` message says its room; clients of the original ignore it). `queued` names
    /// its room already.
    pub fn to_json_in(&self, room: Option<&str>) -> String {
        let json = self.to_json();
        match room {
            Some(room) if !matches!(self, ServerMessage::Queued(_)) => {
                let name = serde_json::to_string(room).expect("a string serialises");
                // `json` is an object that starts with its `"type"`: `{"type":…}`.
                format!("{{\"room\":{name},{}", &json[1..])
            }
            _ => json,
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising our own types cannot fail: no maps with non-string keys, no NaN (serde_json
        // writes `null` for non-finite floats rather than failing).
        // A `state_update` is about 1 KB, 2.5 KB with activations: starting at 4 KB saves the
        // string's regrowths (each a new allocation and a copy) on the relay's hottest path.
        let mut out = Vec::with_capacity(match self {
            ServerMessage::StateUpdate(_) => 4096,
            _ => 256,
        });
        serde_json::to_writer(&mut out, self).expect("ServerMessage serialises");
        // A plain frame is under 1 KB: without this, each frame waiting in a browser's queue (up
        // to 256 of them) would hold the whole 4 KB. glibc's `realloc` shrinks a block in place,
        // without a copy.
        out.shrink_to_fit();
        // serde_json writes only valid UTF-8.
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}
