//! The live training worker behind `/ws/training`: one DQN run at a time on a dedicated thread,
//! controlled from the metaserver (start, pause, resume, stop, resume-from-checkpoint, handover,
//! shutdown). Each frame is sent once; fan-out to viewers is the metaserver's job.
//!
//! The training thread hands lifecycle messages to this process's event loop through a bounded
//! channel, and `state_update` frames through a one-frame slot (the newest wins): however slowly the
//! frames are written to the metaserver, the thread does not wait for them. The loop sends at most
//! `--viewer-fps` frames a second (the newest at each turn): more would never reach a viewer.
//! If the thread panics, the worker reports it on stderr and exits non-zero, so the supervisor
//! treats it as a crash and resumes the run from its last checkpoint.

use crate::control::{CtlState, RunCtl};
use crate::outbox::{FrameSlot, Outbox};
use crate::run::{self, RunSetup};
use futures_util::SinkExt;
use hamlet_dqn::checkpoint;
use hamlet_dqn::dqn::Trainer;
use ipc_proto::browser::ServerMessage;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::training::{FromTraining, RunControl, ToTraining, TrainingConfig};
use ipc_proto::transport::{self, Connection};
use ipc_proto::{WorkerEnv, WorkerKind};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Lifecycle messages the training thread may have in flight to the event loop.
const EVENT_QUEUE: usize = 1024;

type Conn = Connection<ToTraining, FromTraining>;

/// The run in progress: its controls, its thread and the frames it produces.
struct ActiveRun {
    ctl: Arc<RunCtl>,
    thread: JoinHandle<()>,
    events: mpsc::Receiver<FromTraining>,
    frames: Arc<FrameSlot>,
    /// At most one frame per this period goes to the metaserver (`--viewer-fps`: a viewer is
    /// never sent more), so a run showing every step does not cost the metaserver a frame per
    /// step and per viewer.
    frame_period: Option<Duration>,
    /// When the next frame may be sent.
    next_frame_at: Option<tokio::time::Instant>,
}

/// What the event loop does next.
enum Next {
    Continue,
    Exit,
}

pub async fn run(env: WorkerEnv) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut conn: Conn = transport::worker_handshake(
        &env.socket,
        WorkerKind::Training,
        &env.token,
        DEFAULT_MAX_FRAME,
    )
    .await?;
    conn.send(FromTraining::Ready).await?;
    std::fs::create_dir_all(&env.checkpoint_dir).ok();
    let mut active: Option<ActiveRun> = None;
    let mut ending = false;
    loop {
        let next = tokio::select! {
            c = transport::recv(&mut conn), if !ending => match c {
                Ok(cmd) => on_command(cmd, &mut conn, &mut active, &env, &mut ending).await?,
                Err(_) => begin_end(&active, &mut ending, |c| c.shutdown = true),
            },
            ev = next_event(&mut active) => match ev {
                Some(ev) => {
                    let ended = matches!(ev, FromTraining::RunEnded { .. });
                    conn.send(ev).await?;
                    if ended { finish(&mut active)?; }
                    if ended && ending { Next::Exit } else { Next::Continue }
                }
                // The thread ended without a `RunEnded`: it panicked (an error here), or it
                // handed the run over and the worker is on its way out.
                None => { finish(&mut active)?; if ending { Next::Exit } else { Next::Continue } }
            },
            _ = sigterm.recv() => begin_end(&active, &mut ending, |c| c.shutdown = true),
        };
        if let Next::Exit = next {
            return Ok(());
        }
    }
}

/// Starts ending the worker: the run (if any) is told how to end; without one, exit now.
fn begin_end(
    active: &Option<ActiveRun>,
    ending: &mut bool,
    how: impl FnOnce(&mut CtlState),
) -> Next {
    *ending = true;
    match active {
        Some(r) => {
            r.ctl.set(how);
            Next::Continue
        }
        None => Next::Exit,
    }
}

/// The run's next message: a lifecycle message, else the newest frame. `None` once the thread has
/// ended (its channel closed).
async fn next_event(active: &mut Option<ActiveRun>) -> Option<FromTraining> {
    let Some(r) = active else {
        return std::future::pending().await;
    };
    loop {
        if let Ok(m) = r.events.try_recv() {
            return Some(m);
        }
        let (frames, not_before) = (r.frames.clone(), r.next_frame_at);
        let frame_turn = async move {
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            frames.ready.notified().await
        };
        tokio::select! {
            biased;
            m = r.events.recv() => return m,
            _ = frame_turn => {
                if let Some(f) = r.frames.take() {
                    r.next_frame_at = r.frame_period.map(|p| tokio::time::Instant::now() + p);
                    return Some(f);
                }
            }
        }
    }
}

/// Joins the finished training thread; a panic becomes this process's failure.
fn finish(active: &mut Option<ActiveRun>) -> anyhow::Result<()> {
    if let Some(r) = active.take() {
        if let Err(panic) = r.thread.join() {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            anyhow::bail!("the training thread panicked: {what}");
        }
    }
    Ok(())
}

