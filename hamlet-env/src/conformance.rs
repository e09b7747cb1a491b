//! Checks this world against recorded trajectories (the format of
//! `shared/golden/env-trajectories.json`): reset, replay each action, compare every number.

use crate::wire::{wire_meters, WireMeters};
use crate::World;
use serde::Deserialize;
use std::path::Path;

/// Largest deviation a conforming world may show.
pub const TOLERANCE: f64 = 1e-4;

#[derive(Debug, Deserialize)]
pub struct TrajectoryFile {
    #[serde(default)]
    pub source: Option<String>,
    pub trajectories: Vec<Trajectory>,
}

#[derive(Debug, Deserialize)]
pub struct Trajectory {
    #[serde(default)]
    pub label: String,
    pub initial_obs: Vec<f64>,
    pub steps: Vec<RecordedStep>,
}

#[derive(Debug, Deserialize)]
pub struct RecordedStep {
    pub action: i64,
    pub obs: Vec<f64>,
    pub reward: f64,
    pub done: bool,
    pub pos: [i32; 2],
    pub wire_meters: WireMeters,
}

/// Outcome for one trajectory.
#[derive(Debug, Clone)]
pub struct Report {
    pub label: String,
    pub steps: usize,
    pub max_deviation: f64,
    /// First mismatch beyond tolerance (or a `done`/shape mismatch), for people.
    pub first_problem: Option<String>,
}

impl Report {
    pub fn passes(&self) -> bool {
        self.first_problem.is_none() && self.max_deviation <= TOLERANCE
    }
}

pub fn check_file(path: &Path) -> Result<Vec<Report>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let file: TrajectoryFile =
        serde_json::from_str(&text).map_err(|e| format!("not a trajectory file: {e}"))?;
    Ok(file.trajectories.iter().map(check_trajectory).collect())
}

pub fn check_trajectory(t: &Trajectory) -> Report {
    let mut r = Report {
        label: t.label.clone(),
        steps: t.steps.len(),
        max_deviation: 0.0,
        first_problem: None,
    };
    let mut w = World::new();
    compare_obs(&mut r, &w, &t.initial_obs, "initial");
    for (i, s) in t.steps.iter().enumerate() {
        let at = format!("step {}", i + 1);
        let out = match w.step_id(s.action) {
            Ok(o) => o,
            Err(e) => {
                note(&mut r, format!("{at}: {e}"));
                return r;
            }
        };
        compare_obs(&mut r, &w, &s.obs, &at);
        dev(&mut r, out.reward, s.reward, &at, "reward");
        if out.done != s.done {
            note(
                &mut r,
                format!("{at}: done {} != recorded {}", out.done, s.done),
            );
        }
        let (x, y) = w.position();
        if [x, y] != s.pos {
            note(
                &mut r,
                format!("{at}: pos {:?} != recorded {:?}", [x, y], s.pos),
            );
        }
        let m = wire_meters(&w);
        let rm = &s.wire_meters;
        for (name, got, want) in [
            ("energy", m.energy, rm.energy),
            ("hygiene", m.hygiene, rm.hygiene),
            ("satiation", m.satiation, rm.satiation),
            ("money", m.money, rm.money),
            ("stress", m.stress, rm.stress),
            ("social", m.social, rm.social),
        ] {
            dev(&mut r, got, want, &at, name);
        }
    }
    r
}

fn note(r: &mut Report, problem: String) {
    if r.first_problem.is_none() {
        r.first_problem = Some(problem);
    }
}

fn dev(r: &mut Report, got: f64, want: f64, at: &str, what: &str) {
    let d = (got - want).abs();
    let d = if d.is_nan() { f64::INFINITY } else { d };
    r.max_deviation = r.max_deviation.max(d);
    if d > TOLERANCE {
        note(r, format!("{at}: {what} {got} != recorded {want}"));
    }
}

fn compare_obs(r: &mut Report, w: &World, want: &[f64], at: &str) {
    if want.len() != crate::OBS_DIM {
        note(r, format!("{at}: recorded obs has {} values", want.len()));
        return;
    }
    let got = w.observation();
    for (i, (g, e)) in got.iter().zip(want).enumerate() {
        dev(r, f64::from(*g), *e, at, &format!("obs[{i}]"));
    }
}
