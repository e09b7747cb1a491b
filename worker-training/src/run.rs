//! One training run on its own thread: episodes, frames for viewers, checkpoints and the saved
//! model. Controlled through [`RunCtl`] (pause, stop, shutdown, handover).
//!
//! **Pacing never slows learning.** With `step_delay` 0 a shown episode's frames go out as they
//! happen (latest wins). With a delay, the training thread records the shown episode's frames at
//! full speed and goes on learning; a second thread, the replayer, plays the newest recording to
//! viewers one frame per `step_delay`. A recording that arrives while another is playing waits,
//! and a newer one replaces it: viewers always see a real training episode at a watchable pace,
//! the most recent one the replayer could get to, while the run itself never waits for them.

use hamlet_dqn::checkpoint;
use hamlet_dqn::dqn::{greedy_episode, EpisodeStats, Flow, StepView, Trainer};
use hamlet_dqn::export::{now_rfc3339, write_model, TrainingFacts};
use hamlet_env::wire::{state_update, FrameFacts};
use ipc_proto::browser::{
    EpisodeComplete, EpisodeStart, ServerMessage, TrainingComplete, TrainingStarted,
};
use ipc_proto::training::FromTraining;
use parking_lot::{Condvar, Mutex};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Test hook: a fresh (not resumed) run panics when it reaches this episode, so end-to-end tests
/// can check that a panicking training thread is handled as a crash. Unset in production.
pub const ENV_FAULT_PANIC_AT_EPISODE: &str = "HAMLET_FAULT_PANIC_AT_EPISODE";

/// Episodes between greedy evaluations of a live run.
const EVAL_EVERY: u32 = 10;

#[derive(Default)]
pub struct CtlState {
    pub paused: bool,
    /// End the run early and save its model (`stop`).
    pub stop: bool,
    /// The worker is going away with the server: checkpoint, save the model, end the run.
    pub shutdown: bool,
    /// The worker is being replaced: checkpoint and end, leaving the run to the successor.
    pub handover: bool,
    /// The training loop is over: the replayer stops.
    finished: bool,
    /// The newest recorded shown episode not yet replayed.
    waiting: Option<Recording>,
}

/// A shown episode's frames, recorded at full speed for the replayer.
struct Recording {
    episode: u32,
    epsilon: f64,
    frames: Vec<ipc_proto::wire::StateUpdate>,
}

/// Frames kept of one shown episode (about 1 KB each): at the smallest non-zero delays this is
/// minutes of replay; the rest of a longer episode is not shown.
const MAX_RECORDED_FRAMES: usize = 3000;

impl CtlState {
    fn ending(&self) -> bool {
        self.stop || self.shutdown || self.handover
    }
}

/// Tells the replayer the run is over, also when the training thread unwinds from a panic.
struct FinishOnDrop<'a>(&'a RunCtl);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(|s| s.finished = true);
    }
}

/// Run control shared with the training thread; the condvar wakes it from pauses and step delays.
#[derive(Default)]
pub struct RunCtl {
    s: Mutex<CtlState>,
    cv: Condvar,
}

impl RunCtl {
    pub fn set(&self, f: impl FnOnce(&mut CtlState)) {
        f(&mut self.s.lock());
        self.cv.notify_all();
    }

