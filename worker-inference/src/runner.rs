//! The worker process: handshake, ONNX Runtime start-up, then one session driven by commands from
//! the metaserver and by the clock. Exits cleanly on `Shutdown`, on SIGTERM and when its socket
//! closes; the metaserver also sets a parent-death signal so it never outlives the metaserver.
//!
//! One loop owns the connection: it waits for a command, the step clock or the episode clock
//! (reading a frame is cancel-safe, so it can sit in the `select!`), then writes what the session
//! produced.
//!
//! **Steps computed ahead.** After a sleep, ONNX Runtime's `Run` costs ten times what it costs
//! back to back (its code and data have left the caches: issue 34 measured 114–130 µs against
//! 6–8 µs for our network). So at high speeds one tick computes the next [`steps_ahead`] steps
//! together and each later tick only sends the next of them; the browser still gets one step per
//! tick, in order, at the session's pace. Every message except a ping first takes back the steps
//! not yet sent ([`Ahead::take_back`]): a command, a probe or a replacement worker always meets
//! the step the browser last saw, as if nothing had been computed ahead.

use crate::clock::StepClock;
use crate::policy::Runtime;
use crate::profile::StepProfile;
use crate::session::{Checkpoint, Session};
use futures_util::SinkExt;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::inference::{EpisodePhase, FromInference, ToInference};
use ipc_proto::transport::{self, Connection};
use ipc_proto::{WorkerEnv, WorkerKind};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

type Conn = Connection<ToInference, FromInference>;

/// Test hook: a fresh (not resumed) session's worker writes a frame that is not a valid message
/// once its episode reaches this step, so end-to-end tests can check that the metaserver treats a
/// protocol error as a crash at once. Unset in production.
pub const ENV_FAULT_BAD_FRAME_AT_STEP: &str = "HAMLET_FAULT_BAD_FRAME_AT_STEP";

/// Why the worker stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    SocketClosed,
    Signal,
}

/// How far ahead of the clock steps are computed: about this much of the session's time…
const AHEAD: Duration = Duration::from_millis(100);
/// …and never more steps than this.
const MAX_STEPS_AHEAD: usize = 16;

/// Measurement knob for `scripts/bench` (issue 34): compute this many steps per computing tick
/// instead of [`steps_ahead`]'s choice (1: none ahead). Unset in production.
pub const ENV_STEPS_AHEAD: &str = "HAMLET_STEPS_AHEAD";

/// Steps computed per computing tick at this step period: 1 at speed 1 (a tick every 100 ms,
/// nothing to gain), 10 at speed 10.
pub fn steps_ahead(period: Duration) -> usize {
    ((AHEAD.as_secs_f64() / period.as_secs_f64()).round() as usize).clamp(1, MAX_STEPS_AHEAD)
}

/// One step computed and not yet sent: the session as it was before it, and its messages.
struct Computed {
    before: Checkpoint,
    events: Vec<FromInference>,
}

/// The steps computed ahead of the clock, oldest first. While there are any, the session itself
/// is past the step the browser saw; the first one's checkpoint is that step.
#[derive(Default)]
struct Ahead {
    steps: VecDeque<Computed>,
    /// [`ENV_STEPS_AHEAD`], when set.
    fixed: Option<usize>,
}

impl Ahead {
    /// Computes the next steps while the session plays on (a step that ends the episode or fails
    /// stops it).
    fn compute(&mut self, s: &mut Session) {
        let n = self.fixed.unwrap_or_else(|| steps_ahead(s.step_period()));
        for _ in 0..n {
            if !s.wants_steps() {
                break;
            }
            let before = s.checkpoint();
            let events = s.step_once();
            self.steps.push_back(Computed { before, events });
        }
    }

    /// Takes back the steps not sent: the session returns to the step the browser last saw.
    fn take_back(&mut self, s: &mut Session) {
        if let Some(first) = self.steps.front() {
            s.rewind(&first.before);
        }
        self.steps.clear();
    }
}

/// The session and its two clocks: the next step (while playing) and the next episode (after one
/// ended).
struct Playback {
    session: Option<Session>,
    /// The session continues a predecessor's (started from a snapshot).
    resumed: bool,
    step_clock: StepClock,
    episode_at: Option<Instant>,
    ahead: Ahead,
}

