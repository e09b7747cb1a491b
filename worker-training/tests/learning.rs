//! Learning quality: a short, seeded run must clearly beat the random policy (≈107 steps on
//! average) in greedy survival. The world is deterministic, so one greedy episode tells.

use ipc_proto::training::Network;
use worker_training::offline::{train, TrainArgs};

#[test]
fn a_short_seeded_run_clearly_beats_the_random_policy() {
    let dir = std::env::temp_dir().join(format!("learning-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = TrainArgs {
        episodes: 250,
        network: Network::Qnetwork,
        seed: 1,
        out: dir.join("m.onnx"),
        batch_size: 64,
        learning_rate: 1e-3,
        gamma: 0.99,
        epsilon_start: 1.0,
        epsilon_min: 0.05,
        epsilon_decay: 0.995,
        target_update: 5,
        buffer_capacity: 50_000,
        max_steps: 500,
        eval_every: 10,
        stop_after_full_evals: 0,
        quiet: true,
    };
    let r = train(&args, "test".into()).unwrap();
    const RANDOM_POLICY_MEAN: u32 = 107;
    assert!(
        r.best_greedy_steps >= RANDOM_POLICY_MEAN * 3 / 2,
        "greedy survival {} steps after 250 episodes",
        r.best_greedy_steps
    );
    // The file on disk is the best network, with its greedy survival in the metadata.
    let info = hamlet_onnx::inspect_file(&dir.join("m.onnx")).unwrap();
    assert_eq!(
        info.metadata["hamlet.greedy_steps"],
        r.best_greedy_steps.to_string()
    );
    let _ = std::fs::remove_dir_all(dir);
}
