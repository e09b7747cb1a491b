//! One browser session's rules (protocol.md `/ws`), with no I/O: every method returns the events
//! to send. The [`crate::runner`] owns the socket and the clock.

use crate::policy::{Policy, Runtime};
use hamlet_env::rng::SessionRng;
use hamlet_env::wire::{state_update, FrameFacts};
use hamlet_env::World;
use hamlet_onnx::catalog;
use ipc_proto::browser::{
    Connected, EndReason, EpisodeEnd, EpisodeStart, ErrorCode, ErrorMsg, ModelLoaded, Position,
    ProbeResult, ServerMessage, SessionStatus, Settings,
};
use ipc_proto::inference::{
    EpisodePhase, FromInference, Probe, SessionCommand, SessionSnapshot, SessionStart, StartMode,
    StepProgress, SteppedFrame, MAX_SPEED, MIN_SPEED,
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

/// The session as it was between two steps, so steps computed ahead of the clock can be taken
/// back (see [`crate::runner`]): what a step changes, and whether play goes on (a step whose
/// network fails stops it).
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
            out.insert(
                0,
                msg(ServerMessage::Connected(Connected {
                    available_models: catalog::list(&s.models_dir),
                    session_id: s.id.clone(),
                    model: s.model_name(),
                    playing: s.playing,
                    speed: s.speed,
                    max_steps: s.max_steps,
                    resume_token: None,
                    watch_token: None,
                    resumed: None,
                    resume_error: None,
                    watching: None,
                    read_only: None,
                    epsilon: s.epsilon,
                    start_mode: s.start,
                    detail: s.detail,
                    recent_episodes: Vec::new(), // the metaserver keeps them
                })),
            );
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

    /// True when the clock should drive steps.
    pub fn wants_steps(&self) -> bool {
        self.playing && self.phase == EpisodePhase::Running
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

    /// One greedy step of the agent.
    pub fn step_once(&mut self) -> Out {
        if self.phase != EpisodePhase::Running {
            return Vec::new();
        }
        let (q, activations) = match self.evaluate_current() {
            Ok(x) => x,
            Err(failure) => return failure,
        };
        let (action, explored) = self.choose(&q);
        let activations = activations.map(|mut a| {
            if let Some(p) = self.policy.as_ref() {
                a.top = p.strongest(&a.h2, action as usize, 8);
            }
            a
        });
        let r = self
            .world
            .step_id(i64::from(action))
            .expect("argmax of 5 Q-values is 0..5");
        self.cumulative += r.reward;
        self.last_action = Some(action);
        self.last_reward = r.reward;
        self.report_step(SteppedFrame {
            progress: self.progress(),
            done: r.done,
            q_values: Some(q.to_vec()),
            // Said only once ε-greedy play is on, so greedy frames stay as small as before.
            explored: (self.epsilon > 0.0).then_some(explored),
            activations,
        })
    }

    /// The policy's Q-values (and activations, when asked for) in the current state; when it has
    /// none, the messages that say so (and play stops).
    fn evaluate_current(
        &mut self,
    ) -> Result<([f32; hamlet_env::N_ACTIONS], Option<Activations>), Out> {
        let obs = self.world.observation();
        let detail = self.detail;
        let failure = match self.policy.as_mut().map(|p| p.evaluate(&obs, detail)) {
            Some(Ok(x)) => return Ok(x),
            Some(Err(e)) => err(e.code(), e.to_string()),
            None => err(
                ErrorCode::ModelNotFound,
                "no model loaded: choose one with load_model",
            ),
        };
        self.playing = false;
        Err(vec![failure, self.snapshot_event()])
    }

    /// The messages of a step just taken: usually one (`Stepped`: the frame's facts and the
    /// snapshot); for an episode's last step the frame, its end, then the snapshot (see
    /// `SteppedFrame` for why).
    fn report_step(&mut self, step: SteppedFrame) -> Out {
        let end = if step.done {
            Some(EndReason::MeterDepleted)
        } else if self.world.steps() >= self.max_steps {
            Some(EndReason::MaxSteps)
        } else {
            None
        };
        let Some(reason) = end else {
            return vec![FromInference::Stepped(Box::new(step))];
        };
        let (frame, _) = step.into_parts();
        let mut out = vec![FromInference::State(Box::new(frame))];
        self.end_episode(reason, &mut out);
        out.push(self.snapshot_event());
        out
    }

    /// ε-greedy: with probability ε a random action (the session's RNG, drawn only when ε > 0, so
    /// greedy play consumes no numbers), else the largest Q-value. (action, explored).
    fn choose(&mut self, q: &[f32; hamlet_env::N_ACTIONS]) -> (u8, bool) {
        if self.epsilon > 0.0 && self.rng.next_f64() < self.epsilon {
            (self.rng.below(hamlet_env::N_ACTIONS) as u8, true)
        } else {
            (hamlet_env::argmax(q) as u8, false)
        }
    }

    /// Handles command number `seq`; the snapshots it produces say it was applied.
    pub fn handle_numbered(&mut self, seq: u64, cmd: SessionCommand) -> Out {
        self.commands_applied = self.commands_applied.max(seq);
        self.handle(cmd)
    }

    pub fn handle(&mut self, cmd: SessionCommand) -> Out {
        let mut out = Vec::new();
        match cmd {
            SessionCommand::Play => self.playing = true,
            SessionCommand::Pause => self.playing = false,
            SessionCommand::Step => {
                if !self.playing {
                    return match self.phase {
                        EpisodePhase::Running => self.step_once(),
                        // Stepping between episodes begins the next one at once.
                        EpisodePhase::Ended => self.start_next_episode(),
                    };
                }
            }
            SessionCommand::Reset => {
                if self.phase == EpisodePhase::Running {
                    self.end_episode(EndReason::Reset, &mut out);
                }
                out.extend(self.start_next_episode());
                return out;
            }
            SessionCommand::SetSpeed { speed } => {
                self.speed = clamp_speed(speed);
                out.push(self.settings());
            }
            SessionCommand::SetEpsilon { epsilon } => {
                self.epsilon = epsilon.clamp(0.0, 1.0);
                out.push(self.settings());
            }
            SessionCommand::SetStart { mode } => {
                self.start = mode;
                out.push(self.settings());
            }
            SessionCommand::SetDetail { activations } => {
                if activations && !self.policy.as_ref().is_some_and(|p| p.has_activations()) {
                    self.detail = false;
                    out.push(no_activations(self.model_name().as_deref()));
                } else {
                    self.detail = activations;
                }
                out.push(self.settings());
            }
            SessionCommand::LoadModel { model } => return self.load_model(&model),
            SessionCommand::Status => {
                out.push(msg(ServerMessage::SessionStatus(SessionStatus {
                    session_id: self.id.clone(),
                    model: self.model_name(),
                    playing: self.playing,
                    speed: self.speed,
                    max_steps: self.max_steps,
                    episode: self.episode,
                    step: self.world.steps(),
                    cumulative_reward: self.cumulative,
                })));
                return out;
            }
        }
        out.push(self.snapshot_event());
        out
    }

    /// The teaching settings, for the owner and every watcher (protocol.md `settings`).
    fn settings(&self) -> FromInference {
        msg(ServerMessage::Settings(Settings {
            speed: self.speed,
            epsilon: self.epsilon,
            start_mode: self.start,
            detail: self.detail,
        }))
    }

    /// "What if": the model's choice in the current state edited as `p` says. Nothing of the
    /// session changes (its world, episode, RNG and play state), so a probe never alters what
    /// the session does next.
    pub fn probe(&mut self, p: &Probe) -> Result<Box<ProbeResult>, ErrorMsg> {
        let mut world = self.world;
        for &(meter, v) in &p.meters {
            world = hamlet_env::wire::with_wire_meter(&world, meter, v);
        }
        if let Some(at) = p.position {
            let mut s = world.snapshot();
            (s.x, s.y) = (at.x, at.y);
            world = World::restore(&s);
        }
        let failed = |code: ErrorCode, message: String| ErrorMsg { message, code };
        let Some(policy) = self.policy.as_mut() else {
            return Err(failed(ErrorCode::ModelNotFound, "no model loaded".into()));
        };
        let detail = policy.has_activations();
        let (q, activations) = policy
            .evaluate(&world.observation(), detail)
            .map_err(|e| failed(e.code(), e.to_string()))?;
        let action = hamlet_env::argmax(&q) as u8;
        let activations = activations.map(|mut a| {
            a.top = policy.strongest(&a.h2, action as usize, 8);
            a
        });
        let (x, y) = world.position();
        Ok(Box::new(ProbeResult {
            q_values: q.to_vec(),
            action,
            activations,
            meters: hamlet_env::wire::wire_meters(&world),
            position: Position { x, y },
        }))
    }

    fn load_model(&mut self, name: &str) -> Out {
        match Policy::load(self.rt, &self.models_dir, name) {
            Ok(p) => {
                let lost_detail = self.detail && !p.has_activations();
                self.policy = Some(p);
                if lost_detail {
                    self.detail = false;
                }
                let details = catalog::details(&self.models_dir, name).ok();
                let mut out = vec![msg(ServerMessage::ModelLoaded(ModelLoaded {
                    model: name.to_owned(),
                    details,
                }))];
                if lost_detail {
                    out.push(no_activations(Some(name)));
                }
                out.push(self.snapshot_event());
                out
            }
            Err(e) => vec![err(e.code(), e.to_string())],
        }
    }
}