pub async fn run(env: WorkerEnv) -> anyhow::Result<Exit> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut conn: Conn = transport::worker_handshake(
        &env.socket,
        WorkerKind::Inference,
        &env.token,
        DEFAULT_MAX_FRAME,
    )
    .await?;
    let rt: &'static Runtime = match Runtime::init(&env.ort_lib) {
        Ok(rt) => Box::leak(Box::new(rt)),
        Err(e) => {
            let reason = e.to_string();
            let _ = conn
                .send(FromInference::Fatal {
                    reason: reason.clone(),
                })
                .await;
            anyhow::bail!(reason);
        }
    };
    conn.send(FromInference::Ready).await?;
    debug!("ready");
    let mut p = Playback {
        session: None,
        resumed: false,
        step_clock: StepClock::new()?,
        episode_at: None,
        ahead: Ahead {
            fixed: env_number(ENV_STEPS_AHEAD).map(|n: usize| n.clamp(1, MAX_STEPS_AHEAD)),
            ..Ahead::default()
        },
    };
    let bad_frame_at: Option<u32> = env_number(ENV_FAULT_BAD_FRAME_AT_STEP);
    let mut profile = StepProfile::from_env();
    loop {
        let now = Instant::now();
        profile.waiting();
        let (events, stepped) = tokio::select! {
            m = transport::recv(&mut conn) => match m {
                Err(_) => return Ok(Exit::SocketClosed),
                Ok(ToInference::Shutdown) => return Ok(Exit::Shutdown),
                Ok(m) => (p.on_message(m, rt, &env), false),
            },
            tick = p.step_clock.tick(), if p.step_clock.is_armed() => {
                tick?;
                profile.woke();
                let events = p.step();
                profile.computed();
                (events, true)
            }
            _ = sleep_until(p.episode_at.unwrap_or(now)), if p.episode_at.is_some() => {
                p.episode_at = None;
                (p.session_mut().start_next_episode(), false)
            }
            _ = sigterm.recv() => return Ok(Exit::Signal),
        };
        for e in events {
            conn.feed(e).await?;
        }
        conn.flush().await?;
        if stepped {
            profile.sent();
        }
        if bad_frame_at.is_some() && !p.resumed && p.sent_step() == bad_frame_at {
            // A header announcing 3 bytes, then bytes that are no MessagePack value.
            conn.get_mut()
                .write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
                .await?;
        }
        p.rearm_clocks()?;
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Playback {
    /// The episode's step the browser was last sent, once there is a session.
    fn sent_step(&self) -> Option<u32> {
        match self.ahead.steps.front() {
            Some(first) => Some(first.before.step()),
            None => self.session.as_ref().map(Session::step),
        }
    }

    fn session_mut(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("clocks only run with a session")
    }

    fn on_message(
        &mut self,
        m: ToInference,
        rt: &'static Runtime,
        env: &WorkerEnv,
    ) -> Vec<FromInference> {
        if !matches!(m, ToInference::Ping { .. }) {
            if let Some(s) = self.session.as_mut() {
                self.ahead.take_back(s);
            }
        }
        match m {
            ToInference::Ping { seq } => vec![FromInference::Pong { seq }],
            ToInference::Start(start) if self.session.is_none() => {
                info!(session = %start.session_id, resumed = start.snapshot.is_some(), "session started");
                self.resumed = start.snapshot.is_some();
                let (s, out) = Session::start(*start, rt, env.models_dir.clone());
                self.session = Some(s);
                out
            }
            ToInference::Start(_) => {
                warn!("second Start ignored");
                Vec::new()
            }
            ToInference::Command { seq, command } => match self.session.as_mut() {
                Some(s) => {
                    let period_before = s.step_period();
                    let out = s.handle_numbered(seq, command);
                    if s.step_period() != period_before {
                        // Re-paced from now at the new speed (by `rearm_clocks`).
                        let _ = self.step_clock.disarm();
                    }
                    out
                }
                None => Vec::new(),
            },
            ToInference::Probe { id, probe } => match self.session.as_mut() {
                Some(s) => vec![FromInference::Probed {
                    id,
                    answer: s.probe(&probe),
                }],
                None => Vec::new(),
            },
            ToInference::Shutdown => Vec::new(), // handled by the loop
        }
    }

    /// One clock-driven step: the next step computed ahead, computing more when none is left.
    fn step(&mut self) -> Vec<FromInference> {
        let s = self
            .session
            .as_mut()
            .expect("clocks only run with a session");
        if self.ahead.steps.is_empty() {
            self.ahead.compute(s);
        }
        self.ahead
            .steps
            .pop_front()
            .map(|c| c.events)
            .unwrap_or_default()
    }

    /// Arms the step clock while the session (as the browser saw it) plays, the episode clock
    /// once its episode ended.
    fn rearm_clocks(&mut self) -> std::io::Result<()> {
        let Some(s) = self.session.as_ref() else {
            return Ok(());
        };
        // Steps computed ahead were computed from a playing, running session.
        let (wants_steps, ended) = if self.ahead.steps.is_empty() {
            (s.wants_steps(), s.phase() == EpisodePhase::Ended)
        } else {
            (true, false)
        };
        if wants_steps {
            self.step_clock.arm(s.step_period())?;
        } else {
            self.step_clock.disarm()?;
        }
        if ended {
            self.episode_at
                .get_or_insert_with(|| Instant::now() + s.episode_gap());
        } else {
            self.episode_at = None;
        }
        Ok(())
    }
}
