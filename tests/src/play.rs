//! A `/ws` session as the end-to-end tests drive it: opened, stepped while paused, and the part of
//! a frame that two runs of the same trajectory must share.

use crate::{Server, Ws, T};
use serde_json::{json, Value};
use std::time::Duration;

/// Opens `/ws{query}` and waits for its `connected`.
pub async fn open_session(s: &Server, query: &str) -> (Ws, Value) {
    let mut ws = Ws::connect(&s.url(&format!("/ws{query}"))).await.unwrap();
    let c = ws.expect("connected", T).await;
    (ws, c)
}

/// Steps a paused session `n` times; the frames it got.
pub async fn step(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    for _ in 0..n {
        ws.send(json!({"command":"step"})).await;
        frames.push(ws.expect("state_update", T).await);
    }
    frames
}

/// What must be equal between two runs of the same trajectory.
pub fn essence(f: &Value) -> Value {
    json!([
        f["episode"],
        f["step"],
        f["agents"],
        f["agent_meters"],
        f["reward"],
        f["cumulative_reward"]
    ])
}

/// The pid of the worker that runs session `sid`.
pub fn worker_pid_of(s: &Server, sid: &Value) -> u32 {
    let ws = s.workers();
    let w = ws
        .iter()
        .find(|w| w["session"] == *sid)
        .unwrap_or_else(|| panic!("no worker for {sid}: {ws:?}"));
    w["pid"].as_u64().unwrap() as u32
}

/// The last `state_update` `ws` received.
pub fn last_frame(ws: &Ws) -> &Value {
    ws.seen
        .iter()
        .rev()
        .find(|v| v["type"] == "state_update")
        .expect("a state_update was received")
}

/// Reads until nothing has come for `quiet`; the `state_update`s read, in order.
pub async fn drain_frames(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(v) = ws.next(quiet).await {
        if v["type"] == "state_update" {
            frames.push(v);
        }
    }
    frames
}
