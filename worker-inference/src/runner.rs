//! The worker process: handshake, ONNX Runtime start-up, then one session driven by commands from
//! the metaserver and by the clock. Exits cleanly on `Shutdown`, on SIGTERM and when its socket
//! closes; the metaserver also sets a parent-death signal so it never outlives the metaserver.
//!
//! One loop owns the connection: it waits for a command, the step clock or the episode clock
//! (reading a frame is cancel-safe, so it can sit in the `select!`), then writes what the session
//! produced.

use crate::policy::Runtime;
use crate::session::Session;
use futures_util::SinkExt;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::inference::{EpisodePhase, FromInference, ToInference};
use ipc_proto::transport::{self, Connection};
use ipc_proto::{WorkerEnv, WorkerKind};
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

/// The session and its two clocks: the next step (while playing) and the next episode (after one
/// ended).
struct Playback {
    session: Option<Session>,
    /// The session continues a predecessor's (started from a snapshot).
    resumed: bool,
    step_at: Option<Instant>,
    episode_at: Option<Instant>,
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
        step_at: None,
        episode_at: None,
    };
    let bad_frame_at: Option<u32> = std::env::var(ENV_FAULT_BAD_FRAME_AT_STEP)
        .ok()
        .and_then(|v| v.parse().ok());
    loop {
        let now = Instant::now();
        let events = tokio::select! {
            m = transport::recv(&mut conn) => match m {
                Err(_) => return Ok(Exit::SocketClosed),
                Ok(ToInference::Shutdown) => return Ok(Exit::Shutdown),
                Ok(m) => p.on_message(m, rt, &env),
            },
            _ = sleep_until(p.step_at.unwrap_or(now)), if p.step_at.is_some() => p.step(),
            _ = sleep_until(p.episode_at.unwrap_or(now)), if p.episode_at.is_some() => {
                p.episode_at = None;
                p.session_mut().start_next_episode()
            }
            _ = sigterm.recv() => return Ok(Exit::Signal),
        };
        for e in events {
            conn.feed(e).await?;
        }
        conn.flush().await?;
        if bad_frame_at.is_some() && !p.resumed && p.current_step() == bad_frame_at {
            // A header announcing 3 bytes, then bytes that are no MessagePack value.
            conn.get_mut()
                .write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
                .await?;
        }
        p.rearm_clocks();
    }
}

impl Playback {
    /// The current episode's step, once there is a session.
    fn current_step(&self) -> Option<u32> {
        self.session.as_ref().map(|s| s.snapshot().world.step)
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
                        self.step_at = None; // re-pace from now at the new speed
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

    /// One clock-driven step, keeping a steady cadence without catching up in bursts.
    fn step(&mut self) -> Vec<FromInference> {
        let due = self.step_at.take().expect("branch guarded");
        let s = self.session_mut();
        let out = s.step_once();
        let period = s.step_period();
        let next = due + period;
        let now = Instant::now();
        self.step_at = Some(if next < now { now + period } else { next });
        out
    }

    fn rearm_clocks(&mut self) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        if s.wants_steps() {
            self.step_at
                .get_or_insert_with(|| Instant::now() + s.step_period());
        } else {
            self.step_at = None;
        }
        if s.phase() == EpisodePhase::Ended {
            self.episode_at
                .get_or_insert_with(|| Instant::now() + s.episode_gap());
        } else {
            self.episode_at = None;
        }
    }
}
