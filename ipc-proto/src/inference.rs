//! Metaserver ⇄ `worker-inference`.

pub use crate::browser::StartMode;
use crate::browser::{ErrorMsg, Position, ProbeResult, ServerMessage};
use crate::wire::{Activations, StateUpdate};
use serde::{Deserialize, Serialize};

/// A validated browser command for an inference session (the metaserver parsed the JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum SessionCommand {
    Play,
    Pause,
    Step,
    Reset,
    /// Already clamped to [`MIN_SPEED`], [`MAX_SPEED`].
    SetSpeed {
        speed: f64,
    },
    /// A plain file name from the models listing (never a path).
    LoadModel {
        model: String,
    },
    Status,
    /// ε-greedy play: with probability ε the action is random (the session's seeded RNG).
    /// Already checked to lie in [0, 1].
    SetEpsilon {
        epsilon: f64,
    },
    /// Where the next episodes start.
    SetStart {
        mode: StartMode,
    },
    /// Whether `state_update`s carry the network's hidden layers.
    SetDetail {
        activations: bool,
    },
}

/// A validated `probe` ("what if"): the session's current observation with these meters (browser
/// scale, as `state_update`'s `agent_meters`; absent ones unchanged) and this cell.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Probe {
    pub meters: Vec<(hamlet_env::Meter, f64)>,
    pub position: Option<Position>,
}

pub const MIN_SPEED: f64 = 0.1;
pub const MAX_SPEED: f64 = 10.0;
pub const DEFAULT_MAX_STEPS: u32 = 500;

pub use hamlet_env::WorldSnapshot;

/// Where the session is between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodePhase {
    /// The episode is in progress.
    Running,
    /// The episode ended; the next starts after the inter-episode pause.
    Ended,
}

/// Everything a replacement worker needs to continue a session where its predecessor stopped.
/// Sent after every state change and an episode's last step; other steps send what they changed
/// ([`StepProgress`]), which the metaserver applies to the last snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    pub session_id: String,
    pub world: WorldSnapshot,
    pub episode: u32,
    pub cumulative_reward: f64,
    pub last_action: Option<u8>,
    pub last_reward: f64,
    pub phase: EpisodePhase,
    pub model: Option<String>,
    pub speed: f64,
    pub playing: bool,
    pub max_steps: u32,
    /// Sequence number of the last command the worker processed. The metaserver replays the
    /// commands after it to a replacement worker, so none is lost with a dying worker.
    #[serde(default)]
    pub commands_applied: u64,
    /// ε of ε-greedy play (0: greedy).
    #[serde(default)]
    pub epsilon: f64,
    #[serde(default)]
    pub start: StartMode,
    /// The session's random number generator, so a resumed session draws the same numbers.
    #[serde(default)]
    pub rng: hamlet_env::rng::SessionRng,
    /// `state_update`s carry activations.
    #[serde(default)]
    pub detail: bool,
}

