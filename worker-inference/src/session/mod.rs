//! One browser session's rules (protocol.md `/ws`), with no I/O: every method returns the events
//! to send. The [`crate::runner`] owns the socket; the metaserver keeps the time.
//!
//! This file holds the session, its start and its frames; [`play`] its steps; [`commands`] what
//! the browser asks of it.

mod commands;
mod play;

use crate::policy::{Policy, Runtime};
use hamlet_env::rng::SessionRng;
use hamlet_env::wire::{state_update, FrameFacts};
use hamlet_env::World;
use hamlet_onnx::catalog;
use ipc_proto::browser::{
    Connected, EndReason, EpisodeEnd, EpisodeStart, ErrorCode, ServerMessage,
};
use ipc_proto::inference::{
    EpisodePhase, FromInference, SessionSnapshot, SessionStart, StartMode, StepProgress, MAX_SPEED,
    MIN_SPEED,
};
use ipc_proto::wire::Activations;
use std::path::PathBuf;
use std::time::Duration;

/// Step period at speed 1.
const BASE_PERIOD: Duration = Duration::from_millis(100);
/// Pause between episodes at speed 1.
const BASE_EPISODE_GAP: Duration = Duration::from_secs(2);

pub struct Session {
    id: String,
    world: World,
    episode: u32,
    cumulative: f64,
    last_action: Option<u8>,
    last_reward: f64,
    phase: EpisodePhase,
    speed: f64,
    playing: bool,
    max_steps: u32,
    policy: Option<Policy>,
    models_dir: PathBuf,
    rt: &'static Runtime,
    commands_applied: u64,
    /// ε-greedy play (0: greedy).
    epsilon: f64,
    start: StartMode,
    rng: SessionRng,
    /// `state_update`s carry activations.
    detail: bool,
}

type Out = Vec<FromInference>;

/// The session as it was between two steps, so steps computed ahead can be taken back (see
/// [`crate::ahead`]): what a step changes, and whether play goes on (a step whose network fails
/// stops it).
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    progress: StepProgress,
    phase: EpisodePhase,
    playing: bool,
}

impl Checkpoint {
    /// The episode's step at this point.
    pub fn step(&self) -> u32 {
        self.progress.world.step
    }
}

fn msg(m: ServerMessage) -> FromInference {
    FromInference::for_browser(m)
}

fn err(code: ErrorCode, message: impl Into<String>) -> FromInference {
    msg(ServerMessage::error(code, message))
}

fn no_activations(model: Option<&str>) -> FromInference {
    err(
        ErrorCode::NoActivations,
        format!(
            "model `{}` has no hidden-layer outputs (h1, h2), so there is nothing to show inside it",
            model.unwrap_or("none")
        ),
    )
}

fn clamp_speed(s: f64) -> f64 {
    if s.is_finite() {
        s.clamp(MIN_SPEED, MAX_SPEED)
    } else {
        1.0
    }
}

impl Session {
    /// Takes a session: fresh (`connected`, `episode_start`, the step-0 frame) or resumed from a
    /// snapshot — after a worker crash nothing for the browser (the metaserver tells it
    /// `worker_restarted`); when `announce`d (a session back from the store, for a browser that
    /// has not seen this worker) `connected` and the current frame.
    pub fn start(start: SessionStart, rt: &'static Runtime, models_dir: PathBuf) -> (Session, Out) {
        let mut out = Vec::new();
        let fresh = start.snapshot.is_none();
        let max_steps = start.max_steps.max(1);
        let snap = start.snapshot;
        let model = snap
            .as_ref()
            .map_or(start.model.clone(), |s| s.model.clone());
        let policy = match &model {
            None => None,
            Some(name) => match Policy::load(rt, &models_dir, name) {
                Ok(p) => Some(p),
                Err(e) => {
                    out.push(err(e.code(), e.to_string()));
                    None
                }
            },
        };
        let mut s = match snap {
            Some(sn) => Session {
                commands_applied: sn.commands_applied,
                id: start.session_id,
                world: World::restore(&sn.world),
                episode: sn.episode.max(1),
                cumulative: sn.cumulative_reward,
                last_action: sn.last_action,
                last_reward: sn.last_reward,
                phase: sn.phase,
                speed: clamp_speed(sn.speed),
                playing: sn.playing,
                max_steps: sn.max_steps.max(1),
                policy,
                models_dir,
                rt,
                epsilon: sn.epsilon.clamp(0.0, 1.0),
                start: sn.start,
                rng: sn.rng,
                detail: sn.detail,
            },
            None => Session {
                id: start.session_id,
                world: World::new(),
                episode: 1,
                cumulative: 0.0,
                last_action: None,
                last_reward: 0.0,
                phase: EpisodePhase::Running,
                speed: 1.0,
                playing: false,
                max_steps,
                policy,
                models_dir,
                rt,
                commands_applied: 0,
                epsilon: 0.0,
                start: StartMode::Fixed,
                rng: SessionRng::new(start.seed),
                detail: false,
            },
        };
        if start.announce {
            out.insert(0, s.connected());
        }
        if !fresh && start.announce {
            // Back from the session store: the page draws the world at once, without a step.
            let frame = s.current_frame();
            out.push(msg(frame));
        }
        if fresh {
            if model.is_none() && start.announce {
                out.push(err(
                    ErrorCode::ModelNotFound,
                    "no model is available: train one in the training view or add one to models/",
                ));
            }
            s.episode_start_frames(&mut out);
        }
        out.push(s.snapshot_event());
        (s, out)
    }