async fn on_command(
    cmd: ToTraining,
    conn: &mut Conn,
    active: &mut Option<ActiveRun>,
    env: &WorkerEnv,
    ending: &mut bool,
) -> anyhow::Result<Next> {
    let (setup, paused) = match cmd {
        ToTraining::Shutdown => return Ok(begin_end(active, ending, |c| c.shutdown = true)),
        ToTraining::Handover => return Ok(begin_end(active, ending, |c| c.handover = true)),
        ToTraining::Ping { seq } => {
            conn.send(FromTraining::Pong { seq }).await?;
            return Ok(Next::Continue);
        }
        ToTraining::Control(c) => {
            if let Some(m) = control(active.as_ref(), c) {
                conn.send(FromTraining::Message(m)).await?;
            }
            return Ok(Next::Continue);
        }
        ToTraining::Start { config, paused } => {
            // The metaserver validated it; a worker still never runs a configuration outside
            // the limits (whatever sent it).
            if let Err(e) = config.validate() {
                let failed = Some(format!("refused configuration: {e}"));
                conn.send(FromTraining::RunEnded {
                    model_saved: None,
                    failed,
                })
                .await?;
                return Ok(Next::Continue);
            }
            let ckpt =
                env.checkpoint_dir
                    .join(format!("run-{}-{}.ckpt", std::process::id(), config.seed));
            (RunSetup::fresh(Trainer::new(*config), ckpt), paused)
        }
        ToTraining::ResumeFrom {
            checkpoint,
            config,
            paused,
        } => match resume(PathBuf::from(checkpoint), config) {
            Ok((setup, notice)) => {
                conn.send(notice).await?;
                (setup, paused)
            }
            Err(reason) => {
                let failed = Some(reason);
                conn.send(FromTraining::RunEnded {
                    model_saved: None,
                    failed,
                })
                .await?;
                return Ok(Next::Continue);
            }
        },
    };
    start_run(setup, paused, conn, active, env).await
}

/// Starts the training thread on `setup` (paused if asked, before the thread exists) unless a run
/// is already active.
async fn start_run(
    setup: RunSetup,
    paused: bool,
    conn: &mut Conn,
    active: &mut Option<ActiveRun>,
    env: &WorkerEnv,
) -> anyhow::Result<Next> {
    if active.is_some() {
        warn!("a run is already in progress; start ignored");
        return Ok(Next::Continue);
    }
    let ctl = Arc::new(RunCtl::default());
    ctl.set(|s| s.paused = paused); // before the thread exists: it cannot run ahead of it
    let (tx, events) = mpsc::channel(EVENT_QUEUE);
    let frames = Arc::new(FrameSlot::default());
    let outbox = Outbox::new(tx, frames.clone(), env.frame_rate);
    let (ctl2, models_dir) = (ctl.clone(), env.models_dir.clone());
    let thread = std::thread::Builder::new()
        .name("dqn".into())
        .spawn(move || run::train(setup, ctl2, outbox, models_dir))?;
    *active = Some(ActiveRun {
        ctl,
        thread,
        events,
        frames,
        frame_period: env.frame_rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        next_frame_at: None,
    });
    if paused {
        conn.send(FromTraining::Message(ServerMessage::Paused {}))
            .await?;
    }
    Ok(Next::Continue)
}

/// Pause and resume answer at once; stop is announced by the run's own `training_complete`.
fn control(active: Option<&ActiveRun>, c: RunControl) -> Option<ServerMessage> {
    let r = active?;
    match c {
        RunControl::Pause => {
            r.ctl.set(|s| s.paused = true);
            Some(ServerMessage::Paused {})
        }
        RunControl::Resume => {
            r.ctl.set(|s| s.paused = false);
            Some(ServerMessage::Resumed {})
        }
        RunControl::Stop => {
            r.ctl.set(|s| s.stop = true);
            None
        }
    }
}

/// Continues a run from its newest usable checkpoint; if none is usable, starts the run's
/// configuration afresh. Returns the set-up and the notice saying where the run continues.
fn resume(
    path: PathBuf,
    config: Option<Box<TrainingConfig>>,
) -> Result<(RunSetup, FromTraining), String> {
    match checkpoint::load_latest(&path) {
        Ok((state, used)) => {
            let episode = state.episodes_done;
            info!(checkpoint = %used.display(), episode, "resuming the run");
            let setup = RunSetup::resumed(Trainer::from_state(state), path);
            Ok((setup, FromTraining::Resumed { episode }))
        }
        Err(e) => match config.filter(|c| c.validate().is_ok()) {
            Some(cfg) => {
                warn!(error = %e, "no usable checkpoint: starting the run afresh");
                let setup = RunSetup::resumed(Trainer::new(*cfg), path);
                Ok((setup, FromTraining::Resumed { episode: 0 }))
            }
            None => Err(format!("cannot resume from checkpoint: {e}")),
        },
    }
}
