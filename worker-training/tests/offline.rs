//! `worker-training train`: the file it writes is the best network it evaluated, with its greedy
//! survival in the ONNX metadata — and played again by ONNX Runtime, as a session plays it, it
//! survives exactly as evaluated. (Learning quality itself is tested in `hamlet-dqn`.)

use clap::Parser;
use ipc_proto::training::{Network, TrainingConfig};
use worker_training::offline::{config_from, train, TrainArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

fn parse(args: &[&str]) -> TrainArgs {
    Cli::parse_from(std::iter::once("train").chain(args.iter().copied())).args
}

/// `worker-training train`'s defaults are the "full run" settings of the chosen network
/// (`TrainingConfig::full_run_for`), which the live form's presets offer too and
/// `scripts/bench learn` measures; a flag given still wins.
#[test]
fn the_trainers_defaults_are_the_full_run_settings() {
    let args = parse(&["--out", "x.onnx", "--seed", "4"]);
    assert_eq!(
        config_from(&args),
        TrainingConfig {
            seed: 4,
            ..TrainingConfig::full_run()
        }
    );
    let dueling = parse(&["--out", "x.onnx", "--network", "dueling"]);
    let want = TrainingConfig::full_run_for(Network::Dueling);
    assert_eq!(config_from(&dueling), want);
    assert_ne!(want.learning_rate, TrainingConfig::full_run().learning_rate);
    let chosen = parse(&[
        "--out",
        "x.onnx",
        "--network",
        "dueling",
        "--learning-rate",
        "0.001",
    ]);
    assert_eq!(config_from(&chosen).learning_rate, 0.001);
    assert_eq!(config_from(&chosen).buffer_capacity, want.buffer_capacity);
}

#[test]
fn the_written_model_is_the_best_evaluated_one() {
    let dir = std::env::temp_dir().join(format!("offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.onnx");
    let args = parse(&[
        "--episodes",
        "30",
        "--seed",
        "1",
        "--batch-size",
        "32",
        "--max-steps",
        "200",
        "--eval-every",
        "5",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
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
    // The file itself, not its metadata: one greedy episode through ONNX Runtime with the
    // inference worker's own loading code.
    let (steps, reward) = replay_greedy(&dir, "m.onnx", 200);
    assert_eq!(steps, r.best_greedy_steps, "{r:?}");
    assert!(
        (reward - r.best_greedy_reward).abs() < 1e-3,
        "{reward} vs {r:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Plays one greedy episode of a model file as an inference session does: (steps, total reward).
fn replay_greedy(dir: &std::path::Path, name: &str, max_steps: u32) -> (u32, f64) {
    use worker_inference::policy::{Policy, Runtime};
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(ipc_proto::ORT_LIB_PATH);
    let rt = Runtime::init(&lib).expect("ONNX Runtime (run scripts/setup)");
    let mut policy = Policy::load(&rt, dir, name).expect("the written model loads");
    let mut world = hamlet_env::World::new();
    let mut total = 0.0;
    loop {
        let q = policy.q_values(&world.observation()).unwrap();
        let out = world.step_id(hamlet_env::argmax(&q) as i64).unwrap();
        total += out.reward;
        if out.done || world.steps() >= max_steps {
            return (world.steps(), total);
        }
    }
}
