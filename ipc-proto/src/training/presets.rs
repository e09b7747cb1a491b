//! Lesson presets: configurations a teacher picks with one click, each with what it is measured
//! to deliver on this project's machine (BENCHMARKS.md, "The lesson").

use super::config::{Network, Pacing, TrainingConfig};
use super::fields::to_fields;
use serde::Serialize;
use serde_json::Value;

/// A configuration for a lesson, offered by the training form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preset {
    pub name: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    /// Every `start_training` field this preset sets (the seed and model name are left to the
    /// form).
    pub config: Value,
    /// Environment steps a run of this preset takes, measured (median of `scripts/bench learn`'s
    /// seeds): with the server's measured training speed this gives the expected duration.
    pub expected_env_steps: u64,
}

/// The offline trainer's settings with shown episodes replayed beside the run: a class watches a
/// recent episode at a readable pace while the run itself never waits (`pacing: replay`), so it
/// learns as fast as with nothing shown.
fn watched_full_run() -> TrainingConfig {
    TrainingConfig {
        show_every: 10,
        step_delay: 0.03,
        pacing: Pacing::Replay,
        ..TrainingConfig::full_run()
    }
}

/// The lesson: trains until the greedy agent survives the step cap with a return of 1000.
pub fn learn_to_survive() -> TrainingConfig {
    TrainingConfig {
        num_episodes: 5000,
        eval_every: 1,
        stop_when_competent: true,
        ..watched_full_run()
    }
}

/// About a minute: far enough that the saved (best) agent clearly outlives a random one.
pub fn demo() -> TrainingConfig {
    TrainingConfig {
        num_episodes: 600,
        eval_every: 5,
        ..watched_full_run()
    }
}

/// Lesson presets; the first is what the form starts with.
pub fn presets() -> Vec<Preset> {
    let full_dueling = TrainingConfig::full_run_for(Network::Dueling);
    vec![
        preset(
            "learn",
            "Learn to survive",
            "Trains until the agent, playing its best, survives all 500 steps with a return of \
             at least 1000, then stops and saves it. A recent episode is replayed as it learns.",
            learn_to_survive(),
            591_308,
        ),
        preset(
            "demo",
            "1-minute demo",
            "A short run: the saved agent clearly outlives a random one, but has not finished \
             learning. A recent episode is replayed as it learns.",
            demo(),
            153_000,
        ),
        preset(
            "full",
            "Full run",
            "The offline trainer's settings for 3000 episodes, nothing shown: the best agent of \
             the run is saved.",
            TrainingConfig::full_run(),
            1_000_000,
        ),
        preset(
            "full-dueling",
            "Full run, dueling network",
            "The same for the larger dueling network (value and advantage streams): several \
             times slower to become competent.",
            full_dueling,
            1_000_000,
        ),
    ]
}

fn preset(
    name: &'static str,
    label: &'static str,
    description: &'static str,
    c: TrainingConfig,
    expected_env_steps: u64,
) -> Preset {
    let mut fields = to_fields(&c);
    fields.remove("seed");
    fields.remove("model_name");
    Preset {
        name,
        label,
        description,
        config: Value::Object(fields),
        expected_env_steps,
    }
}
