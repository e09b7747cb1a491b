//! The live training worker behind `/ws/training`: one DQN run at a time on a dedicated thread,
//! controlled from the metaserver (start, pause, resume, stop, resume-from-checkpoint, shutdown).
//! Each frame is sent once; fan-out to viewers is the metaserver's job.

use crate::checkpoint;
use crate::dqn::{Flow, Trainer};
use crate::export::{now_rfc3339, write_model, TrainingFacts};
use hamlet_env::wire::{state_update, FrameFacts};
use ipc_proto::browser::{EpisodeStart, ServerMessage, TrainingComplete, TrainingStarted};
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::training::{FromTraining, RunControl, ToTraining};
use ipc_proto::transport;
use ipc_proto::WorkerKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

#[derive(Default)]
struct CtlState {
    paused: bool,
    stop: bool,
    shutdown: bool,
}

/// Run control shared with the training thread; the condvar wakes it from pauses and step delays.
#[derive(Default)]
struct RunCtl {
    s: Mutex<CtlState>,
    cv: Condvar,
}

impl RunCtl {
    fn set(&self, f: impl FnOnce(&mut CtlState)) {
        f(&mut self.s.lock().expect("ctl"));
        self.cv.notify_all();
    }

    /// Blocks while paused; waits up to `delay` (interruptibly). `false`: the run must end now.
    fn gate(&self, delay: Duration) -> bool {
        let mut g = self.s.lock().expect("ctl");
        if !delay.is_zero() && !g.stop && !g.shutdown {
            g = self.cv.wait_timeout(g, delay).expect("ctl").0;
        }
        while g.paused && !g.stop && !g.shutdown {
            g = self.cv.wait(g).expect("ctl");
        }
        !(g.stop || g.shutdown)
    }
}

pub struct Paths {
    pub models_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
}

/// A model file name that does not overwrite another run's model (unless the client named it).
fn model_path(dir: &Path, t: &Trainer) -> (String, PathBuf) {
    let c = &t.state.config;
    if let Some(stem) = &c.model_name {
        let name = format!("{stem}.onnx");
        return (name.clone(), dir.join(name));
    }
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    for i in 0.. {
        let suffix = if i == 0 {
            String::new()
        } else {
            format!("-{i}")
        };
        let name = format!(
            "dqn-{}-{stamp}-s{}{suffix}.onnx",
            c.network.as_str(),
            c.seed
        );
        let p = dir.join(&name);
        if !p.exists() {
            return (name, p);
        }
    }
    unreachable!()
}

fn train_thread(
    mut tr: Trainer,
    resumed: bool,
    ctl: Arc<RunCtl>,
    tx: mpsc::Sender<FromTraining>,
    paths: Paths,
    ckpt: PathBuf,
) {
    let send = |m: FromTraining| {
        let _ = tx.blocking_send(m);
    };
    let c = tr.state.config.clone();
    if !resumed {
        send(FromTraining::Message(ServerMessage::TrainingStarted(
            Box::new(TrainingStarted {
                num_episodes: c.num_episodes,
                config: c.clone(),
            }),
        )));
    }
    let delay = Duration::from_secs_f64(c.step_delay.clamp(0.0, 5.0));
    let mut aborted = false;
    while tr.state.episodes_done < c.num_episodes {
        let ep = tr.state.episodes_done + 1;
        let shown = (ep - 1).is_multiple_of(c.show_every.max(1));
        if shown {
            send(FromTraining::Message(ServerMessage::EpisodeStart(
                EpisodeStart {
                    episode: ep,
                    model_name: None,
                    epsilon: Some(tr.state.epsilon),
                },
            )));
        }
        let res = tr.run_episode(|v| {
            if shown {
                let u = state_update(
                    v.world,
                    FrameFacts {
                        episode: v.episode,
                        action: Some(v.action),
                        reward: v.reward,
                        cumulative_reward: v.cumulative,
                        done: v.done,
                        q_values: None,
                        heat_map: Some(v.heat.to_wire()),
                    },
                );
                let _ = tx.blocking_send(FromTraining::Message(ServerMessage::StateUpdate(
                    Box::new(u),
                )));
            }
            if ctl.gate(if shown { delay } else { Duration::ZERO }) {
                Flow::Continue
            } else {
                Flow::Abort
            }
        });
        let Some(stats) = res else {
            aborted = true;
            break;
        };
        send(FromTraining::Message(ServerMessage::EpisodeComplete(
            tr.summary(&stats),
        )));
        if ep.is_multiple_of(c.checkpoint_every.max(1)) {
            match checkpoint::save(&tr.state, &ckpt) {
                Ok(()) => send(FromTraining::Checkpointed {
                    episode: ep,
                    path: ckpt.display().to_string(),
                }),
                Err(e) => warn!(error = %e, "checkpoint failed"),
            }
        }
    }
    let shutdown = ctl.s.lock().expect("ctl").shutdown;
    if shutdown && aborted {
        // The metaserver is going away: keep the run resumable and keep what it learned.
        if checkpoint::save(&tr.state, &ckpt).is_ok() {
            send(FromTraining::Checkpointed {
                episode: tr.state.episodes_done,
                path: ckpt.display().to_string(),
            });
        }
    }
    let (name, path) = model_path(&paths.models_dir, &tr);
    let facts = TrainingFacts::from_state(&tr.state);
    let saved = match write_model(&tr.state.online, &facts, &path) {
        Ok(()) => Some(name),
        Err(e) => {
            send(FromTraining::RunEnded {
                model_saved: None,
                failed: Some(format!("could not save the model: {e}")),
            });
            return;
        }
    };
    info!(model = ?saved, episodes = tr.state.episodes_done, "training run finished");
    let (r, l, _) = tr.averages(10);
    send(FromTraining::Message(ServerMessage::TrainingComplete(
        TrainingComplete {
            model_saved: saved.clone(),
            final_avg_reward: r,
            final_avg_length: l,
            stopped: aborted,
        },
    )));
    if !shutdown {
        let _ = std::fs::remove_file(&ckpt);
    }
    send(FromTraining::RunEnded {
        model_saved: saved,
        failed: None,
    });
}

