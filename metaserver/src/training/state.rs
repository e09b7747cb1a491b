//! The training hub's state: what it knows of the run (mirrored from the worker's events), its
//! viewers, who may control the run, and the commands its actor takes.

use super::history::RunHistory;
use super::pace::Pace;
use crate::client::Client;
use crate::cluster::training::AbandonedRun;
use crate::tokens::TokenHash;
use crate::workers::registry::WorkerControl;
use ipc_proto::browser::TrainingStatus;
use ipc_proto::training::{RunControl, TrainingConfig};
use serde::Serialize;
use std::collections::BTreeMap;

/// What the hub's actor is asked to do (by viewers, operators and the cluster).
pub(super) enum HubCmd {
    Start(Box<TrainingConfig>, Viewer),
    /// Cluster: a start another node had no slot for, with its starter's control-token hash.
    StartForwarded(Box<TrainingConfig>, Option<String>),
    /// Cluster: a queued start (`Start` or `StartForwarded`) to move to another node's free slot.
    MoveQueued(Box<HubCmd>),
    /// Run control, with the control token the message carried (if any).
    Control(RunControl, Viewer, Option<String>),
    /// An operator takes control of the run (a new control token).
    TakeControl(Viewer),
    Operator(WorkerControl),
    /// Cluster: a checked command from a viewer on another node.
    Remote(RunControl),
    /// Cluster: this node took the lease of a run whose holder is gone.
    Adopt(Box<AbandonedRun>),
    /// Cluster: another node holds the lease now; stop the worker without saving anything.
    LeaseLost,
    /// Cluster: the lease cannot be renewed (false: pause the run) or can again (true).
    LeaseReachable(bool),
}

/// A `/ws/training` connection as the hub sees it.
#[derive(Clone)]
pub(super) struct Viewer {
    pub id: u64,
    pub client: Client,
    /// The operator rule (loopback if allowed, or the admin token — in a header at connect, or
    /// in any message since).
    pub operator: bool,
}

/// Where the shared run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Idle,
    Running,
    Completed,
    Failed,
}

/// The training part of `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingInfo {
    pub state: RunState,
    pub is_training: bool,
    pub paused: bool,
    /// The episode being run (protocol.md's `current_episode`).
    pub current_episode: u32,
    pub episodes_completed: u32,
    pub total_episodes: u32,
    pub viewers: usize,
    pub worker_id: Option<String>,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub last_checkpoint_episode: Option<u32>,
}

pub(super) struct HubState {
    pub status: TrainingStatus,
    pub viewers: BTreeMap<u64, Client>,
    pub next_viewer: u64,
    pub run: RunState,
    pub worker: Option<(String, u32)>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// The last checkpoint: the episodes it holds and its file.
    pub checkpoint: Option<(u32, String)>,
    /// Why the worker was replaced, until the replacement reports where it resumed.
    pub pending_restart: Option<String>,
    /// Who may control the current run (protocol.md): the starting viewer, anyone with the
    /// token, operators.
    pub owner: Option<u64>,
    /// The token itself, only until it is given to the starter in its `training_started`.
    pub control_token: Option<String>,
    /// What presented tokens are compared with (also what survives a server restart).
    pub control_hash: Option<TokenHash>,
    /// The current (or last) run's figures, and the run before it.
    pub history: RunHistory,
    pub previous: Option<RunHistory>,
    /// How fast this machine trains, for the presets' expected durations (kept across restarts).
    pub pace: Pace,
    /// Cluster holder: the run is paused because the lease could not be renewed (not by its
    /// user); it resumes when the lease can be renewed again.
    pub lease_paused: bool,
    /// The run's user paused it (and has not resumed it).
    pub user_paused: bool,
}

impl HubState {
    pub fn new(pace: Pace) -> HubState {
        HubState {
            status: TrainingStatus {
                is_training: false,
                current_episode: 0,
                total_episodes: 0,
                paused: false,
                config: None,
                last_episode: None,
                can_control: None,
                best: None,
                operator: None,
            },
            viewers: BTreeMap::new(),
            next_viewer: 1,
            run: RunState::Idle,
            worker: None,
            restarts: 0,
            last_error: None,
            checkpoint: None,
            pending_restart: None,
            owner: None,
            control_token: None,
            control_hash: None,
            history: RunHistory::default(),
            previous: None,
            pace,
            lease_paused: false,
            user_paused: false,
        }
    }

    /// The status row of `/api/status`.
    pub fn info(&self) -> TrainingInfo {
        TrainingInfo {
            state: self.run,
            is_training: self.status.is_training,
            paused: self.status.paused,
            current_episode: self.status.current_episode,
            episodes_completed: self.status.last_episode.as_ref().map_or(0, |e| e.episode),
            total_episodes: self.status.total_episodes,
            viewers: self.viewers.len(),
            worker_id: self.worker.as_ref().map(|w| w.0.clone()),
            worker_pid: self.worker.as_ref().map(|w| w.1),
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            last_checkpoint_episode: self.checkpoint.as_ref().map(|c| c.0),
        }
    }
}

/// protocol.md's `current_episode`: the episode being run, as the original counted it — after
/// `episode_complete` for 3 it is 4 (the last episode's number once all are done).
pub(super) fn episode_being_run(completed: u32, total: u32) -> u32 {
    (completed + 1).min(total.max(completed))
}

/// What a cluster's holder tells Redis, in order, by one task (the hub never waits for Redis).
pub(super) enum RedisUpdate {
    /// The latest `training_status`, for late joiners on other nodes.
    Status,
    /// The run's description changed (started, paused, resumed).
    Run,
    /// A checkpoint file to upload with the run's description.
    Checkpoint(String),
    /// The run is over: final status, forget the run, release the lease.
    Finished,
}

/// The run's worker process.
pub(super) type TrainingWorker =
    crate::workers::supervisor::WorkerHandle<ipc_proto::training::ToTraining>;
