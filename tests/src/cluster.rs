//! A real local cluster for tests, the chaos run and the bench: `redis-server` and `haproxy` from
//! Debian's packages (`scripts/setup --tests` installs them), started on free loopback ports,
//! metaserver nodes on their own loopback addresses (127.0.0.2, 127.0.0.3, …), and a cuttable TCP
//! link for partitioning one node from Redis. Every child is stopped when its value is dropped.

use crate::{free_port, root, temp_dir, Server, ServerOpts};
use parking_lot::Mutex;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until something accepts TCP connections on `addr`.
fn wait_listening(addr: &str, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` on a free loopback port, with no persistence (a restart starts empty).
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// `requirepass`, if the server demands one.
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with_password(None)
    }

    /// A server that demands `password` (`requirepass`) when given one.
    pub fn start_with_password(password: Option<&str>) -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: temp_dir("redis"),
            password: password.map(str::to_owned),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/setup --tests installs it)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while self.try_cmd(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A `SIGKILL`: everything in it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// One command through `redis-cli` (raw output, one value per line).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// `HSET key field <the bytes of file>` (binary-safe, through `redis-cli -x`).
    pub fn hset_file(&self, key: &str, field: &str, file: &std::path::Path) {
        let mut cmd = Command::new("redis-cli");
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let ok = cmd
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-x"])
            .args(["HSET", key, field])
            .stdin(std::fs::File::open(file).expect("the file to store"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "redis-cli -x HSET {key} {field} failed");
    }

    fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("redis-cli");
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `haproxy` with the shipped `deploy/haproxy/haproxy.cfg` and one `server` line per node.
pub struct Haproxy {
    pub addr: String,
    child: Child,
    dir: PathBuf,
}

impl Haproxy {
    pub fn start(nodes: &[&Server]) -> Haproxy {
        let dir = temp_dir("haproxy");
        let mut cfg = std::fs::read_to_string(root().join("deploy/haproxy/haproxy.cfg"))
            .expect("deploy/haproxy/haproxy.cfg");
        for (i, n) in nodes.iter().enumerate() {
            cfg.push_str(&format!("    server node{} {} check\n", i + 1, n.addr));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .env("HAMLET_LB_BIND", &addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy (scripts/setup --tests installs it)");
        wait_listening(&addr, "haproxy");
        Haproxy { addr, child, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options for node `i` (1-based) of a cluster on `store` (a Redis URL): its own loopback
/// address, `--node-id node{i}`, only the shipped default model, plus `args`.
pub fn node_opts(store: &str, i: usize, args: &[&str]) -> ServerOpts {
    let mut all: Vec<String> = [
        "--store",
        store,
        "--host",
        &format!("127.0.0.{}", i + 1),
        "--node-id",
        &format!("node{i}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|a| a.to_string()));
    ServerOpts {
        models: 0,
        copy_models: vec![root().join("models/hamlet-default.onnx")],
        args: all,
        ..Default::default()
    }
}

/// Starts `n` nodes on `redis` and waits until each sees all of them.
pub fn start_nodes(redis: &Redis, n: usize, args: &[&str]) -> Vec<Server> {
    let nodes: Vec<Server> = (1..=n)
        .map(|i| Server::start_with(node_opts(&redis.url(), i, args)))
        .collect();
    for s in &nodes {
        s.wait_for("every node's heartbeat", Duration::from_secs(10), |s| {
            s.get_json("/api/status")["cluster"]["nodes"]
                .as_array()
                .is_some_and(|a| a.len() == n)
        });
    }
    nodes
}

/// A TCP forwarder that can be cut: a node talks to Redis through it, and the test takes the
/// link away (every connection closed, new ones refused) and gives it back — a network
/// partition between one node and Redis, while browsers still reach the node.
pub struct CutLink {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl CutLink {
    pub fn to(target_port: u16) -> CutLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, conns, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, k, s) = (cut.clone(), conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                k.lock()
                    .extend([inbound.try_clone().unwrap(), outbound.try_clone().unwrap()]);
                pump(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pump(outbound, inbound);
            }
        });
        CutLink {
            port,
            cut,
            conns,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The partition: every connection through the link is closed, new ones are refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// The log lines of a node started with `log_file` that contain `needle`.
pub fn log_lines(path: &std::path::Path, needle: &str) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// How many frames a resumed session went back: the resumed frame must be one the browser saw
/// (or a step or three after the last it saw: in flight when its node died). `seen` holds the
/// (episode, step) of every `state_update` it got. `Err` when the resumed frame was never seen.
pub fn rewind(seen: &[(u64, u64)], resumed: (u64, u64)) -> Result<usize, String> {
    let Some(last) = seen.last().copied() else {
        return Ok(0);
    };
    if let Some(i) = seen.iter().rposition(|p| *p == resumed) {
        return Ok(seen.len() - 1 - i);
    }
    if resumed.0 == last.0 && resumed.1 > last.1 && resumed.1 <= last.1 + 3 {
        return Ok(0);
    }
    Err(format!(
        "resumed at {resumed:?}, a frame never seen (last seen {last:?})"
    ))
}

/// Does `next` follow `prev` (the next step, or the start of the next episode)?
pub fn follows(prev: (u64, u64), next: (u64, u64)) -> bool {
    (next.0 == prev.0 && next.1 == prev.1 + 1) || (next.0 == prev.0 + 1 && next.1 <= 1)
}
