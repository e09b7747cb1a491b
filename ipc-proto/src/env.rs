//! What the metaserver tells a worker through its environment, read in one place by both workers.

use std::path::PathBuf;

/// Environment variable through which the metaserver hands a worker its socket path.
pub const ENV_SOCKET: &str = "HAMLET_SOCKET";
/// Environment variable carrying the one-time handshake token.
pub const ENV_TOKEN: &str = "HAMLET_TOKEN";
/// Environment variable naming the worker (for logs only; identity is the token).
pub const ENV_WORKER_ID: &str = "HAMLET_WORKER_ID";
/// Environment variable with the path of ONNX Runtime's shared library.
pub const ENV_ORT_LIB: &str = "HAMLET_ORT_LIB";
/// Environment variable with the models directory.
pub const ENV_MODELS_DIR: &str = "HAMLET_MODELS_DIR";
/// Environment variable with the training checkpoints directory.
pub const ENV_CHECKPOINT_DIR: &str = "HAMLET_CHECKPOINT_DIR";
/// Environment variable with the log format (`text` or `json`) for worker processes.
pub const ENV_LOG_FORMAT: &str = "HAMLET_LOG_FORMAT";
/// Environment variable with the most `state_update` frames per second a viewer is sent
/// (`--viewer-fps`): the training worker sends no more than that (the newest at each turn).
pub const ENV_FRAME_RATE: &str = "HAMLET_FRAME_RATE";

/// ONNX Runtime's shared library, relative to the repository (where `scripts/setup` puts it).
pub const ORT_LIB_PATH: &str = ".onnxruntime/libonnxruntime.so.1.31.1";

/// A worker's environment.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    pub socket: PathBuf,
    pub token: String,
    pub worker_id: String,
    pub ort_lib: PathBuf,
    pub models_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub log_json: bool,
    /// Most frames per second worth sending (none: every frame).
    pub frame_rate: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is not set: workers are started by the metaserver, not by hand")]
pub struct MissingVar(&'static str);

impl WorkerEnv {
    /// Reads the environment, and removes the one-time token from it (children, if there ever
    /// are any, must not see it).
    pub fn from_env() -> Result<Self, MissingVar> {
        let var = |k: &'static str| std::env::var(k).map_err(|_| MissingVar(k));
        let env = WorkerEnv {
            socket: var(ENV_SOCKET)?.into(),
            token: var(ENV_TOKEN)?,
            worker_id: var(ENV_WORKER_ID).unwrap_or_default(),
            ort_lib: var(ENV_ORT_LIB)?.into(),
            models_dir: var(ENV_MODELS_DIR)?.into(),
            checkpoint_dir: var(ENV_CHECKPOINT_DIR)?.into(),
            log_json: std::env::var(ENV_LOG_FORMAT).is_ok_and(|f| f == "json"),
            frame_rate: std::env::var(ENV_FRAME_RATE)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|r| r.is_finite() && *r > 0.0),
        };
        // Workers call this first thing, before any other thread could read the environment.
        std::env::remove_var(ENV_TOKEN);
        Ok(env)
    }
}