/// How a worker is given its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStart {
    pub session_id: String,
    /// Model for a new session (`None`: the worker has nothing to load and says so).
    pub model: Option<String>,
    pub max_steps: u32,
    /// Resume from this snapshot instead of starting fresh.
    pub snapshot: Option<SessionSnapshot>,
    /// Send `connected` for a fresh session. False when a worker died before its first snapshot:
    /// the browser already has its `connected` and is told `worker_restarted` instead.
    #[serde(default = "yes")]
    pub announce: bool,
    /// Seed of a fresh session's random number generator (chosen by the metaserver).
    #[serde(default)]
    pub seed: u64,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToInference {
    /// Take a session (a warm worker waits for this after the handshake).
    Start(Box<SessionStart>),
    /// A browser command, numbered by the metaserver (1, 2, …) per session.
    Command {
        seq: u64,
        command: SessionCommand,
    },
    Ping {
        seq: u64,
    },
    /// Evaluate the session's model on an edited observation for connection `id`; the session
    /// itself does not change (not numbered: it is not a command a replacement must replay).
    Probe {
        id: u64,
        probe: Probe,
    },
    /// Compute the session's next steps ahead and send them as one [`FromInference::Ahead`]
    /// (issue 34: the metaserver releases them to the browsers at the session's pace). `epoch` is
    /// the last `TakeBack`'s (0 before any); `released`: how many entries the metaserver has
    /// shown, which the worker need no longer be able to take back.
    Produce {
        epoch: u64,
        released: u64,
    },
    /// Return the session to just after entry number `released` (entries count from 1 since the
    /// worker started), forgetting every later one, and number the next batches with `epoch`.
    /// Sent before every command and probe while steps may have been computed past the last one
    /// shown, so each acts on the step the browser last saw.
    TakeBack {
        epoch: u64,
        released: u64,
    },
    /// Exit cleanly.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromInference {
    /// After the handshake: ONNX Runtime is initialised, the worker can take a session.
    Ready,
    /// For the browser.
    Message(ServerMessage),
    /// A `state_update` for the browser — the one message of every step. It travels outside
    /// [`FromInference::Message`] because `ServerMessage` is internally tagged (`"type"`), and
    /// decoding an internally tagged enum first buffers the whole value as generic content, then
    /// decodes it again: at 256 sessions that was about a third of the metaserver's CPU (profile
    /// in BENCHMARKS.md). Use [`FromInference::for_browser`] to make one and
    /// [`FromInference::into_browser`] to read one.
    State(Box<StateUpdate>),
    /// One step of a playing session: its frame and what it changed in the session, in one
    /// message (the step that ends an episode is sent as `State`, `episode_complete`, `Snapshot`
    /// instead — see [`SteppedFrame`]).
    Stepped(Box<SteppedFrame>),
    /// The session's state after a step or state change.
    Snapshot(Box<SessionSnapshot>),
    /// The answer to `Produce`: steps computed ahead, not yet for the browser.
    Ahead(Box<StepsAhead>),
    Pong {
        seq: u64,
    },
    /// The answer to `Probe` `id`, for that connection only.
    Probed {
        id: u64,
        answer: Result<Box<ProbeResult>, ErrorMsg>,
    },
    /// The worker cannot continue (e.g. ONNX Runtime failed to load); it exits after sending this.
    Fatal {
        reason: String,
    },
}

impl FromInference {
    /// A message for the browser, `state_update`s on their fast path.
    pub fn for_browser(m: ServerMessage) -> FromInference {
        match m {
            ServerMessage::StateUpdate(u) => FromInference::State(u),
            other => FromInference::Message(other),
        }
    }

    /// The browser message this carries, if any.
    pub fn into_browser(self) -> Option<ServerMessage> {
        match self {
            FromInference::Message(m) => Some(m),
            FromInference::State(u) => Some(ServerMessage::StateUpdate(u)),
            FromInference::Stepped(s) => {
                Some(ServerMessage::StateUpdate(Box::new(s.into_parts().0)))
            }
            _ => None,
        }
    }
}

/// Entries of a playing session computed ahead of the browser, in order (issue 34).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepsAhead {
    /// The `Produce`'s epoch: a batch computed before a take-back is not shown.
    pub epoch: u64,
    /// The number of the first entry.
    pub first: u64,
    /// Empty when the session does not play (it was paused meanwhile).
    pub entries: Vec<PacedEntry>,
}

/// One step (or an episode's start) computed ahead, with when to show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PacedEntry {
    /// How long after the previous entry this one is due, µs: the step period, or the pause
    /// between episodes.
    pub wait_us: u64,
    /// Its messages, as the worker would have sent them at once (a `Stepped`; an episode's last
    /// step, its frame, end and snapshot; an episode's start, its messages).
    pub events: Vec<FromInference>,
}

/// What a step changes in a session: the world, the episode's reward so far, the action and its
/// reward, the random-number state — and the commands applied, since a `step` command is applied
/// by a step. Everything else in a [`SessionSnapshot`] (its id, model, speed, settings) stays as
/// the last snapshot before the step said.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    pub world: WorldSnapshot,
    pub episode: u32,
    pub cumulative_reward: f64,
    pub last_action: Option<u8>,
    pub last_reward: f64,
    pub rng: hamlet_env::rng::SessionRng,
    pub commands_applied: u64,
}

impl SessionSnapshot {
    /// The part of the snapshot a step changes.
    pub fn progress(&self) -> StepProgress {
        StepProgress {
            world: self.world,
            episode: self.episode,
            cumulative_reward: self.cumulative_reward,
            last_action: self.last_action,
            last_reward: self.last_reward,
            rng: self.rng,
            commands_applied: self.commands_applied,
        }
    }

    /// The session after a step that was not the episode's last (so it is still running).
    pub fn advance(&mut self, p: &StepProgress) {
        self.world = p.world;
        self.episode = p.episode;
        self.cumulative_reward = p.cumulative_reward;
        self.last_action = p.last_action;
        self.last_reward = p.last_reward;
        self.rng = p.rng;
        self.commands_applied = p.commands_applied;
        self.phase = EpisodePhase::Running;
    }

