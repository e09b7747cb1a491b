//! Helpers for end-to-end tests: start the real `metaserver` (port 0, temp models directory),
//! talk to it over real HTTP and WebSockets, and clean up every process on drop.

pub mod chaos;
pub mod play;
pub mod webdriver;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the release binaries are (the test command builds them first). Refuses, once per test
/// process, to hand out binaries older than the sources they are built from: after an edit,
/// `cargo test -p hamlet-tests` alone would otherwise test the previous build.
pub fn bin_dir() -> PathBuf {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release");
    CHECKED.get_or_init(|| {
        if let Err(e) = check_binaries_fresh(&dir) {
            panic!("{e}");
        }
    });
    dir
}

/// Each binary and the sources it is built from (the workspace crates it links; the metaserver
/// also embeds its UI). Keep in step with the crates' dependencies.
const BINARY_SOURCES: &[(&str, &[&str])] = &[
    (
        "metaserver",
        &[
            "ipc-proto/src",
            "hamlet-env/src",
            "hamlet-onnx/src",
            "hamlet-log/src",
            "metaserver/src",
            "metaserver/ui",
        ],
    ),
    (
        "worker-inference",
        &[
            "ipc-proto/src",
            "hamlet-env/src",
            "hamlet-onnx/src",
            "hamlet-log/src",
            "worker-inference/src",
        ],
    ),
    (
        "worker-training",
        &[
            "ipc-proto/src",
            "hamlet-env/src",
            "hamlet-onnx/src",
            "hamlet-log/src",
            "hamlet-dqn/src",
            "worker-training/src",
        ],
    ),
];

/// Fails when a binary is missing or older than the newest of its sources.
pub fn check_binaries_fresh(dir: &Path) -> std::result::Result<(), String> {
    for (bin, sources) in BINARY_SOURCES {
        let p = dir.join(bin);
        let built = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .map_err(|_| {
                format!(
                "{} is missing: run `cargo build --release --workspace --bins` (scripts/test does)",
                p.display()
            )
            })?;
        let newer = sources
            .iter()
            .flat_map(|s| files_under(&root().join(s)))
            .find(|f| {
                std::fs::metadata(f)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > built)
            });
        if let Some(src) = newer {
            return Err(format!(
                "{} is older than {}: run `cargo build --release --workspace --bins` (scripts/test \
                 does), or the tests would run the previous build",
                p.display(),
                src.display()
            ));
        }
    }
    Ok(())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn ort_lib() -> PathBuf {
    root().join(ipc_proto::ORT_LIB_PATH)
}

/// The `p` quantile (0–1) of `v`, which it sorts; NaN when empty.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Two figures measured in turns, round after round, so that a machine whose speed drifts during
/// a bench moves both sides of each round's ratio alike. Reports medians.
#[derive(Debug, Default)]
pub struct InTurns {
    a: Vec<f64>,
    b: Vec<f64>,
    ratios: Vec<f64>,
}

impl InTurns {
    /// One round: `a` and `b` measured one right after the other.
    pub fn push(&mut self, a: f64, b: f64) {
        self.a.push(a);
        self.b.push(b);
        self.ratios.push(a / b);
    }

    /// (median of `a`, median of `b`, median of the rounds' `a ÷ b`).
    pub fn medians(mut self) -> (f64, f64, f64) {
        (
            pct(&mut self.a, 0.5),
            pct(&mut self.b, 0.5),
            pct(&mut self.ratios, 0.5),
        )
    }
}

/// A loopback port free right now (for a test that restarts a server on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hamlet-e2e-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A workers directory whose inference worker dies at once (as a broken build would: it prints
/// `boom: cannot start` and exits with code 3) and whose training worker is the real one.
pub fn crash_looping_workers_dir() -> PathBuf {
    let dir = temp_dir("crashloop");
    let script = dir.join("worker-inference");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(
        bin_dir().join("worker-training"),
        dir.join("worker-training"),
    )
    .unwrap();
    dir
}

