//! End-to-end: steps computed ahead (issue 34; worker-inference's `ahead.rs`, the metaserver's
//! `session/pacer.rs`). At speed 10 a worker computes ten steps at a time and the metaserver
//! releases one per period; whatever the browser does, it acts on the step it last saw, never on
//! one computed ahead — pause then step, a probe, a speed change, a `kill -9` — and a session that
//! ran ahead goes exactly the way one stepped by hand goes; a stall of the server is counted and
//! loses no step. Real metaserver, real workers,
//! ε-greedy play so the random numbers must follow too.

use hamlet_tests::play::{drain_frames, essence, last_frame, open_session, step, worker_pid_of};
use hamlet_tests::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

/// Long enough that a frame still in flight has arrived (ten ticks at speed 10).
const QUIET: Duration = Duration::from_millis(400);

fn step_of(f: &Value) -> u64 {
    f["step"].as_u64().unwrap()
}

/// A session playing at speed 10 with exploration on; its `connected`.
async fn playing(s: &Server) -> (Ws, Value) {
    let (mut ws, c) = open_session(s, "").await;
    ws.expect("state_update", T).await;
    ws.send(json!({"command":"set_epsilon","epsilon":0.3}))
        .await;
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    (ws, c)
}

/// Every frame the browser got of `frame`'s episode is the step after the one before it: none
/// skipped or repeated around `what`.
fn assert_consecutive(ws: &Ws, frame: &Value, what: &str) {
    let frames: Vec<&Value> = ws
        .seen
        .iter()
        .filter(|v| v["type"] == "state_update" && v["episode"] == frame["episode"])
        .collect();
    for pair in frames.windows(2) {
        assert_eq!(
            step_of(pair[1]),
            step_of(pair[0]) + 1,
            "consecutive frames around {what}"
        );
    }
}

async fn until_step(ws: &mut Ws, n: u64) -> Value {
    ws.expect_where(&format!("step {n}"), T, |v| {
        v["type"] == "state_update" && v["step"].as_u64().is_some_and(|s| s >= n)
    })
    .await
}

