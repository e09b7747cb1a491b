//! `worker-inference`: spawned by the metaserver, one per browser session. Not meant to be run by
//! hand: it reads its socket path and one-time token from the environment.

use std::process::ExitCode;
use worker_inference::runner::{run, Exit};

fn main() -> ExitCode {
    let env = match ipc_proto::WorkerEnv::from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("worker-inference: {e}");
            return ExitCode::from(2);
        }
    };
    hamlet_log::init(env.log_json);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(env)) {
        Ok(exit) => {
            tracing::debug!(?exit, "worker exiting");
            if exit == Exit::Signal {
                tracing::info!("SIGTERM: exiting");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("worker-inference: {e:#}");
            ExitCode::from(3)
        }
    }
}
