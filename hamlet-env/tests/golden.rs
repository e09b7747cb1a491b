//! The golden trajectories recorded from the original implementation must replay to 1e-4.

use hamlet_env::conformance::check_file;
use std::path::PathBuf;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/env-trajectories.json")
}

#[test]
fn golden_trajectories_conform() {
    let reports = check_file(&golden()).expect("golden file readable");
    assert_eq!(reports.len(), 24, "the golden file holds 24 trajectories");
    let failures: Vec<_> = reports.iter().filter(|r| !r.passes()).collect();
    assert!(failures.is_empty(), "non-conforming: {failures:#?}");
    let total: usize = reports.iter().map(|r| r.steps).sum();
    assert!(total > 2000, "only {total} steps checked");
}

#[test]
fn worked_examples_of_world_md() {
    use hamlet_env::{Action, World};
    let mut w = World::new();
    let r = w.step(Action::Up);
    assert!((r.reward - 2.158125).abs() < 1e-9, "{}", r.reward);

    let mut w = World::new();
    let mut n = 0;
    let mut last = Action::Up;
    loop {
        // Alternate up/down so the agent keeps moving without wall bumps mattering.
        last = if last == Action::Up {
            Action::Down
        } else {
            Action::Up
        };
        n += 1;
        if w.step(last).done {
            break;
        }
    }
    assert_eq!(n, 100, "always moving dies after exactly 100 steps");

    let mut w = World::new();
    let mut n = 0;
    while !w.step(Action::Interact).done {
        n += 1;
    }
    assert_eq!(
        n + 1,
        67,
        "always interacting on the empty start cell dies after 67"
    );
}

#[test]
fn a_tampered_trajectory_is_caught() {
    // The checker itself must be able to fail: perturb one reward and expect a report.
    let text = std::fs::read_to_string(golden()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &mut v["trajectories"][0]["steps"][3]["reward"];
    *r = serde_json::json!(r.as_f64().unwrap() + 0.001);
    let t: hamlet_env::conformance::Trajectory =
        serde_json::from_value(v["trajectories"][0].take()).unwrap();
    let report = hamlet_env::conformance::check_trajectory(&t);
    assert!(!report.passes());
    assert!(report.first_problem.unwrap().contains("step 4: reward"));
}