/// Trains a tiny model with the real trainer (a couple of episodes: fast, and a valid network).
pub fn make_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new(bin_dir().join("worker-training"))
        .args([
            "train",
            "--episodes",
            "2",
            "--quiet",
            "--eval-every",
            "0",
            "--seed",
        ])
        .arg(seed.to_string())
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run worker-training train");
    assert!(st.success(), "training a test model failed");
    out
}

pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub models: PathBuf,
    pub dir: PathBuf,
    pub pid: u32,
}

pub struct ServerOpts {
    pub workers_dir: PathBuf,
    pub args: Vec<String>,
    /// Train this many small models into the models directory first.
    pub models: usize,
    /// Copy these model files into the models directory too.
    pub copy_models: Vec<PathBuf>,
    /// Extra environment for the metaserver (and so its workers), e.g. a test fault switch.
    pub env: Vec<(String, String)>,
    /// Write the metaserver's log (stderr) to this file instead of the test's stderr.
    pub log_file: Option<PathBuf>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            workers_dir: bin_dir(),
            args: vec![],
            models: 1,
            copy_models: vec![],
            env: vec![],
            log_file: None,
        }
    }
}

impl ServerOpts {
    /// The default set-up with its sessions in `store` (outside any one server's temporary
    /// directory, so a second server can take them over), plus these metaserver flags.
    pub fn on_store(store: &Path, args: &[&str]) -> ServerOpts {
        let mut all = vec!["--store".to_owned(), store.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        ServerOpts {
            args: all,
            ..Default::default()
        }
    }

    /// Only the shipped default model (`models/hamlet-default.onnx`), plus these metaserver flags.
    pub fn default_model(args: &[&str]) -> ServerOpts {
        ServerOpts {
            models: 0,
            copy_models: vec![root().join("models/hamlet-default.onnx")],
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(ServerOpts::default())
    }

    pub fn start_with(o: ServerOpts) -> Server {
        let dir = temp_dir("srv");
        let models = dir.join("models");
        std::fs::create_dir_all(&models).unwrap();
        for i in 0..o.models {
            make_model(&models, &format!("test{i}.onnx"), i as u64);
        }
        for m in &o.copy_models {
            std::fs::copy(m, models.join(m.file_name().unwrap())).unwrap();
        }
        let mut cmd = Command::new(bin_dir().join("metaserver"));
        let given = |flag: &str| o.args.iter().any(|a| a == flag);
        cmd.args(if given("--host") {
            vec![]
        } else {
            vec!["--host", "127.0.0.1"]
        })
        .args(if given("--port") {
            vec![]
        } else {
            vec!["--port", "0"]
        })
        .arg("--workers-dir")
        .arg(&o.workers_dir)
        .arg("--models-dir")
        .arg(&models)
        .arg("--ort-lib")
        .arg(ort_lib())
        .args(if o.args.iter().any(|a| a == "--store") {
            vec![]
        } else {
            vec!["--store".into(), dir.join("state")]
        })
        .args(&o.args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(o.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(match &o.log_file {
            Some(f) => Stdio::from(std::fs::File::create(f).expect("log file")),
            None => Stdio::inherit(),
        });
        // If the test process dies without dropping us, the server (and so its workers) follows.
        // Linux ties this signal to the *thread* that started the child: start servers from a
        // thread that outlives them (a test's own thread or a runtime worker, never a
        // `spawn_blocking` thread, which exits when idle and would take the server with it).
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().expect("start metaserver");
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("metaserver listening on http://") {
                        // A wildcard bind is reached through loopback.
                        break a.trim().replace("0.0.0.0", "127.0.0.1");
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("metaserver exited before listening");
                }
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            addr,
            models,
            dir,
            pid,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Opens inference sessions until `clients` holds `n`, 32 at a time, each playing at speed 10
    /// (the load of the scale bench and the profiling driver).
    pub async fn open_playing(&self, clients: &mut Vec<Ws>, n: usize) {
        while clients.len() < n {
            let k = (n - clients.len()).min(32);
            let new = futures_util::future::join_all((0..k).map(|_| async {
                let mut ws = Ws::connect(&self.url("/ws")).await.unwrap();
                ws.expect("state_update", Duration::from_secs(60)).await;
                ws.send(serde_json::json!({"command":"set_speed","speed":10}))
                    .await;
                ws.send(serde_json::json!({"command":"play"})).await;
                ws
            }))
            .await;
            clients.extend(new);
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path, &[])
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The value of the first `/metrics` line starting with `prefix` (0 if absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics");
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The `/api/status` row of one session.
    pub fn session(&self, id: &Value) -> Option<Value> {
        let st = self.get_json("/api/status");
        st["sessions"]
            .as_array()?
            .iter()
            .find(|x| x["id"] == *id)
            .cloned()
    }

    /// Live worker rows from `/api/workers`.
    pub fn workers(&self) -> Vec<Value> {
        self.get_json("/api/workers")["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `f` holds, polling (for states only observable from outside, like process lists).
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Server) -> bool) {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for: {what}");
    }

    /// Sends SIGTERM and waits for exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(c.id(), nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `KEY: VALUE kB` figure of `/proc/PID/FILE` (0 if the process is gone).
pub fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A process's resident set size in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

pub fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid) as f64 / 1024.0
}

pub fn signal(pid: u32, s: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s);
}

pub fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); read its state to tell.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')),
        Err(_) => false,
    }
}

/// An HTTP request to the server under test: (status, body). Redirects are not followed, so a
/// test sees them; error statuses are answers, not failures.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, _, body) = http_with_headers(addr, method, path, headers);
    (code, body)
}

/// [`http`], with the answer's headers (names lower-case).
pub fn http_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let mut resp = match method {
        "GET" => headers
            .iter()
            .fold(agent.get(&url), |r, (k, v)| r.header(*k, *v))
            .call(),
        "POST" => headers
            .iter()
            .fold(agent.post(&url), |r, (k, v)| r.header(*k, *v))
            .send_empty(),
        other => panic!("http(): no {other} in these tests"),
    }
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let code = resp.status().as_u16();
    let answer_headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (code, answer_headers, body)
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client that records every JSON frame it receives.
pub struct Ws {
    pub ws: WsStream,
    pub seen: Vec<Value>,
    pub closed: Option<(u16, String)>,
    /// A `connected` arrived (for readers that clear `seen` as they go).
    pub connected_seen: bool,
}

impl Ws {
    pub async fn connect(url: &str) -> Result<Ws> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("ws connect")?;
        Ok(Ws {
            ws,
            seen: vec![],
            closed: None,
            connected_seen: false,
        })
    }

