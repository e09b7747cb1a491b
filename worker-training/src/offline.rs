//! `worker-training train`: an offline run that writes an ONNX model.
//!
//! The world is deterministic, so one greedy episode tells how well a network survives. Every
//! `--eval-every` episodes the online network is evaluated greedily and the best one so far (longest
//! survival, then highest reward) is what gets exported.

use clap::Args;
use hamlet_dqn::dqn::{Flow, Trainer};
use hamlet_dqn::export::{write_model, TrainingFacts};
use ipc_proto::training::{Loss, Network, TdTarget, TrainingConfig};
use std::path::PathBuf;
use std::time::Instant;

fn full_run() -> TrainingConfig {
    TrainingConfig::full_run()
}

/// Help for a flag whose default depends on the network, written from the values themselves.
fn per_network<T: std::fmt::Display>(what: &str, value: fn(&TrainingConfig) -> T) -> String {
    let of = |n| value(&TrainingConfig::full_run_for(n));
    format!(
        "{what}[default: {} for the qnetwork, {} for dueling]",
        of(Network::Qnetwork),
        of(Network::Dueling)
    )
}

/// The defaults are [`TrainingConfig::full_run_for`] the chosen network: the settings that reach
/// competence fastest (the learning rate, replay memory and target copies differ by network).
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Episodes to train.
    #[arg(long, default_value_t = full_run().num_episodes)]
    pub episodes: u32,
    /// Architecture: qnetwork or dueling.
    #[arg(long, default_value_t = full_run().network)]
    pub network: Network,
    /// Seed for initial weights, exploration and replay sampling (runs are reproducible).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the ONNX model (atomically).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = full_run().batch_size)]
    pub batch_size: u32,
    #[arg(long, help = per_network("", |c| c.learning_rate))]
    pub learning_rate: Option<f64>,
    #[arg(long, default_value_t = full_run().gamma)]
    pub gamma: f64,
    #[arg(long, default_value_t = full_run().epsilon_start)]
    pub epsilon_start: f64,
    #[arg(long, default_value_t = full_run().epsilon_min)]
    pub epsilon_min: f64,
    #[arg(long, default_value_t = full_run().epsilon_decay)]
    pub epsilon_decay: f64,
    #[arg(long, help = per_network("Episodes between target-network copies ", |c| c.target_update))]
    pub target_update: Option<u32>,
    #[arg(long, help = per_network("Transitions the replay memory holds ", |c| c.buffer_capacity))]
    pub buffer_capacity: Option<u32>,
    #[arg(long, default_value_t = full_run().max_steps)]
    pub max_steps: u32,
    /// Target rule: double (Double DQN) or max (the original).
    #[arg(long, default_value_t = full_run().td_target)]
    pub td_target: TdTarget,
    /// Steps of real reward before bootstrapping.
    #[arg(long, default_value_t = full_run().n_step)]
    pub n_step: u32,
    /// huber or mse.
    #[arg(long, default_value_t = full_run().loss)]
    pub loss: Loss,
    /// Environment steps per gradient step.
    #[arg(long, default_value_t = full_run().train_every)]
    pub train_every: u32,
    /// Episodes between greedy evaluations (0: only export the final network). One greedy
    /// episode costs about 1 % of a training episode.
    #[arg(long, default_value_t = 1)]
    pub eval_every: u32,
    /// Stop at the first greedy evaluation that survives the step cap with at least this return
    /// (the bench's "competence").
    #[arg(long)]
    pub stop_at_return: Option<f64>,
    /// Stop early once a greedy evaluation survives the full step cap this many times in a row.
    #[arg(long, default_value_t = 0)]
    pub stop_after_full_evals: u32,
    /// No progress bar: plain summary lines only (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

/// Result of an offline run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub best_greedy_steps: u32,
    pub best_greedy_reward: f64,
    pub best_at_episode: u32,
    pub seconds: f64,
    pub env_steps: u64,
}

