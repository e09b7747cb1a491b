//! Command-line configuration. Every supervision number of design.md is a flag with that default.

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "metaserver",
    version,
    about = "Hamlet's server: one port for browsers (inference /ws, training /ws/training, the UI, \
             operator APIs), one supervised worker process per session"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "HAMLET_HOST")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8765, env = "HAMLET_PORT")]
    pub port: u16,
    /// Directory holding the `worker-inference` and `worker-training` binaries
    /// (after `cargo build --release`: target/release).
    #[arg(long, default_value = "target/release")]
    pub workers_dir: PathBuf,
    /// Directory of ONNX models offered to sessions; training runs save theirs here.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// ONNX Runtime shared library handed to workers (scripts/setup puts it in .onnxruntime/).
    #[arg(
        long,
        default_value = ipc_proto::ORT_LIB_PATH,
        env = "HAMLET_ORT_LIB"
    )]
    pub ort_lib: PathBuf,
    /// Model for new sessions (default: hamlet-default.onnx if present, else the most recently
    /// trained model, by the training time in its metadata).
    #[arg(long)]
    pub default_model: Option<String>,
    /// Episode step cap for inference sessions.
    #[arg(long, default_value_t = 500)]
    pub max_steps: u32,
    /// Most concurrent inference sessions; more get an `error` and close code 1013.
    #[arg(long, default_value_t = 256)]
    pub max_sessions: usize,
    /// Most concurrent training viewers (in each room).
    #[arg(long, default_value_t = 512)]
    pub max_training_viewers: usize,
    /// Most training rooms besides `class` (`/ws/training?room=NAME`), each with its own
    /// `worker-training` process once a run starts there (rooms.md).
    #[arg(long, default_value_t = 8)]
    pub max_rooms: usize,
    /// Most training runs at once on this server, rooms together (default: the number of
    /// cores); a start beyond it waits in a queue and its room is told its place.
    #[arg(long)]
    pub max_training_runs: Option<usize>,
    /// A room with no viewer and no run is closed after this long (seconds).
    #[arg(long, default_value_t = 3600)]
    pub room_idle_secs: u64,
    /// Finished training runs kept for `GET /api/runs` and the class board (the newest).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_runs_kept: u64,
    /// Training runs whose time-machine snapshots are kept in the models directory (the newest;
    /// each run keeps about ten networks).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_snapshot_runs: u64,
    /// Most `state_update` frames per second sent to each training viewer; when a run produces
    /// more (step_delay 0), the newest replaces one not yet sent.
    #[arg(long, default_value_t = 60.0)]
    pub viewer_fps: f64,
    /// Started, handshaken inference workers kept ready for new sessions.
    #[arg(long, default_value_t = 2)]
    pub warm_workers: usize,
    /// Largest WebSocket message accepted from a browser, in bytes (larger: close 1009).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Frames queued per browser before `state_update`s are dropped.
    #[arg(long, default_value_t = 256)]
    pub client_queue: usize,
    /// Messages per second a browser may send (burst: twice this); excess gets `rate_limited`.
    #[arg(long, default_value_t = 100.0)]
    pub client_rate: f64,
    /// Restarts of one session's worker within --restart-window-secs before giving up.
    #[arg(long, default_value_t = 5)]
    pub max_restarts: usize,
    #[arg(long, default_value_t = 60)]
    pub restart_window_secs: u64,
    /// A worker that lived this long counts as stable and resets its restart budget.
    #[arg(long, default_value_t = 30)]
    pub stable_after_secs: u64,
    #[arg(long, default_value_t = 50)]
    pub backoff_min_ms: u64,
    #[arg(long, default_value_t = 2000)]
    pub backoff_max_ms: u64,
    /// Heartbeat period for workers.
    #[arg(long, default_value_t = 1000)]
    pub ping_interval_ms: u64,
    /// A worker silent for this long is killed and replaced. Counted in heartbeats the metaserver
    /// actually sent (5 s = 5 pings in a row without a frame back), so a metaserver that stalls
    /// on a loaded machine does not blame its workers for its own silence.
    #[arg(long, default_value_t = 5000)]
    pub hang_timeout_ms: u64,
    /// Time a spawned worker has to connect, authenticate and load ONNX Runtime.
    #[arg(long, default_value_t = 15_000)]
    pub spawn_timeout_ms: u64,
    /// Grace period at shutdown before remaining workers are killed.
    #[arg(long, default_value_t = 3000)]
    pub shutdown_grace_ms: u64,
    /// Whether requests from loopback count as an operator's (default true). Set it to false
    /// behind a reverse proxy on the same host, where every request arrives from loopback: then
    /// only the admin token makes an operator (endpoints and control of the training run).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub loopback_is_operator: bool,
    /// Token that grants operator endpoints from non-loopback addresses
    /// (header `Authorization: Bearer TOKEN`). Without it they are loopback-only.
    #[arg(long, env = "HAMLET_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Names this server is reached by, besides its addresses, loopback names and this machine's
    /// host name (comma-separated, e.g. hamlet.school.example): a request whose `Host` names
    /// anything else is refused with 421 (a web page that rebinds its own name to this server).
    #[arg(long, value_delimiter = ',')]
    pub public_host: Vec<String>,
    /// More origins allowed to open WebSockets (comma-separated, e.g. http://class.example:5173;
    /// `*` allows all). Always allowed: pages on the request's own host name (any port), and
    /// clients that send no Origin (non-browsers).
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Directory for training checkpoints (default: MODELS_DIR/.checkpoints).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Where sessions are kept so they outlive their connection and the server: a directory
    /// (created 0700; two copies per session, holding only a hash of its token), or
    /// `redis://[USER:PASSWORD@]HOST:PORT/DB` (`rediss://` for TLS), which makes this server a
    /// cluster node (cluster.md). A password is never logged or shown; the environment variable
    /// HAMLET_STORE keeps it off the command line.
    #[arg(long, default_value = "state", value_parser = StoreLocation::parse, env = "HAMLET_STORE")]
    pub store: StoreLocation,
    /// This node's name in a cluster (default HOSTNAME:PORT); only used with `--store redis://…`.
    #[arg(long, env = "HAMLET_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a session whose browser has gone can be resumed with its token.
    #[arg(long, default_value_t = 300)]
    pub resume_window_secs: u64,
    /// Most detached sessions kept (the oldest are forgotten first).
    #[arg(long, default_value_t = 4096)]
    pub max_detached: usize,
    /// Most read-only watchers of one session.
    #[arg(long, default_value_t = 64)]
    pub max_watchers: usize,
    /// Most read-only watchers of all sessions together.
    #[arg(long, default_value_t = 1024)]
    pub max_watchers_total: usize,
    /// A changing session's snapshot reaches the store at most this often (and at once when its
    /// browser leaves and at shutdown): the most a SIGKILL of the server rewinds a session.
    #[arg(long, default_value_t = 250)]
    pub snapshot_flush_ms: u64,
    /// Do not resume a training run that was in progress when the server last stopped.
    #[arg(long)]
    pub no_resume_training: bool,
    /// Who may start a training run: `anyone` (as the original Hamlet) or `operators` (loopback,
    /// or a browser that entered the admin token).
    #[arg(long, default_value = "anyone", value_parser = ["anyone", "operators"])]
    pub start_training: String,
    /// Most episodes a run started by someone who is not an operator may have; a teacher's
    /// runs are not limited.
    #[arg(long, default_value_t = 5000)]
    pub max_student_episodes: u32,
    /// Threads relaying frames (the async runtime's workers). Default: 1 on a machine with at
    /// most 2 cores — there every cross-thread wake-up costs more than a second thread gains, and
    /// the other core is the workers' (BENCHMARKS.md, "where a frame's time goes") — else one
    /// per core.
    #[arg(long, env = "HAMLET_RUNTIME_THREADS")]
    pub runtime_threads: Option<usize>,
    /// Log format: text or json. Filter with RUST_LOG (default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Where `--store` keeps sessions.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One machine: a directory.
    Dir(PathBuf),
    /// A cluster node: a Redis URL (`redis://` or `rediss://`, perhaps with a user and password).
    Redis(String),
}

