//! `worker-training`: without a subcommand, the live training worker the metaserver spawns;
//! `worker-training train ...` trains offline and writes an ONNX model.

use clap::{Parser, Subcommand};
use worker_training::offline::{train, TrainArgs};

#[derive(Parser)]
#[command(
    version,
    about = "Hamlet DQN training: the live worker (spawned by the metaserver) or an offline trainer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train offline and write an ONNX model.
    Train(TrainArgs),
    /// Write a model this project exported again with the current exporter (same weights, same
    /// metadata), which adds the hidden-layer outputs `h1`, `h2` (and `value`, `advantage`).
    Reexport {
        /// The model to read.
        input: std::path::PathBuf,
        /// Where to write (atomically; may be the same file).
        output: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Train(a)) => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let r = train(&a, command)?;
            println!(
                "wrote {}: greedy survival {} steps (reward {:.1}, from episode {}), {} env steps in {:.1} s",
                a.out.display(),
                r.best_greedy_steps,
                r.best_greedy_reward,
                r.best_at_episode,
                r.env_steps,
                r.seconds
            );
            Ok(())
        }
        Some(Cmd::Reexport { input, output }) => {
            let (net, metadata) = hamlet_onnx::read_network(&std::fs::read(&input)?)?;
            hamlet_onnx::write_atomic(&output, &hamlet_onnx::export(&net, &metadata)?)?;
            println!("wrote {} (from {})", output.display(), input.display());
            Ok(())
        }
        None => {
            let env = ipc_proto::WorkerEnv::from_env().map_err(|e| {
                anyhow::anyhow!("{e} (use `worker-training train` to train offline)")
            })?;
            hamlet_log::init(env.log_json);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            if let Err(e) = rt.block_on(worker_training::worker::run(env)) {
                // One plain last line: the supervisor reports a worker's last stderr line.
                tracing::error!(error = %e, "worker failed");
                eprintln!("worker-training: {e:#}");
                std::process::exit(3);
            }
            Ok(())
        }
    }
}
