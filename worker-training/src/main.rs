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
        None => {
            ipc_proto::logging::init_from_env();
            let var = |k: &str| {
                std::env::var(k).map_err(|_| {
                    anyhow::anyhow!("{k} is not set: the live worker is started by the metaserver (use `train` to train offline)")
                })
            };
            let paths = worker_training::worker::Paths {
                models_dir: var(ipc_proto::ENV_MODELS_DIR)?.into(),
                checkpoint_dir: var("HAMLET_CHECKPOINT_DIR")?.into(),
            };
            let socket = var(ipc_proto::ENV_SOCKET)?.into();
            let token = var(ipc_proto::ENV_TOKEN)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(worker_training::worker::run(socket, token, paths))
        }
    }
}