pub async fn run(socket: PathBuf, token: String, paths: Paths) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let (mut reader, mut writer) =
        transport::worker_handshake(&socket, WorkerKind::Training, &token, DEFAULT_MAX_FRAME)
            .await?;
    writer.write(&FromTraining::Ready).await?;
    let (cmd_tx, mut cmds) = mpsc::channel::<ToTraining>(64);
    tokio::spawn(async move {
        while let Ok(m) = reader.read::<ToTraining>().await {
            if cmd_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let (ev_tx, mut events) = mpsc::channel::<FromTraining>(1024);
    let mut run: Option<(Arc<RunCtl>, std::thread::JoinHandle<()>)> = None;
    std::fs::create_dir_all(&paths.checkpoint_dir).ok();
    let mut ending = false;
    loop {
        tokio::select! {
            c = cmds.recv(), if !ending => {
                let start = match c {
                    None | Some(ToTraining::Shutdown) => {
                        ending = true;
                        match &run { Some((ctl, _)) => ctl.set(|s| s.shutdown = true), None => return Ok(()) }
                        continue;
                    }
                    Some(ToTraining::Ping { seq }) => { writer.write(&FromTraining::Pong { seq }).await?; continue; }
                    Some(ToTraining::Control(c)) => {
                        if let Some((ctl, _)) = &run {
                            let msg = match c {
                                RunControl::Pause => { ctl.set(|s| s.paused = true); Some(ServerMessage::Paused {}) }
                                RunControl::Resume => { ctl.set(|s| s.paused = false); Some(ServerMessage::Resumed {}) }
                                RunControl::Stop => { ctl.set(|s| s.stop = true); None }
                            };
                            if let Some(m) = msg { writer.write(&FromTraining::Message(m)).await?; }
                        }
                        continue;
                    }
                    Some(ToTraining::Start(cfg)) => {
                        let ckpt = paths.checkpoint_dir.join(format!("run-{}-{}.ckpt", std::process::id(), cfg.seed));
                        (Trainer::new(*cfg), false, ckpt)
                    }
                    Some(ToTraining::ResumeFrom { checkpoint: p }) => {
                        let p = PathBuf::from(p);
                        match checkpoint::load(&p) {
                            Ok(state) => {
                                let ep = state.episodes_done;
                                writer.write(&FromTraining::Resumed { episode: ep }).await?;
                                (Trainer::from_state(state), true, p)
                            }
                            Err(e) => {
                                writer.write(&FromTraining::RunEnded { model_saved: None, failed: Some(format!("cannot resume from checkpoint: {e}")) }).await?;
                                continue;
                            }
                        }
                    }
                };
                if run.as_ref().is_some_and(|(_, h)| !h.is_finished()) {
                    warn!("a run is already in progress; start ignored");
                    continue;
                }
                let (tr, resumed, ckpt) = start;
                let ctl = Arc::new(RunCtl::default());
                let (ctl2, tx) = (ctl.clone(), ev_tx.clone());
                let p = Paths { models_dir: paths.models_dir.clone(), checkpoint_dir: paths.checkpoint_dir.clone() };
                let h = std::thread::Builder::new().name("dqn".into()).spawn(move || train_thread(tr, resumed, ctl2, tx, p, ckpt))?;
                run = Some((ctl, h));
            }
            ev = events.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                let ended = matches!(ev, FromTraining::RunEnded { .. });
                writer.write(&ev).await?;
                if ended {
                    if let Some((_, h)) = run.take() { let _ = h.join(); }
                    if ending { return Ok(()); }
                }
            }
            _ = sigterm.recv() => {
                ending = true;
                match &run { Some((ctl, _)) => ctl.set(|s| s.shutdown = true), None => return Ok(()) }
            }
        }
    }
}
