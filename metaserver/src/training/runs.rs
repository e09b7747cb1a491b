//! What the class board compares (rooms.md, "The board"): every room's runs as rows of the same
//! shape — the finished ones kept in a bounded [`RunLog`] for `GET /api/runs`, the live one read
//! from its room's history for `GET /api/rooms` — each labelled by how its configuration differs
//! from the defaults.

use super::history::{Competence, EvaluationRow, RunHistory};
use crate::clock::now_secs;
use ipc_proto::browser::Evaluation;
use ipc_proto::training::TrainingConfig;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;

/// Most points of a run's curve in one answer (evaluations, evenly thinned, the last kept).
pub const CURVE_POINTS: usize = 120;

/// Settings that change how a run is shown or named, not what it learns: never a run's label.
/// The seed is reported on its own (runs that differ by seed only are one experiment, a band).
const NOT_A_KNOB: [&str; 8] = [
    "seed",
    "model_name",
    "snapshots",
    "snapshot_every",
    "show_every",
    "step_delay",
    "pacing",
    "checkpoint_every",
];

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// All its episodes ran.
    Completed,
    /// A greedy evaluation was competent and the run stopped there (`stop_when_competent`).
    Competent,
    /// Someone stopped it.
    Stopped,
    /// Its worker failed beyond the restart budget, or its model could not be saved.
    Failed,
}

/// One run as the board shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub room: String,
    /// The learning settings that differ from the defaults (name → value).
    pub differences: Map<String, Value>,
    pub seed: Option<u64>,
    pub episodes: u32,
    pub total_episodes: u32,
    /// The best greedy evaluation (survival first, then return).
    pub best: Option<Evaluation>,
    /// The latest greedy evaluation.
    pub last: Option<Evaluation>,
    pub competent: Option<Competence>,
    /// Seconds it has been training (wall clock, on this server).
    pub seconds: f64,
    /// Greedy evaluations, at most [`CURVE_POINTS`].
    pub curve: Vec<EvaluationRow>,
    /// The stem of its time-machine snapshots (`GET /api/rooms/{room}/snapshots`).
    pub snapshots: Option<String>,
}

impl RunRow {
    pub fn of(room: &str, h: &RunHistory, best: Option<Evaluation>) -> RunRow {
        let config = h.config.clone().unwrap_or_default();
        let last = h.evaluations().last().map(|e| Evaluation {
            episode: e.episode,
            steps: e.steps,
            reward: e.reward,
        });
        RunRow {
            room: room.to_owned(),
            differences: differences(&config),
            seed: h.config.as_ref().map(|c| c.seed),
            episodes: h.episodes_done(),
            total_episodes: config.num_episodes,
            best,
            last,
            competent: h.competence(),
            seconds: h.seconds(),
            curve: thin(h.evaluations(), CURVE_POINTS),
            snapshots: config.snapshots.clone(),
        }
    }
}

/// A finished run, as `GET /api/runs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedRun {
    /// Numbered from 1 on this server, in the order runs finished.
    pub id: u64,
    pub outcome: Outcome,
    pub finished_at: u64,
    pub model_saved: Option<String>,
    #[serde(flatten)]
    pub run: RunRow,
}

/// The newest finished runs of every room (`--max-runs-kept`); older ones are forgotten.
pub struct RunLog {
    kept: Mutex<(u64, VecDeque<FinishedRun>)>,
    max: usize,
}

impl RunLog {
    pub fn new(max: usize) -> RunLog {
        RunLog {
            kept: Mutex::new((0, VecDeque::new())),
            max,
        }
    }

    pub fn record(&self, run: RunRow, outcome: Outcome, model_saved: Option<String>) {
        let mut kept = self.kept.lock();
        kept.0 += 1;
        let id = kept.0;
        kept.1.push_back(FinishedRun {
            id,
            outcome,
            finished_at: now_secs(),
            model_saved,
            run,
        });
        while kept.1.len() > self.max {
            kept.1.pop_front();
        }
    }

    /// The newest kept run whose snapshots have this stem.
    pub fn with_snapshots(&self, stem: &str) -> Option<FinishedRun> {
        let kept = self.kept.lock();
        kept.1
            .iter()
            .rev()
            .find(|r| r.run.snapshots.as_deref() == Some(stem))
            .cloned()
    }

    /// The kept runs, oldest first.
    pub fn list(&self) -> Vec<FinishedRun> {
        self.kept.lock().1.iter().cloned().collect()
    }
}

/// The learning settings of `c` that differ from [`TrainingConfig::default`].
pub fn differences(c: &TrainingConfig) -> Map<String, Value> {
    let (Ok(Value::Object(mine)), Ok(Value::Object(defaults))) = (
        serde_json::to_value(c),
        serde_json::to_value(TrainingConfig::default()),
    ) else {
        return Map::new();
    };
    mine.into_iter()
        .filter(|(k, v)| !NOT_A_KNOB.contains(&k.as_str()) && defaults.get(k) != Some(v))
        .collect()
}

/// At most `max` rows, evenly spread, always keeping the last.
fn thin(rows: &[EvaluationRow], max: usize) -> Vec<EvaluationRow> {
    if rows.len() <= max || max < 2 {
        return rows.to_vec();
    }
    let step = (rows.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| rows[((i as f64 * step).round() as usize).min(rows.len() - 1)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_only_the_changed_learning_settings() {
        let c = TrainingConfig {
            learning_rate: 5e-4,
            seed: 7,
            step_delay: 0.0,
            ..TrainingConfig::default()
        };
        let d = differences(&c);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d["learning_rate"], 5e-4);
        assert!(differences(&TrainingConfig::default()).is_empty());
    }

    #[test]
    fn the_log_keeps_the_newest_runs() {
        let log = RunLog::new(2);
        let h = RunHistory::new(TrainingConfig::default());
        for room in ["a", "b", "c"] {
            log.record(RunRow::of(room, &h, None), Outcome::Completed, None);
        }
        let rooms: Vec<_> = log.list().iter().map(|r| r.run.room.clone()).collect();
        assert_eq!(rooms, ["b", "c"]);
        assert_eq!(log.list()[1].id, 3);
    }

    #[test]
    fn a_thinned_curve_keeps_both_ends() {
        let rows: Vec<_> = (0..1000)
            .map(|i| EvaluationRow {
                episode: i,
                steps: i,
                reward: 0.0,
            })
            .collect();
        let t = thin(&rows, 10);
        assert_eq!(t.len(), 10);
        assert_eq!((t[0].episode, t[9].episode), (0, 999));
    }
}
