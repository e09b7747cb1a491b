//! One training run on its own thread: episodes, frames for viewers, greedy evaluations,
//! checkpoints and the saved model — the best evaluated network, not the last. Controlled through
//! [`RunCtl`] (pause, stop, shutdown, handover).
//!
//! **Pacing** (protocol.md). With `pacing: run` (the original semantic) a shown episode is sent
//! whole, one step per `step_delay`, and the run waits while it plays. With `pacing: replay` the
//! run never waits: shown episodes are recorded and the replayer ([`crate::control::replay`])
//! plays the newest beside the run. With `step_delay` 0 frames go out as they happen, latest wins.

use crate::control::{replay, AbandonOnUnwind, Recording, RunCtl, RunEnd, MAX_RECORDED_FRAMES};
use crate::outbox::Outbox;
use hamlet_dqn::checkpoint;
use hamlet_dqn::dqn::{EpisodeStats, Flow, StepView, Trainer};
use hamlet_dqn::export::{now_rfc3339, write_model, TrainingFacts};
use hamlet_env::wire::{state_update, FrameFacts};
use ipc_proto::browser::{
    EpisodeComplete, EpisodeStart, Evaluated, Evaluation, ServerMessage, TrainingComplete,
    TrainingStarted,
};
use ipc_proto::training::{FromTraining, Pacing};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Test hook: a fresh (not resumed) run panics when it reaches this episode, so end-to-end tests
/// can check that a panicking training thread is handled as a crash. Unset in production.
pub const ENV_FAULT_PANIC_AT_EPISODE: &str = "HAMLET_FAULT_PANIC_AT_EPISODE";

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

/// The training thread's body.
pub fn train(setup: RunSetup, ctl: Arc<RunCtl>, out: Outbox, models: PathBuf) {
    let RunSetup {
        trainer: mut tr,
        resumed,
        checkpoint: ckpt,
    } = setup;
    let c = tr.state.config.clone();
    if !resumed {
        out.message(ServerMessage::TrainingStarted(Box::new(TrainingStarted {
            num_episodes: c.num_episodes,
            config: c.clone(),
            control_token: None, // the metaserver gives it to the starter
        })));
    }
    let delay = Duration::from_secs_f64(c.step_delay.clamp(0.0, 5.0));
    let replayed = c.pacing == Pacing::Replay && !delay.is_zero();
    let end = std::thread::scope(|scope| {
        let _abandon = AbandonOnUnwind(&ctl);
        if replayed {
            let (ctl, out) = (&*ctl, out.clone());
            std::thread::Builder::new()
                .name("replay".into())
                .spawn_scoped(scope, move || replay(ctl, &out, delay))
                .expect("spawn the replay thread");
        }
        let end = train_loop(&mut tr, &ctl, &out, &ckpt, resumed, &models);
        // A completed run's last replay plays out before `training_complete`; the scope waits
        // for it (a stop has already cut it short).
        ctl.finish();
        end
    });
    if matches!(end, RunEnd::Shutdown | RunEnd::Handover) {
        // Keep the run resumable (and, on shutdown, keep what it learned in the model below).
        save_checkpoint(&tr, &ckpt, &out);
    }
    if end == RunEnd::Handover {
        info!(
            episode = tr.state.episodes_done,
            "run handed over to a successor"
        );
        return;
    }
    save_model(&mut tr, end, &models, &out);
    if end != RunEnd::Shutdown {
        checkpoint::remove(&ckpt);
    }
}

/// Episodes until the run is complete, competent (if it stops there) or told to end.
fn train_loop(
    tr: &mut Trainer,
    ctl: &RunCtl,
    out: &Outbox,
    ckpt: &Path,
    resumed: bool,
    models: &Path,
) -> RunEnd {
    let c = tr.state.config.clone();
    let panic_at = fault_episode().filter(|_| !resumed);
    if tr.state.episodes_done == 0 {
        save_snapshot(tr, models); // the untrained network: where the time machine starts
    }
    while tr.state.episodes_done < c.num_episodes {
        let ep = tr.state.episodes_done + 1;
        if panic_at == Some(ep) {
            panic!("{ENV_FAULT_PANIC_AT_EPISODE}: injected panic at episode {ep}");
        }
        ctl.set_live_episode(ep);
        let Some(stats) = run_episode(tr, ctl, out) else {
            return ctl.reason();
        };
        out.message(ServerMessage::EpisodeComplete(summary(tr, &stats)));
        if ep.is_multiple_of(c.eval_every.max(1)) && evaluate(tr, out) && c.stop_when_competent {
            info!(
                episode = ep,
                "a greedy evaluation is competent: the run stops"
            );
            return RunEnd::Competent;
        }
        if ep.is_multiple_of(c.snapshot_period()) {
            save_snapshot(tr, models);
        }
        if ep.is_multiple_of(c.checkpoint_every.max(1)) {
            save_checkpoint(tr, ckpt, out);
        }
    }
    RunEnd::Completed
}

