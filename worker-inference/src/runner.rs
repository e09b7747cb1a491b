//! The worker process: handshake, ONNX Runtime start-up, then one session driven by commands from
//! the metaserver and by the clock. Exits cleanly on `Shutdown`, on SIGTERM and when its socket
//! closes; the metaserver also sets a parent-death signal so it never outlives the metaserver.

use crate::policy::Runtime;
use crate::session::Session;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::inference::{FromInference, ToInference};
use ipc_proto::transport::{self, FrameWriter};
use ipc_proto::WorkerKind;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

/// What the metaserver tells a worker through its environment.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    pub socket: PathBuf,
    pub token: String,
    pub ort_lib: PathBuf,
    pub models_dir: PathBuf,
}

impl WorkerEnv {
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| {
            std::env::var(k).map_err(|_| {
                anyhow::anyhow!(
                    "{k} is not set: workers are started by the metaserver, not by hand"
                )
            })
        };
        Ok(WorkerEnv {
            socket: var(ipc_proto::ENV_SOCKET)?.into(),
            token: var(ipc_proto::ENV_TOKEN)?,
            ort_lib: var(ipc_proto::ENV_ORT_LIB)?.into(),
            models_dir: var(ipc_proto::ENV_MODELS_DIR)?.into(),
        })
    }
}

/// Why the worker stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    SocketClosed,
    Signal,
}

async fn send(w: &mut FrameWriter, events: Vec<FromInference>) -> anyhow::Result<()> {
    for e in events {
        w.write(&e).await?;
    }
    Ok(())
}

pub async fn run(env: WorkerEnv) -> anyhow::Result<Exit> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let (mut reader, mut writer) = transport::worker_handshake(
        &env.socket,
        WorkerKind::Inference,
        &env.token,
        DEFAULT_MAX_FRAME,
    )
    .await?;
    // The token is single-use; drop it from our environment so children (none today) can't see it.
    std::env::remove_var(ipc_proto::ENV_TOKEN);

    let rt: &'static Runtime = match Runtime::init(&env.ort_lib) {
        Ok(rt) => Box::leak(Box::new(rt)),
        Err(e) => {
            let reason = e.to_string();
            let _ = writer
                .write(&FromInference::Fatal {
                    reason: reason.clone(),
                })
                .await;
            anyhow::bail!(reason);
        }
    };
    writer.write(&FromInference::Ready).await?;
    debug!("ready");

    // A dedicated reader task: frame reads are not cancel-safe, so they never sit in a select!.
    let (tx, mut commands) = mpsc::channel::<ToInference>(64);
    tokio::spawn(async move {
        while let Ok(m) = reader.read::<ToInference>().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });

    let mut session: Option<Session> = None;
    let mut step_at: Option<Instant> = None;
    let mut episode_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let events = tokio::select! {
            m = commands.recv() => match m {
                None => return Ok(Exit::SocketClosed),
                Some(ToInference::Shutdown) => return Ok(Exit::Shutdown),
                Some(ToInference::Ping { seq }) => vec![FromInference::Pong { seq }],
                Some(ToInference::Start(start)) => {
                    if session.is_some() {
                        warn!("second Start ignored");
                        Vec::new()
                    } else {
                        info!(session = %start.session_id, resumed = start.snapshot.is_some(), "session started");
                        let (s, out) = Session::start(*start, rt, env.models_dir.clone());
                        session = Some(s);
                        out
                    }
                }
                Some(ToInference::Command { seq, command }) => match session.as_mut() {
                    Some(s) => {
                        let speed_before = s.step_period();
                        let out = s.handle_numbered(seq, command);
                        if s.step_period() != speed_before {
                            step_at = None; // re-pace from now at the new speed
                        }
                        out
                    }
                    None => Vec::new(),
                },
            },
            _ = sleep_until(step_at.unwrap_or(now)), if step_at.is_some() => {
                let s = session.as_mut().expect("timers only run with a session");
                let due = step_at.take().expect("branch guarded");
                let out = s.step_once();
                // Keep a steady cadence, but never try to catch up with a burst.
                let next = due + s.step_period();
                step_at = Some(if next < Instant::now() { Instant::now() + s.step_period() } else { next });
                out
            }
            _ = sleep_until(episode_at.unwrap_or(now)), if episode_at.is_some() => {
                episode_at = None;
                session.as_mut().expect("timers only run with a session").start_next_episode()
            }
            _ = sigterm.recv() => return Ok(Exit::Signal),
        };
        send(&mut writer, events).await?;
        if let Some(s) = session.as_ref() {
            if s.wants_steps() {
                step_at.get_or_insert_with(|| Instant::now() + s.step_period());
            } else {
                step_at = None;
            }
            if s.phase() == ipc_proto::inference::EpisodePhase::Ended {
                episode_at.get_or_insert_with(|| Instant::now() + s.episode_gap());
            } else {
                episode_at = None;
            }
        }
    }
}