/// Pauses; returns the last frame the browser got and the session's status right after the pause.
/// No frame comes after that status: the pause took effect at once, steps computed ahead and
/// not yet shown were never shown.
async fn pause(ws: &mut Ws) -> (Value, Value) {
    ws.send(json!({"command":"pause"})).await;
    ws.send(json!({"command":"status"})).await;
    let status = ws.expect("session_status", T).await;
    let seen = last_frame(ws).clone();
    let after = drain_frames(ws, QUIET).await;
    assert!(after.is_empty(), "frames after the pause: {after:?}");
    (seen, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_then_step_continues_from_the_frame_the_browser_saw() {
    let s = Server::start();
    let (mut ws, _) = playing(&s).await;
    until_step(&mut ws, 25).await;
    for round in 0..3 {
        let (seen, status) = pause(&mut ws).await;
        assert_eq!(status["step"], seen["step"], "round {round}: {status}");
        let next = step(&mut ws, 1).await.remove(0);
        assert_eq!(
            (next["episode"].clone(), step_of(&next)),
            (seen["episode"].clone(), step_of(&seen) + 1),
            "round {round}: the step after the last frame seen"
        );
        // A probe while playing sees the frame just sent, not one computed ahead of it.
        ws.send(json!({"command":"play"})).await;
        until_step(&mut ws, step_of(&next) + 12).await;
        ws.send(json!({"command":"probe"})).await;
        let probed = ws.expect("probe_result", T).await;
        let last = last_frame(&ws);
        let meters = last["agent_meters"].as_object().unwrap().values().next();
        assert_eq!(
            Some(&probed["meters"]),
            meters.map(|m| &m["meters"]),
            "round {round}: a probe evaluates the last frame sent ({})",
            last["step"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_9_the_session_goes_on_from_the_frame_the_browser_saw() {
    let s = Server::start();
    let (mut ws, c) = playing(&s).await;
    until_step(&mut ws, 15).await;
    // Killed while playing: the frames go on from the last one seen, none skipped or repeated.
    signal(worker_pid_of(&s, &c["session_id"]), Signal::SIGKILL);
    ws.expect("worker_restarted", T).await;
    let first = until_step(&mut ws, 0).await;
    assert_consecutive(&ws, &first, "the kill");
    // Paused, then killed: the replacement starts at the frame seen, and a step is the next one.
    until_step(&mut ws, step_of(&first) + 15).await;
    let (seen, _) = pause(&mut ws).await;
    signal(worker_pid_of(&s, &c["session_id"]), Signal::SIGKILL);
    let r = ws.expect("worker_restarted", T).await;
    assert_eq!(r["resumed_step"], seen["step"], "{r}");
    let next = step(&mut ws, 1).await.remove(0);
    assert_eq!(step_of(&next), step_of(&seen) + 1);
    assert_eq!(next["episode"], seen["episode"]);
}

/// The metaserver stalled (SIGSTOP, 300 ms) while a session plays at speed 10: the session falls
/// behind its speed, `/metrics` counts it, and no step is lost or repeated across the stall (a
/// stall under `pacer.rs`'s 50 ms is made up instead: its unit tests).
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_server_counts_the_session_falling_behind_and_loses_no_step() {
    const FELL_BEHIND: &str = "hamlet_paced_steps_fell_behind_total";
    let s = Server::start();
    let (mut ws, _) = playing(&s).await;
    let from = until_step(&mut ws, 15).await;
    let before = s.metric(FELL_BEHIND);
    signal(s.pid, Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(s.pid, Signal::SIGCONT);
    until_step(&mut ws, step_of(&from) + 30).await;
    assert!(
        s.metric(FELL_BEHIND) > before,
        "a 300 ms stall was not counted"
    );
    assert_consecutive(&ws, &from, "the stall");
}

/// What two runs of the same trajectory share, with the action and whether it explored.
fn trajectory(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| json!([essence(f), f["action"], f["explored"]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_ran_ahead_goes_the_way_one_stepped_by_hand_goes() {
    let s = Server::start();
    let (mut ahead, c) = open_session(&s, "").await;
    ahead.expect("state_update", T).await;
    ahead
        .send(json!({"command":"set_epsilon","epsilon":0.3}))
        .await;
    // The same session twice from step 0: the fork carries the random numbers along.
    ahead.send(json!({"command":"status"})).await;
    ahead.expect("session_status", T).await;
    let watch = c["watch_token"].as_str().unwrap();
    let (mut by_hand, _) = open_session(&s, &format!("?fork={watch}")).await;
    by_hand.expect("state_update", T).await;
    // Played at speed 10, with what makes steps computed ahead be taken back on the way: probes,
    // speed changes, and a change of ε, which changes the trajectory from the step it meets.
    ahead.send(json!({"command":"set_speed","speed":10})).await;
    ahead.seen.clear();
    ahead.send(json!({"command":"play"})).await;
    for (i, at) in [20u64, 35, 50, 70].into_iter().enumerate() {
        until_step(&mut ahead, at).await;
        let command = match i {
            1 => json!({"command":"set_epsilon","epsilon":0.9}),
            2 => json!({"command":"set_speed","speed":9}),
            3 => json!({"command":"set_speed","speed":10}),
            _ => json!({"command":"probe"}),
        };
        ahead.send(command).await;
    }
    until_step(&mut ahead, 90).await;
    pause(&mut ahead).await;
    // The frames before the answer to the change of ε were played with 0.3, the rest with 0.9.
    let changed = ahead
        .seen
        .iter()
        .position(|v| v["type"] == "settings" && v["epsilon"] == 0.9)
        .expect("the change of ε answered");
    let frames = |seen: &[Value]| -> Vec<Value> {
        let update = |v: &&Value| v["type"] == "state_update";
        seen.iter().filter(update).cloned().collect()
    };
    let (before, after) = (
        frames(&ahead.seen[..changed]),
        frames(&ahead.seen[changed..]),
    );
    assert!(
        before.len() >= 35 && after.len() >= 40,
        "{} + {} frames",
        before.len(),
        after.len()
    );
    let mut stepped = step(&mut by_hand, before.len()).await;
    by_hand
        .send(json!({"command":"set_epsilon","epsilon":0.9}))
        .await;
    stepped.extend(step(&mut by_hand, after.len()).await);
    let played = [before, after].concat();
    let explored = played.iter().filter(|f| f["explored"] == true).count();
    assert!(explored >= 30, "ε 0.3 then 0.9 explored {explored} times");
    assert_eq!(trajectory(&played), trajectory(&stepped));
}