    /// Follows the worker's messages in order: a `Snapshot` replaces this one, a `Stepped`
    /// advances it. True when `ev` changed it.
    pub fn follow(&mut self, ev: &FromInference) -> bool {
        match ev {
            FromInference::Snapshot(s) => *self = (**s).clone(),
            FromInference::Stepped(s) => self.advance(&s.progress),
            _ => return false,
        }
        true
    }
}

/// One step of a playing session in one message: what the step changed in the session (so a
/// replacement worker can resume from it) and the few facts of the step the session does not hold.
/// The `state_update` is rendered from them by whoever shows it (the metaserver): every other
/// field of the frame — the grid, the affordances, the names — is the same in every frame, and
/// building, encoding and decoding it twice per step (a ~1 KB message and a snapshot beside it)
/// was most of a worker's and much of the metaserver's work per frame at 256 sessions
/// (BENCHMARKS.md, issue 19). For the same reason it carries no whole snapshot: the session's id
/// and model name, cloned and encoded in every step, never change in one (issue 34).
///
/// The step that ends an episode is not sent this way: its snapshot must come after the
/// `episode_complete`, so a worker that dies between the two is replaced from the step before,
/// never from a finished episode whose end the browser was not told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteppedFrame {
    /// The session after the step: the world, the episode, the action, its reward and the
    /// cumulative reward the frame shows.
    pub progress: StepProgress,
    pub done: bool,
    pub q_values: Option<Vec<f32>>,
    pub explored: Option<bool>,
    pub activations: Option<Activations>,
}

impl SteppedFrame {
    /// The `state_update` this step shows, and what the step changed.
    pub fn into_parts(self) -> (StateUpdate, StepProgress) {
        let p = self.progress;
        let frame = hamlet_env::wire::state_update(
            &hamlet_env::World::restore(&p.world),
            hamlet_env::wire::FrameFacts {
                episode: p.episode,
                action: p.last_action,
                reward: p.last_reward,
                cumulative_reward: p.cumulative_reward,
                done: self.done,
                q_values: self.q_values,
                heat_map: None,
                explored: self.explored,
                activations: self.activations,
            },
        );
        (frame, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamlet_env::wire::{state_update, FrameFacts};
    use hamlet_env::World;

    fn snapshot_of(
        w: &World,
        episode: u32,
        cumulative: f64,
        action: u8,
        reward: f64,
    ) -> SessionSnapshot {
        SessionSnapshot {
            session_id: "s".into(),
            world: w.snapshot(),
            episode,
            cumulative_reward: cumulative,
            last_action: Some(action),
            last_reward: reward,
            phase: EpisodePhase::Running,
            model: Some("m.onnx".into()),
            speed: 1.0,
            playing: true,
            max_steps: 500,
            commands_applied: 0,
            epsilon: 0.0,
            start: StartMode::Fixed,
            rng: Default::default(),
            detail: false,
        }
    }

    /// The frame the metaserver renders from a `Stepped` message is the frame the worker would
    /// have built itself, field for field, along a whole episode of every action.
    #[test]
    fn a_stepped_frame_renders_the_state_update_the_worker_would_have_sent() {
        let mut w = World::new();
        let mut cumulative = 0.0;
        for i in 0..200u32 {
            let action = (i * 7 % 5) as u8;
            let out = w.step_id(i64::from(action)).unwrap();
            cumulative += out.reward;
            let q = vec![0.1 * f32::from(action), -1.5, 2.0, 0.0, 3.25];
            let explored = (i % 3 == 0).then_some(i % 2 == 0);
            let want = state_update(
                &w,
                FrameFacts {
                    episode: 4,
                    action: Some(action),
                    reward: out.reward,
                    cumulative_reward: cumulative,
                    done: out.done,
                    q_values: Some(q.clone()),
                    heat_map: None,
                    explored,
                    activations: None,
                },
            );
            let snapshot = snapshot_of(&w, 4, cumulative, action, out.reward);
            let stepped = SteppedFrame {
                progress: snapshot.progress(),
                done: out.done,
                q_values: Some(q),
                explored,
                activations: None,
            };
            let (got, progress) = stepped.clone().into_parts();
            assert_eq!(got, want, "step {}", i + 1);
            let mut followed = snapshot_of(&World::new(), 1, 0.0, 0, 0.0);
            followed.phase = EpisodePhase::Ended;
            assert!(followed.follow(&FromInference::Stepped(Box::new(stepped))));
            assert_eq!(followed, snapshot, "a followed snapshot is the step's");
            assert_eq!(progress, snapshot.progress());
            if out.done {
                break;
            }
        }
    }
}