    /// `connected` for a browser that has not seen this worker (the metaserver adds the tokens
    /// and the recent episodes it keeps).
    fn connected(&self) -> FromInference {
        msg(ServerMessage::Connected(Connected {
            available_models: catalog::list(&self.models_dir),
            session_id: self.id.clone(),
            model: self.model_name(),
            playing: self.playing,
            speed: self.speed,
            max_steps: self.max_steps,
            resume_token: None,
            watch_token: None,
            resumed: None,
            resume_error: None,
            watching: None,
            read_only: None,
            epsilon: self.epsilon,
            start_mode: self.start,
            detail: self.detail,
            recent_episodes: Vec::new(),
        }))
    }

    pub fn model_name(&self) -> Option<String> {
        self.policy.as_ref().map(|p| p.name.clone())
    }

    pub fn playing(&self) -> bool {
        self.playing
    }

    pub fn phase(&self) -> EpisodePhase {
        self.phase
    }

    pub fn step_period(&self) -> Duration {
        BASE_PERIOD.div_f64(self.speed)
    }

    pub fn episode_gap(&self) -> Duration {
        BASE_EPISODE_GAP.div_f64(self.speed)
    }

    /// What a step changes, as it is now.
    fn progress(&self) -> StepProgress {
        StepProgress {
            world: self.world.snapshot(),
            episode: self.episode,
            cumulative_reward: self.cumulative,
            last_action: self.last_action,
            last_reward: self.last_reward,
            rng: self.rng,
            commands_applied: self.commands_applied,
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            progress: self.progress(),
            phase: self.phase,
            playing: self.playing,
        }
    }

    /// Takes the session back to `c`; its settings and model are untouched (only steps came
    /// after `c`, never a command).
    pub fn rewind(&mut self, c: &Checkpoint) {
        let p = &c.progress;
        self.world = World::restore(&p.world);
        self.episode = p.episode;
        self.cumulative = p.cumulative_reward;
        self.last_action = p.last_action;
        self.last_reward = p.last_reward;
        self.rng = p.rng;
        self.commands_applied = p.commands_applied;
        self.phase = c.phase;
        self.playing = c.playing;
    }

    /// The episode's current step.
    pub fn step(&self) -> u32 {
        self.world.steps()
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            session_id: self.id.clone(),
            world: self.world.snapshot(),
            episode: self.episode,
            cumulative_reward: self.cumulative,
            last_action: self.last_action,
            last_reward: self.last_reward,
            phase: self.phase,
            model: self.model_name(),
            speed: self.speed,
            playing: self.playing,
            max_steps: self.max_steps,
            commands_applied: self.commands_applied,
            epsilon: self.epsilon,
            start: self.start,
            rng: self.rng,
            detail: self.detail,
        }
    }

    fn snapshot_event(&self) -> FromInference {
        FromInference::Snapshot(Box::new(self.snapshot()))
    }

    /// Q-values of the current state (and its activations, when asked for), for the step-0 frame.
    fn q_now(&mut self) -> (Option<Vec<f32>>, Option<Activations>) {
        let obs = self.world.observation();
        let detail = self.detail;
        match self.policy.as_mut().map(|p| p.evaluate(&obs, detail)) {
            Some(Ok((q, acts))) => (Some(q.to_vec()), acts),
            _ => (None, None),
        }
    }

    /// The world as it is now, with the last step's action and reward.
    fn current_frame(&mut self) -> ServerMessage {
        let (q, activations) = self.q_now();
        ServerMessage::StateUpdate(Box::new(state_update(
            &self.world,
            FrameFacts {
                episode: self.episode,
                action: self.last_action,
                reward: self.last_reward,
                cumulative_reward: self.cumulative,
                q_values: q,
                activations,
                ..FrameFacts::default()
            },
        )))
    }

    fn episode_start_frames(&mut self, out: &mut Out) {
        out.push(msg(ServerMessage::EpisodeStart(EpisodeStart {
            episode: self.episode,
            model_name: self.model_name(),
            epsilon: None,
            replay: None,
            live_episode: None,
        })));
        let (q, activations) = self.q_now();
        out.push(msg(ServerMessage::StateUpdate(Box::new(state_update(
            &self.world,
            FrameFacts {
                episode: self.episode,
                q_values: q,
                activations,
                ..FrameFacts::default()
            },
        )))));
    }

    /// Starts the next episode (after the inter-episode pause, or at once after `reset`).
    pub fn start_next_episode(&mut self) -> Out {
        let mut out = Vec::new();
        self.episode += 1;
        self.world = self.start_world();
        self.cumulative = 0.0;
        self.last_action = None;
        self.last_reward = 0.0;
        self.phase = EpisodePhase::Running;
        self.episode_start_frames(&mut out);
        out.push(self.snapshot_event());
        out
    }

    /// Where an episode starts: world.md's cell, or (random starts) an empty cell drawn with the
    /// session's RNG.
    fn start_world(&mut self) -> World {
        match self.start {
            StartMode::Fixed => World::new(),
            StartMode::Random => {
                let cells: Vec<(i32, i32)> = World::empty_cells().collect();
                let (x, y) = cells[self.rng.below(cells.len())];
                World::new_at(x, y)
            }
        }
    }

    fn end_episode(&mut self, reason: EndReason, out: &mut Out) {
        let meter = (reason == EndReason::MeterDepleted)
            .then(|| self.world.depleted_meter().map(|m| m.name().to_owned()))
            .flatten();
        out.push(msg(ServerMessage::EpisodeEnd(EpisodeEnd {
            episode: self.episode,
            steps: self.world.steps(),
            total_reward: self.cumulative,
            reason,
            meter,
        })));
        self.phase = EpisodePhase::Ended;
    }
}