/// Never prints a Redis password (a `Config` may be logged or printed in an error).
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Dir(d) => f.debug_tuple("Dir").field(d).finish(),
            StoreLocation::Redis(url) => f.debug_tuple("Redis").field(&redacted(url)).finish(),
        }
    }
}

/// A Redis URL with its password (if any) replaced by `***`.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
            let creds = &rest[..at - scheme.len() - 3];
            let user = creds.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl StoreLocation {
    fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            redis::Client::open(s)
                .map_err(|e| format!("not a usable Redis URL ({}): {e}", redacted(s)))?;
            Ok(StoreLocation::Redis(s.to_owned()))
        } else if s.contains("://") {
            Err("a directory, or redis://[USER:PASSWORD@]HOST:PORT/DB (rediss:// for TLS)".into())
        } else {
            Ok(StoreLocation::Dir(PathBuf::from(s)))
        }
    }

    /// The directory, on one machine.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            StoreLocation::Dir(d) => Some(d),
            StoreLocation::Redis(_) => None,
        }
    }
}

impl Config {
    /// `--start-training operators`: students may watch but not start runs.
    pub fn only_operators_start(&self) -> bool {
        self.start_training == "operators"
    }

    /// `--max-training-runs`, or its default: one run per core (each run keeps a core busy).
    pub fn max_training_runs(&self) -> usize {
        self.max_training_runs
            .filter(|n| *n > 0)
            .unwrap_or_else(cores)
    }

    /// `--runtime-threads`, or its default for this machine.
    pub fn runtime_threads(&self) -> usize {
        let cores = cores();
        self.runtime_threads
            .filter(|n| *n > 0)
            .unwrap_or(if cores <= 2 { 1 } else { cores })
    }

    /// The node id of cluster.md: `--node-id`, else HOSTNAME:PORT.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "node".into());
            format!("{host}:{}", self.port)
        })
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoint_dir
            .clone()
            .unwrap_or_else(|| self.models_dir.join(".checkpoints"))
    }
}

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_with_passwords_are_accepted_and_never_shown() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://:s3cret@127.0.0.1:6379/0",
            "redis://hamlet:s3cret@127.0.0.1:6379/0",
            "rediss://hamlet:s3cret@redis.school.example:6380/0",
        ] {
            let loc = StoreLocation::parse(url).unwrap();
            assert_eq!(loc, StoreLocation::Redis(url.into()));
            let shown = format!("{loc:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            redacted("redis://hamlet:s3cret@h:1/0"),
            "redis://hamlet:***@h:1/0"
        );
        assert_eq!(redacted("redis://h:1/0"), "redis://h:1/0");
        assert!(StoreLocation::parse("http://x").is_err());
    }
}