/// A greedy evaluation, told to viewers with the best so far. True if it is competent.
fn evaluate(tr: &mut Trainer, out: &Outbox) -> bool {
    let (e, _) = tr.evaluate_greedy();
    let best = tr.state.best.as_ref().map_or(e, |b| b.evaluation);
    let competent = tr.state.config.is_competent(e.steps, e.reward);
    out.message(ServerMessage::Evaluation(Evaluated {
        episode: e.episode,
        steps: e.steps,
        reward: e.reward,
        best,
        competent,
    }));
    competent
}

fn fault_episode() -> Option<u32> {
    std::env::var(ENV_FAULT_PANIC_AT_EPISODE).ok()?.parse().ok()
}

/// One episode. A shown episode's frames go to viewers as they happen — paced, the run waiting
/// `step_delay` after each (`pacing: run`) — or are recorded for the replayer (`pacing: replay`).
/// `None`: the run is ending (the episode is then not counted).
fn run_episode(tr: &mut Trainer, ctl: &RunCtl, out: &Outbox) -> Option<EpisodeStats> {
    let c = &tr.state.config;
    let ep = tr.state.episodes_done + 1;
    let shown = (ep - 1).is_multiple_of(c.show_every.max(1));
    let delay = Duration::from_secs_f64(c.step_delay.clamp(0.0, 5.0));
    let recorded = shown && c.pacing == Pacing::Replay && !delay.is_zero();
    let epsilon = tr.state.epsilon;
    if shown && !recorded {
        out.message(ServerMessage::EpisodeStart(EpisodeStart {
            episode: ep,
            model_name: None,
            epsilon: Some(epsilon),
            replay: None,
            live_episode: None,
        }));
    }
    tr.show_q_values(shown);
    let mut frames = Vec::new();
    let stats = tr.run_episode(|v| {
        let wait = match (shown, recorded) {
            (false, _) => Duration::ZERO,
            (true, true) => {
                if frames.len() < MAX_RECORDED_FRAMES {
                    frames.push(frame(v));
                }
                Duration::ZERO
            }
            (true, false) => {
                out.frame(ServerMessage::StateUpdate(Box::new(frame(v))), delay);
                delay
            }
        };
        if ctl.gate(wait) {
            Flow::Continue
        } else {
            Flow::Abort
        }
    })?;
    if recorded {
        ctl.record(Recording {
            episode: ep,
            epsilon,
            frames,
        });
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
            q_values: v.q.map(|q| q.to_vec()),
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
        reason: Some(s.end),
        meter: s.meter.map(|m| m.name().to_owned()),
    }
}

fn save_checkpoint(tr: &Trainer, ckpt: &Path, out: &Outbox) {
    match checkpoint::save(&tr.state, ckpt) {
        Ok(()) => out.send(FromTraining::Checkpointed {
            episode: tr.state.episodes_done,
            path: ckpt.display().to_string(),
        }),
        Err(e) => warn!(error = %e, "checkpoint failed"),
    }
}

/// The time machine's snapshot of the network as it is now (when the run keeps them): an ordinary
/// model file beside the others, named after the run and the episodes done. A failed write loses
/// one snapshot, never the run.
fn save_snapshot(tr: &Trainer, models: &Path) {
    let episode = tr.state.episodes_done;
    let Some(name) = tr.state.config.snapshot_file(episode) else {
        return;
    };
    let facts = TrainingFacts::from_state(&tr.state);
    if let Err(e) = write_model(&tr.state.online, &facts, &models.join(&name)) {
        warn!(error = %e, snapshot = %name, "snapshot not written");
    }
}

/// Writes the run's best evaluated network (the current one evaluated too) and announces the end
/// of the run.
fn save_model(tr: &mut Trainer, end: RunEnd, models: &Path, out: &Outbox) {
    let (name, path) = model_path(models, tr);
    let best = tr.best_network();
    let facts = TrainingFacts::of_best(&tr.state, &best);
    if let Err(e) = write_model(&best.net, &facts, &path) {
        let failed = Some(format!("could not save the model: {e}"));
        out.send(FromTraining::RunEnded {
            model_saved: None,
            failed,
        });
        return;
    }
    let b: Evaluation = best.evaluation;
    info!(model = %name, episodes = tr.state.episodes_done, ?end, best_episode = b.episode,
          best_steps = b.steps, best_return = b.reward, "training run finished");
    let (r, l, _) = tr.averages(10);
    out.message(ServerMessage::TrainingComplete(TrainingComplete {
        model_saved: Some(name.clone()),
        final_avg_reward: r,
        final_avg_length: l,
        stopped: matches!(end, RunEnd::Stopped | RunEnd::Shutdown),
        best: Some(b),
        competent: end == RunEnd::Competent,
    }));
    out.send(FromTraining::RunEnded {
        model_saved: Some(name),
        failed: None,
    });
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
