//! The worker process: handshake, ONNX Runtime start-up, then one session driven by messages from
//! the metaserver. Exits cleanly on `Shutdown`, on SIGTERM and when its socket closes; the
//! metaserver also sets a parent-death signal so it never outlives the metaserver.
//!
//! One loop owns the connection: it waits for a message (reading a frame is cancel-safe, so it can
//! sit in the `select!`), then writes what the session produced in one flush. The worker has no
//! clock: a playing session's steps are asked for by the metaserver, which paces them out
//! ([`crate::ahead`]).

use crate::ahead::Ahead;
use crate::policy::Runtime;
use crate::profile::StepProfile;
use crate::session::Session;
use futures_util::SinkExt;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::inference::{FromInference, ToInference};
use ipc_proto::transport::{self, Connection};
use ipc_proto::{WorkerEnv, WorkerKind};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, warn};

type Conn = Connection<ToInference, FromInference>;

/// Test hook: a fresh (not resumed) session's worker writes a frame that is not a valid message
/// once its episode reaches this step, so end-to-end tests can check that the metaserver treats a
/// protocol error as a crash at once. Unset in production.
pub const ENV_FAULT_BAD_FRAME_AT_STEP: &str = "HAMLET_FAULT_BAD_FRAME_AT_STEP";

/// Measurement knob for `scripts/bench` (issue 34): compute this many steps per batch instead of
/// [`crate::ahead::steps_ahead`]'s choice (1: one at a time). Unset in production.
pub const ENV_STEPS_AHEAD: &str = "HAMLET_STEPS_AHEAD";

/// Why the worker stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    SocketClosed,
    Signal,
}

/// The session, once the metaserver gave it, and its steps computed ahead.
struct Playback {
    session: Option<Session>,
    /// The session continues a predecessor's (started from a snapshot).
    resumed: bool,
    ahead: Ahead,
    profile: StepProfile,
}

pub async fn run(env: WorkerEnv) -> anyhow::Result<Exit> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut conn: Conn = transport::worker_handshake(
        &env.socket,
        WorkerKind::Inference,
        &env.token,
        DEFAULT_MAX_FRAME,
    )
    .await?;
    let rt: &'static Runtime = match Runtime::init(&env.ort_lib) {
        Ok(rt) => Box::leak(Box::new(rt)),
        Err(e) => {
            let reason = e.to_string();
            let _ = conn
                .send(FromInference::Fatal {
                    reason: reason.clone(),
                })
                .await;
            anyhow::bail!(reason);
        }
    };
    conn.send(FromInference::Ready).await?;
    debug!("ready");
    let mut p = Playback {
        session: None,
        resumed: false,
        ahead: Ahead::new(env_number(ENV_STEPS_AHEAD)),
        profile: StepProfile::from_env(),
    };
    let bad_frame_at: Option<u32> = env_number(ENV_FAULT_BAD_FRAME_AT_STEP);
    loop {
        p.profile.waiting();
        let events = tokio::select! {
            m = transport::recv(&mut conn) => match m {
                Err(_) => return Ok(Exit::SocketClosed),
                Ok(ToInference::Shutdown) => return Ok(Exit::Shutdown),
                Ok(m) => p.on_message(m, rt, &env),
            },
            _ = sigterm.recv() => return Ok(Exit::Signal),
        };
        for e in events {
            conn.feed(e).await?;
        }
        conn.flush().await?;
        p.profile.sent();
        let step = p.session.as_ref().map(Session::step);
        if bad_frame_at.is_some() && !p.resumed && step == bad_frame_at {
            // A header announcing 3 bytes, then bytes that are no MessagePack value.
            conn.get_mut()
                .write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1])
                .await?;
        }
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Playback {
    fn on_message(
        &mut self,
        m: ToInference,
        rt: &'static Runtime,
        env: &WorkerEnv,
    ) -> Vec<FromInference> {
        match m {
            ToInference::Ping { seq } => vec![FromInference::Pong { seq }],
            ToInference::Start(start) if self.session.is_none() => {
                info!(session = %start.session_id, resumed = start.snapshot.is_some(), "session started");
                self.resumed = start.snapshot.is_some();
                let (s, out) = Session::start(*start, rt, env.models_dir.clone());
                self.session = Some(s);
                out
            }
            ToInference::Start(_) => {
                warn!("second Start ignored");
                Vec::new()
            }
            // Tagged with the last take-back's epoch, which the request's is (the link keeps order).
            ToInference::Produce { released, .. } => match self.session.as_mut() {
                Some(s) => {
                    self.profile.woke();
                    let batch = self.ahead.produce(s, released);
                    self.profile.computed(batch.entries.len());
                    vec![FromInference::Ahead(Box::new(batch))]
                }
                None => Vec::new(),
            },
            ToInference::TakeBack { epoch, released } => {
                if let Some(s) = self.session.as_mut() {
                    self.ahead.take_back(s, epoch, released);
                }
                Vec::new()
            }
            ToInference::Command { seq, command } => match self.session.as_mut() {
                Some(s) => s.handle_numbered(seq, command),
                None => Vec::new(),
            },
            ToInference::Probe { id, probe } => match self.session.as_mut() {
                Some(s) => vec![FromInference::Probed {
                    id,
                    answer: s.probe(&probe),
                }],
                None => Vec::new(),
            },
            ToInference::Shutdown => Vec::new(), // handled by the loop
        }
    }
}