    /// Blocks while paused; waits up to `delay` (interruptibly). `false`: the run must end now.
    fn gate(&self, delay: Duration) -> bool {
        let mut g = self.s.lock();
        let over = |g: &CtlState| g.ending() || g.finished;
        // The condvar also wakes for other changes (a new recording): wait out the whole delay.
        let deadline = std::time::Instant::now() + delay;
        while !delay.is_zero() && !over(&g) {
            if self.cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        while g.paused && !over(&g) {
            self.cv.wait(&mut g);
        }
        !over(&g)
    }

    /// The next recording to replay; `None` once the run is over.
    fn next_recording(&self) -> Option<Recording> {
        let mut g = self.s.lock();
        loop {
            if g.ending() || g.finished {
                return None;
            }
            if let Some(r) = g.waiting.take() {
                return Some(r);
            }
            self.cv.wait(&mut g);
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Completed,
    Stopped,
    Shutdown,
    Handover,
}

/// A run about to start: the trainer, whether it continues an earlier worker's run, and where its
/// checkpoints go.
pub struct RunSetup {
    trainer: Trainer,
    resumed: bool,
    checkpoint: PathBuf,
}

impl RunSetup {
    pub fn fresh(trainer: Trainer, checkpoint: PathBuf) -> Self {
        RunSetup {
            trainer,
            resumed: false,
            checkpoint,
        }
    }

    pub fn resumed(trainer: Trainer, checkpoint: PathBuf) -> Self {
        RunSetup {
            trainer,
            resumed: true,
            checkpoint,
        }
    }
}

/// What the training thread hands to the worker's event loop. Lifecycle messages (episode start
/// and end, checkpoints, the end of the run) go through a bounded channel and are never dropped;
/// `state_update` frames go to a one-frame slot where the newest replaces one not yet taken, so
/// the thread never waits for its viewers (protocol.md: the training thread never waits).
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<FromTraining>,
    frames: Arc<FrameSlot>,
}

/// The newest `state_update` not yet taken by the event loop.
#[derive(Default)]
pub struct FrameSlot {
    latest: Mutex<Option<FromTraining>>,
    pub ready: tokio::sync::Notify,
}

impl FrameSlot {
    pub fn take(&self) -> Option<FromTraining> {
        self.latest.lock().take()
    }
}

impl Outbox {
    pub fn new(tx: mpsc::Sender<FromTraining>, frames: Arc<FrameSlot>) -> Self {
        Outbox { tx, frames }
    }

    /// A lifecycle message; a pending frame goes first, so viewers see frames in order.
    fn send(&self, m: FromTraining) {
        if let Some(f) = self.frames.take() {
            let _ = self.tx.blocking_send(f);
        }
        let _ = self.tx.blocking_send(m);
    }

    /// A frame: replaces the pending one, never waits.
    fn frame(&self, m: FromTraining) {
        *self.frames.latest.lock() = Some(m);
        self.frames.ready.notify_one();
    }
}

fn send(out: &Outbox, m: FromTraining) {
    out.send(m);
}

/// The training thread's body.
pub fn train(setup: RunSetup, ctl: Arc<RunCtl>, tx: Outbox, models: PathBuf) {
    let RunSetup {
        trainer: mut tr,
        resumed,
        checkpoint: ckpt,
    } = setup;
    let c = tr.state.config.clone();
    if !resumed {
        let started = TrainingStarted {
            num_episodes: c.num_episodes,
            config: c.clone(),
            control_token: None, // the metaserver gives it to the starter
        };
        send(&tx, msg(ServerMessage::TrainingStarted(Box::new(started))));
    }
    let delay = Duration::from_secs_f64(c.step_delay.clamp(0.0, 5.0));
    let end = std::thread::scope(|scope| {
        let finish = FinishOnDrop(&ctl);
        if !delay.is_zero() {
            let (ctl, tx) = (&*ctl, tx.clone());
            std::thread::Builder::new()
                .name("replay".into())
                .spawn_scoped(scope, move || replay(ctl, &tx, delay))
                .expect("spawn the replay thread");
        }
        let end = train_loop(&mut tr, &ctl, &tx, &ckpt, resumed);
        drop(finish); // the replayer stops; the scope waits for it
        end
    });
    if matches!(end, RunEnd::Shutdown | RunEnd::Handover) {
        // Keep the run resumable (and, on shutdown, keep what it learned in the model below).
        save_checkpoint(&tr, &ckpt, &tx);
    }
    if end == RunEnd::Handover {
        info!(
            episode = tr.state.episodes_done,
            "run handed over to a successor"
        );
        return;
    }
    save_model(&tr, end, &models, &tx);
    if end != RunEnd::Shutdown {
        checkpoint::remove(&ckpt);
    }
}

/// Episodes until the run is complete or told to end.
fn train_loop(tr: &mut Trainer, ctl: &RunCtl, tx: &Outbox, ckpt: &Path, resumed: bool) -> RunEnd {
    let c = tr.state.config.clone();
    let panic_at = fault_episode().filter(|_| !resumed);
    while tr.state.episodes_done < c.num_episodes {
        let ep = tr.state.episodes_done + 1;
        if panic_at == Some(ep) {
            panic!("{ENV_FAULT_PANIC_AT_EPISODE}: injected panic at episode {ep}");
        }
        let Some(stats) = run_episode(tr, ctl, tx) else {
            return ending_reason(ctl);
        };
        send(tx, msg(ServerMessage::EpisodeComplete(summary(tr, &stats))));
        if ep.is_multiple_of(EVAL_EVERY) {
            // A greedy episode is cheap (at most max_steps forward passes) and tells a class how
            // well the network plays without exploration.
            let (steps, reward) = greedy_episode(&tr.state.online, c.max_steps);
            send(
                tx,
                FromTraining::Evaluated {
                    episode: ep,
                    steps,
                    reward,
                },
            );
        }
        if ep.is_multiple_of(c.checkpoint_every.max(1)) {
            save_checkpoint(tr, ckpt, tx);
        }
    }
    RunEnd::Completed
}

/// The replayer: plays each recorded shown episode to viewers, one frame per `delay`.
fn replay(ctl: &RunCtl, tx: &Outbox, delay: Duration) {
    while let Some(rec) = ctl.next_recording() {
        let start = EpisodeStart {
            episode: rec.episode,
            model_name: None,
            epsilon: Some(rec.epsilon),
        };
        send(tx, msg(ServerMessage::EpisodeStart(start)));
        for f in rec.frames {
            tx.frame(msg(ServerMessage::StateUpdate(Box::new(f))));
            if !ctl.gate(delay) {
                return;
            }
        }
    }
}

fn msg(m: ServerMessage) -> FromTraining {
    FromTraining::Message(m)
}

fn fault_episode() -> Option<u32> {
    std::env::var(ENV_FAULT_PANIC_AT_EPISODE).ok()?.parse().ok()
}

fn ending_reason(ctl: &RunCtl) -> RunEnd {
    let s = ctl.s.lock();
    if s.handover {
        RunEnd::Handover
    } else if s.shutdown {
        RunEnd::Shutdown
    } else {
        RunEnd::Stopped
    }
}

/// One episode at full speed. A shown episode's frames go to viewers as they happen (no delay)
/// or are recorded for the replayer. `None`: the run is ending (the episode is then not counted).
fn run_episode(tr: &mut Trainer, ctl: &RunCtl, tx: &Outbox) -> Option<EpisodeStats> {
    let c = &tr.state.config;
    let ep = tr.state.episodes_done + 1;
    let shown = (ep - 1).is_multiple_of(c.show_every.max(1));
    let paced = c.step_delay > 0.0;
    let epsilon = tr.state.epsilon;
    if shown && !paced {
        let start = EpisodeStart {
            episode: ep,
            model_name: None,
            epsilon: Some(epsilon),
        };
        send(tx, msg(ServerMessage::EpisodeStart(start)));
    }
    let mut recorded = Vec::new();
    let stats = tr.run_episode(|v| {
        match (shown, paced) {
            (true, false) => tx.frame(msg(ServerMessage::StateUpdate(Box::new(frame(v))))),
            (true, true) if recorded.len() < MAX_RECORDED_FRAMES => recorded.push(frame(v)),
            _ => {}
        }
        if ctl.gate(Duration::ZERO) {
            Flow::Continue
        } else {
            Flow::Abort
        }
    })?;
    if shown && paced {
        let rec = Recording {
            episode: ep,
            epsilon,
            frames: recorded,
        };
        ctl.set(|s| s.waiting = Some(rec));
    }
    Some(stats)
}

fn frame(v: &StepView) -> ipc_proto::wire::StateUpdate {
    state_update(
        v.world,
        FrameFacts {
            episode: v.episode,
            action: Some(v.action),
            reward: v.reward,
            cumulative_reward: v.cumulative,
            done: v.done,
            q_values: None,
            heat_map: Some(v.heat.to_wire()),
            explored: Some(v.explored),
            activations: None,
        },
    )
}

/// The `episode_complete` summary for the latest episode (5-episode moving averages).
pub fn summary(tr: &Trainer, s: &EpisodeStats) -> EpisodeComplete {
    let (r, l, lo) = tr.averages(5);
    EpisodeComplete {
        episode: s.episode,
        reward: s.reward,
        length: s.length,
        loss: s.loss,
        epsilon: s.epsilon,
        avg_reward_5: r,
        avg_length_5: l,
        avg_loss_5: lo,
        buffer_size: tr.buffer_len() as u32,
    }
}

fn save_checkpoint(tr: &Trainer, ckpt: &Path, tx: &Outbox) {
    match checkpoint::save(&tr.state, ckpt) {
        Ok(()) => send(
            tx,
            FromTraining::Checkpointed {
                episode: tr.state.episodes_done,
                path: ckpt.display().to_string(),
            },
        ),
        Err(e) => warn!(error = %e, "checkpoint failed"),
    }
}

/// Writes the model and announces the end of the run.
fn save_model(tr: &Trainer, end: RunEnd, models: &Path, tx: &Outbox) {
    let (name, path) = model_path(models, tr);
    let facts = TrainingFacts::from_state(&tr.state);
    if let Err(e) = write_model(&tr.state.online, &facts, &path) {
        let failed = Some(format!("could not save the model: {e}"));
        send(
            tx,
            FromTraining::RunEnded {
                model_saved: None,
                failed,
            },
        );
        return;
    }
    info!(model = %name, episodes = tr.state.episodes_done, ?end, "training run finished");
    let (r, l, _) = tr.averages(10);
    let complete = TrainingComplete {
        model_saved: Some(name.clone()),
        final_avg_reward: r,
        final_avg_length: l,
        stopped: end != RunEnd::Completed,
    };
    send(tx, msg(ServerMessage::TrainingComplete(complete)));
    send(
        tx,
        FromTraining::RunEnded {
            model_saved: Some(name),
            failed: None,
        },
    );
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
    let base = format!("dqn-{}-{stamp}-s{}", c.network.as_str(), c.seed);
    (1..)
        .map(|i| {
            if i == 1 {
                format!("{base}.onnx")
            } else {
                format!("{base}-{i}.onnx")
            }
        })
        .map(|name| (dir.join(&name), name))
        .find(|(p, _)| !p.exists())
        .map(|(p, name)| (name, p))
        .expect("an unused name exists")
}