    /// Drops the TCP connection without a WebSocket close frame (Wi-Fi off, a laptop asleep).
    pub fn drop_connection(self) {
        use std::os::fd::AsRawFd;
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            let _ = nix::sys::socket::shutdown(tcp.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_owned().into()))
            .await
            .expect("ws send");
    }

    /// Next JSON frame (recorded in `seen`), or error on timeout/close.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value> {
        let t = self.next_text(timeout).await?;
        let v: Value = serde_json::from_str(&t)?;
        self.seen.push(v.clone());
        Ok(v)
    }

    /// Next text frame unparsed and unrecorded (a light load generator: the bench counts frames
    /// by their leading `{"type":"…"` — serde writes the tag first — without parsing them), or
    /// error on timeout/close (a close frame's code lands in `closed`).
    pub async fn next_text(&mut self, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("timeout after {timeout:?}"))?;
            match m {
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Close(f))) => {
                    let f = f
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    self.closed = Some(f.clone());
                    bail!("closed: {f:?}");
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("ws error: {e}"),
                None => bail!("stream ended"),
            }
        }
    }

    /// Waits for a frame of `type` (other frames are recorded and skipped).
    pub async fn expect(&mut self, ty: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(v) if v["type"] == ty => return v,
                Ok(_) => continue,
                Err(e) => panic!(
                    "waiting for `{ty}`: {e}; last frames: {:?}",
                    self.seen.iter().rev().take(3).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for a frame satisfying `f`.
    pub async fn expect_where(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(v) if f(&v) => return v,
                Ok(_) => continue,
                Err(e) => panic!(
                    "waiting for {what}: {e}; last frames: {:?}",
                    self.seen.iter().rev().take(3).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_close(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(_) => continue,
                Err(e) => {
                    return self
                        .closed
                        .as_ref()
                        .map(|c| c.0)
                        .unwrap_or_else(|| panic!("no close frame: {e}"));
                }
            }
        }
    }
}

pub const T: Duration = Duration::from_secs(15);

/// A worker driven directly by a test or the bench, with no metaserver in between: started as the
/// supervisor starts one (`metaserver::workers::process::ChildProcess`: own process group, parent-death
/// signal, stderr piped and reaped), authenticated with a one-time token, `Ready`. `In` is what the
/// worker sends, `Out` what it is sent: an inference worker by default
/// ([`DirectWorker::spawn`]), a training worker with [`DirectWorker::spawn_training`].
pub struct DirectWorker<
    In = ipc_proto::inference::FromInference,
    Out = ipc_proto::inference::ToInference,
> {
    pub process: metaserver::workers::process::ChildProcess,
    pub conn: ipc_proto::transport::Connection<In, Out>,
    dir: PathBuf,
}

impl DirectWorker {
    /// An inference worker serving `models`.
    pub async fn spawn(models: &Path) -> DirectWorker {
        use ipc_proto::inference::FromInference;
        let mut w = Self::start("worker-inference", ipc_proto::WorkerKind::Inference, models).await;
        assert_eq!(w.recv().await, FromInference::Ready);
        w
    }
}

impl DirectWorker<ipc_proto::training::FromTraining, ipc_proto::training::ToTraining> {
    /// A training worker saving its models in `models`.
    pub async fn spawn_training(models: &Path) -> Self {
        use ipc_proto::training::FromTraining;
        let mut w = Self::start("worker-training", ipc_proto::WorkerKind::Training, models).await;
        assert_eq!(w.recv().await, FromTraining::Ready);
        w
    }
}

impl<In, Out> DirectWorker<In, Out>
where
    In: serde::de::DeserializeOwned,
    Out: serde::Serialize,
{
    async fn start(binary: &str, kind: ipc_proto::WorkerKind, models: &Path) -> Self {
        let dir = temp_dir("direct-worker");
        let sock = dir.join("w.sock");
        let listener = ipc_proto::transport::bind(&sock).unwrap();
        let token = format!("direct-{}", rand_suffix());
        let mut cmd = tokio::process::Command::new(bin_dir().join(binary));
        cmd.env(ipc_proto::ENV_SOCKET, &sock)
            .env(ipc_proto::ENV_TOKEN, &token)
            .env(ipc_proto::ENV_ORT_LIB, ort_lib())
            .env(ipc_proto::ENV_MODELS_DIR, models)
            .env(ipc_proto::ENV_CHECKPOINT_DIR, &dir);
        let process = metaserver::workers::process::ChildProcess::start(cmd, "direct").unwrap();
        let (conn, _) = ipc_proto::transport::accept_worker(
            &listener,
            kind,
            &token,
            ipc_proto::DEFAULT_MAX_FRAME,
            T,
        )
        .await
        .unwrap();
        DirectWorker { process, conn, dir }
    }

    pub async fn send(&mut self, m: Out) {
        self.conn.send(m).await.expect("send to worker");
    }

    pub async fn recv(&mut self) -> In {
        ipc_proto::transport::recv(&mut self.conn)
            .await
            .expect("frame from worker")
    }

    /// `kill -9`, and waits until it is reaped.
    pub async fn kill9(mut self) -> metaserver::workers::process::ExitInfo {
        self.process.kill();
        self.process.wait_exit().await
    }
}

impl<In, Out> Drop for DirectWorker<In, Out> {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
pub mod chaos_cluster;
pub mod cluster;
