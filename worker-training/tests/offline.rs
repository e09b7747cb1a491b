//! `worker-training train`: the file it writes is the best network it evaluated, with its greedy
//! survival in the ONNX metadata. (Learning quality itself is tested in `hamlet-dqn`.)

use ipc_proto::training::Network;
use worker_training::offline::{train, TrainArgs};

#[test]
fn the_written_model_is_the_best_evaluated_one() {
    let dir = std::env::temp_dir().join(format!("offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = TrainArgs {
        episodes: 30,
        network: Network::Qnetwork,
        seed: 1,
        out: dir.join("m.onnx"),
        batch_size: 32,
        learning_rate: 1e-3,
        gamma: 0.99,
        epsilon_start: 1.0,
        epsilon_min: 0.05,
        epsilon_decay: 0.995,
        target_update: 5,
        buffer_capacity: 10_000,
        max_steps: 200,
        eval_every: 5,
        stop_after_full_evals: 0,
        quiet: true,
    };
    let r = train(&args, "test".into()).unwrap();
    assert!(
        r.best_at_episode.is_multiple_of(5) && r.best_at_episode <= 30,
        "{r:?}"
    );
    let info = hamlet_onnx::inspect_file(&dir.join("m.onnx")).unwrap();
    assert_eq!(
        info.metadata["hamlet.greedy_steps"],
        r.best_greedy_steps.to_string()
    );
    assert_eq!(info.metadata["hamlet.command"], "test");
    let _ = std::fs::remove_dir_all(dir);
}