pub fn config_from(a: &TrainArgs) -> TrainingConfig {
    let defaults = TrainingConfig::full_run_for(a.network);
    TrainingConfig {
        num_episodes: a.episodes,
        batch_size: a.batch_size,
        buffer_capacity: a.buffer_capacity.unwrap_or(defaults.buffer_capacity),
        network: a.network,
        learning_rate: a.learning_rate.unwrap_or(defaults.learning_rate),
        gamma: a.gamma,
        epsilon_start: a.epsilon_start,
        epsilon_min: a.epsilon_min,
        epsilon_decay: a.epsilon_decay,
        target_update: a.target_update.unwrap_or(defaults.target_update),
        max_steps: a.max_steps,
        seed: a.seed,
        td_target: a.td_target,
        n_step: a.n_step,
        loss: a.loss,
        train_every: a.train_every,
        ..defaults
    }
}

pub fn train(a: &TrainArgs, command: String) -> anyhow::Result<TrainReport> {
    let t0 = Instant::now();
    let mut tr = Trainer::new(config_from(a));
    // Without a terminal (output to a file or a pipe) the bar hides itself and the lines it would
    // print with it: print them plainly instead, as with --quiet.
    let plain = a.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if plain {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(u64::from(a.episodes));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} ep  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    };
    let mut full_streak = 0;
    let mut competent = false;
    for _ in 0..a.episodes {
        let s = tr.run_episode(|_| Flow::Continue).expect("never aborted");
        let (avg_r, avg_l, _) = tr.averages(10);
        let mut line = format!(
            "ep {:>5}  len {:>3}  reward {:>8.1}  loss {:>8.3}  eps {:.3}  avg10 len {:>5.1} reward {:>7.1}",
            s.episode, s.length, s.reward, s.loss, s.epsilon, avg_l, avg_r
        );
        if a.eval_every > 0 && s.episode.is_multiple_of(a.eval_every) {
            let (e, better) = tr.evaluate_greedy();
            line += &format!(
                "  greedy {:>3} ({:.1})  t {:.1}s  steps {}",
                e.steps,
                e.reward,
                t0.elapsed().as_secs_f64(),
                tr.state.total_steps
            );
            if e.steps >= a.max_steps && a.stop_at_return.is_some_and(|r| e.reward >= r) {
                line += "  COMPETENT";
                competent = true;
            }
            if better {
                // Keep the best network on disk as it improves: a long run can be stopped at any
                // moment (Ctrl-C) without losing it. Written atomically, like the final model.
                save_best(&tr, &a.out, &command)?;
                line += "  (saved)";
            }
            full_streak = if e.steps >= a.max_steps {
                full_streak + 1
            } else {
                0
            };
        }
        if plain {
            println!("{line}");
        } else {
            bar.println(line);
        }
        bar.set_message(format!("avg10 len {avg_l:.0}"));
        bar.inc(1);
        if competent {
            break;
        }
        if a.stop_after_full_evals > 0 && full_streak >= a.stop_after_full_evals {
            let note = "greedy policy survives the full cap repeatedly: stopping early";
            if plain {
                println!("{note}");
            } else {
                bar.println(note);
            }
            break;
        }
    }
    bar.finish_and_clear();
    if tr.state.best.is_none() {
        tr.evaluate_greedy();
    }
    save_best(&tr, &a.out, &command)?;
    let best = tr.state.best.as_ref().expect("evaluated").evaluation;
    Ok(TrainReport {
        best_greedy_steps: best.steps,
        best_greedy_reward: best.reward,
        best_at_episode: best.episode,
        seconds: t0.elapsed().as_secs_f64(),
        env_steps: tr.state.total_steps,
    })
}

/// Writes the run's best network so far to `out` with what it achieved.
fn save_best(tr: &Trainer, out: &std::path::Path, command: &str) -> anyhow::Result<()> {
    let best = tr
        .state
        .best
        .as_ref()
        .expect("a best network after an evaluation");
    let mut facts = TrainingFacts::of_best(&tr.state, best);
    facts.command = Some(command.to_owned());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    write_model(&best.net, &facts, out)?;
    Ok(())
}
