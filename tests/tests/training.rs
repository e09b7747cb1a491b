//! End-to-end: the shared training run with the real `worker-training` process.

use hamlet_tests::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn two_viewers_share_one_run_and_its_model_loads_in_a_session() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    let mut b = Ws::connect(&s.url("/ws/training")).await.unwrap();
    assert_eq!(a.expect("training_status", T).await["is_training"], false);
    b.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":100000,"max_steps":60,"batch_size":8,
                  "step_delay":0.05,"show_every":1,"seed":5,"model_name":"e2e-run"}),
    )
    .await;
    for v in [&mut a, &mut b] {
        let st = v.expect("training_started", T).await;
        assert_eq!(st["num_episodes"], 100000);
        assert_eq!(st["config"]["seed"], 5);
        assert_eq!(v.expect("episode_start", T).await["episode"], 1);
        let u = v.expect("state_update", T).await;
        assert!(
            u["heat_map"].as_object().is_some_and(|m| !m.is_empty()),
            "{u}"
        );
    }
    // A second start during the run: status plus an error, the run goes on.
    b.send(json!({"command":"start_training"})).await;
    assert_eq!(b.expect("training_status", T).await["is_training"], true);
    assert_eq!(b.expect("error", T).await["code"], "training_in_progress");
    // Pause and resume are broadcast to both.
    a.send(json!({"command":"pause"})).await;
    a.expect("paused", T).await;
    b.expect("paused", T).await;
    b.send(json!({"command":"status"})).await;
    assert_eq!(b.expect("training_status", T).await["paused"], true);
    b.send(json!({"command":"resume"})).await;
    a.expect("resumed", T).await;
    b.expect("resumed", T).await;
    // Stop early (after a complete episode): the model so far is saved and announced.
    a.expect("episode_complete", LONG).await;
    a.send(json!({"command":"stop"})).await;
    let done = a.expect("training_complete", LONG).await;
    assert_eq!(done["model_saved"], "e2e-run.onnx");
    assert_eq!(
        b.expect("training_complete", LONG).await["model_saved"],
        "e2e-run.onnx"
    );
    // Every completed episode was summarised, in order.
    let eps: Vec<u64> = a
        .seen
        .iter()
        .filter(|v| v["type"] == "episode_complete")
        .map(|v| v["episode"].as_u64().unwrap())
        .collect();
    assert!(!eps.is_empty());
    assert_eq!(eps, (1..=eps.len() as u64).collect::<Vec<_>>());
    // The model appears in the listing and a session can load it at once.
    assert!(s.get_json("/api/models")["models"]
        .as_array()
        .unwrap()
        .contains(&json!("e2e-run.onnx")));
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    ws.send(json!({"command":"load_model","model":"e2e-run.onnx"}))
        .await;
    assert_eq!(ws.expect("model_loaded", T).await["model"], "e2e-run.onnx");
    ws.send(json!({"command":"step"})).await;
    assert_eq!(ws.expect("state_update", T).await["step"], 1);
    // After the run, a new one may start.
    a.send(json!({"command":"start_training","num_episodes":1,"max_steps":5,"step_delay":0}))
        .await;
    a.expect("training_started", T).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_training_worker_resumes_from_the_checkpoint() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":400,"max_steps":40,"batch_size":8,
                  "step_delay":0,"show_every":1000,"checkpoint_every":2,"seed":9}),
    )
    .await;
    a.expect("training_started", T).await;
    a.expect_where("episode 6", LONG, |v| {
        v["type"] == "episode_complete" && v["episode"] == 6
    })
    .await;
    let pid = s.get_json("/api/status")["training"]["worker_pid"]
        .as_u64()
        .unwrap() as u32;
    signal(pid, Signal::SIGKILL);
    let r = a.expect("training_restarted", LONG).await;
    let from = r["resumed_from_episode"].as_u64().unwrap();
    // Checkpoints every 2 episodes: relative to the 6 episodes we saw, at most the episode in flight
    // and one checkpoint interval are lost (the worker may also have got further before dying).
    assert!(from >= 4, "resumed from {from}");
    assert!(r["reason"].as_str().unwrap().contains("signal 9"), "{r}");
    // Numbering continues after the checkpoint.
    let next = a.expect("episode_complete", LONG).await;
    assert_eq!(next["episode"].as_u64().unwrap(), from + 1);
    let st = s.get_json("/api/status");
    assert_eq!(st["training"]["is_training"], true);
    assert_ne!(st["training"]["worker_pid"].as_u64().unwrap() as u32, pid);
    assert!(!alive(pid));
    a.send(json!({"command":"stop"})).await;
    a.expect("training_complete", LONG).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_zero_viewers_completes_and_a_late_viewer_catches_up() {
    let s = Server::start();
    {
        let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
        a.expect("training_status", T).await;
        a.send(json!({"command":"start_training","num_episodes":12,"max_steps":30,"batch_size":8,"step_delay":0,"model_name":"nobody"})).await;
        a.expect("training_started", T).await;
    }
    s.wait_for("the unwatched run to complete", LONG, |s| {
        s.get_json("/api/status")["training"]["state"] == "completed"
    });
    assert!(s.get_json("/api/models")["models"]
        .as_array()
        .unwrap()
        .contains(&json!("nobody.onnx")));
    let mut late = Ws::connect(&s.url("/ws/training")).await.unwrap();
    let st = late.expect("training_status", T).await;
    assert_eq!(st["is_training"], false);
    assert_eq!(st["current_episode"], 12);
    assert_eq!(st["last_episode"]["episode"], 12);
    // Bad input on the training socket: errors, connection kept.
    late.send(json!({"command":"start_training","num_episodes":0}))
        .await;
    assert_eq!(late.expect("error", T).await["code"], "out_of_range");
    late.send(json!({"command":"pause"})).await;
    assert_eq!(late.expect("error", T).await["code"], "not_training");
    late.send(json!({"command":"status"})).await;
    late.expect("training_status", T).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inference_sessions_keep_playing_while_a_watched_run_trains() {
    let s = Server::start();
    let mut starter = Ws::connect(&s.url("/ws/training")).await.unwrap();
    starter.expect("training_status", T).await;
    let mut viewers = Vec::new();
    for _ in 0..5 {
        let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
        v.expect("training_status", T).await;
        viewers.push(v);
    }
    starter.send(json!({"command":"start_training","num_episodes":100000,"max_steps":200,"step_delay":0,"show_every":1})).await;
    starter.expect("training_started", T).await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        ws.expect("state_update", T).await;
        ws.send(json!({"command":"set_speed","speed":10})).await;
        ws.send(json!({"command":"play"})).await;
        sessions.push(ws);
    }
    // Both sessions make progress and every viewer keeps receiving the run, at the same time.
    for ws in sessions.iter_mut() {
        for _ in 0..100 {
            ws.expect("state_update", LONG).await;
        }
    }
    for v in viewers.iter_mut() {
        v.expect("episode_complete", LONG).await;
        v.expect("state_update", LONG).await;
    }
    assert_eq!(s.get_json("/api/status")["training"]["is_training"], true);
    starter.send(json!({"command":"stop"})).await;
    starter.expect("training_complete", LONG).await;
}

fn training_worker(s: &Server) -> (String, u32) {
    let t = &s.get_json("/api/status")["training"];
    let id = t["worker_id"]
        .as_str()
        .expect("a training worker")
        .to_owned();
    (id, t["worker_pid"].as_u64().unwrap() as u32)
}

/// design.md: an operator's graceful restart carries the run over — checkpoint, a new worker,
/// resume, `training_restarted` — and the run goes on to its last episode.
#[tokio::test(flavor = "multi_thread")]
async fn operator_restart_of_the_training_worker_carries_the_run_over() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":200,"max_steps":60,"batch_size":8,
                  "step_delay":0.005,"show_every":1,"checkpoint_every":1,"seed":3,
                  "pacing":"replay"}),
    )
    .await;
    a.expect("training_started", T).await;
    a.expect_where("episode 3", LONG, |v| {
        v["type"] == "episode_complete" && v["episode"] == 3
    })
    .await;
    // Paused, so the restart surely lands mid-run (an unpaced run is done within seconds).
    a.send(json!({"command":"pause"})).await;
    a.expect("paused", T).await;
    let (id, pid) = training_worker(&s);
    let (code, _) = http(&s.addr, "POST", &format!("/api/workers/{id}/restart"), &[]);
    assert_eq!(code, 202);
    let r = a.expect("training_restarted", LONG).await;
    assert_eq!(r["reason"], "restarted by an operator");
    let from = r["resumed_from_episode"].as_u64().unwrap();
    assert!(from >= 3, "resumed from {from}");
    assert!(
        a.seen.iter().all(|v| v["type"] != "training_complete"),
        "the run did not end: {:?}",
        a.seen.iter().rev().take(3).collect::<Vec<_>>()
    );
    a.send(json!({"command":"resume"})).await;
    let done = a.expect("training_complete", LONG).await;
    assert_eq!(done["stopped"], false, "{done}");
    let last = a
        .seen
        .iter()
        .filter(|v| v["type"] == "episode_complete")
        .map(|v| v["episode"].as_u64().unwrap())
        .max();
    assert_eq!(last, Some(200));
    assert!(!alive(pid));
    assert_ne!(training_worker(&s).1, pid);
    assert_eq!(
        s.metric("hamlet_worker_restarts_total{kind=\"training\",reason=\"operator\"}"),
        1.0
    );
}

/// A panic in the DQN thread ends the worker with an error (not a wedged run); the supervisor
/// resumes the run from its checkpoint and it completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_training_thread_is_a_crash_and_the_run_resumes() {
    let s = Server::start_with(ServerOpts {
        env: vec![("HAMLET_FAULT_PANIC_AT_EPISODE".into(), "4".into())],
        ..Default::default()
    });
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":8,"max_steps":40,"batch_size":8,
                  "step_delay":0,"show_every":1000,"checkpoint_every":1,"seed":2}),
    )
    .await;
    let r = a.expect("training_restarted", LONG).await;
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("exited with code") && reason.contains("panicked"),
        "{reason}"
    );
    assert_eq!(r["resumed_from_episode"], 3);
    let done = a.expect("training_complete", LONG).await;
    assert_eq!(done["stopped"], false);
    assert_eq!(s.get_json("/api/status")["training"]["state"], "completed");
}

/// A checkpoint that is corrupt on disk costs one checkpoint interval, not the run: the
/// replacement resumes from the one before it. A paused run stays paused across the replacement.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":100000,"max_steps":40,"batch_size":8,
                  "step_delay":0.002,"show_every":1,"checkpoint_every":1,"seed":4}),
    )
    .await;
    a.expect_where("episode 4", LONG, |v| {
        v["type"] == "episode_complete" && v["episode"] == 4
    })
    .await;
    a.send(json!({"command":"pause"})).await;
    a.expect("paused", T).await;
    // Paused: once the last finished episode's checkpoint is reported, nothing more is written.
    s.wait_for("the checkpoint of the last finished episode", T, |s| {
        let t = &s.get_json("/api/status")["training"];
        t["last_checkpoint_episode"].as_u64().is_some()
            && t["last_checkpoint_episode"] == t["episodes_completed"]
    });
    let done = s.get_json("/api/status")["training"]["last_checkpoint_episode"]
        .as_u64()
        .unwrap();
    let dir = s.models.join(".checkpoints");
    let ckpt = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .expect("a checkpoint file");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    signal(training_worker(&s).1, Signal::SIGKILL);
    let r = a.expect("training_restarted", LONG).await;
    assert_eq!(r["resumed_from_episode"].as_u64().unwrap(), done - 1);
    // Still paused: for most of a second (a dozen episodes' worth when running) nothing completes.
    assert_eq!(s.get_json("/api/status")["training"]["paused"], true);
    let quiet_until = std::time::Instant::now() + Duration::from_millis(1000);
    while let Ok(v) = a
        .next(quiet_until.saturating_duration_since(std::time::Instant::now()))
        .await
    {
        assert_ne!(v["type"], "episode_complete", "the paused run went on: {v}");
    }
    a.send(json!({"command":"resume"})).await;
    let next = a.expect("episode_complete", LONG).await;
    assert_eq!(next["episode"].as_u64().unwrap(), done);
    a.send(json!({"command":"stop"})).await;
    a.expect("training_complete", LONG).await;
}

/// Worker-level: a run started paused (how a paused run's replacement starts) completes no
/// episode until it is resumed. The pause is part of the start, so no episode can slip through
/// before it, as one could when the pause followed the start as a command of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_started_paused_waits_for_resume() {
    use ipc_proto::browser::ServerMessage;
    use ipc_proto::training::{FromTraining, RunControl, ToTraining, TrainingConfig};
    let models = temp_dir("paused-start");
    let mut w = DirectWorker::spawn_training(&models).await;
    let config = TrainingConfig {
        num_episodes: 100_000,
        max_steps: 40,
        batch_size: 8,
        seed: 4,
        ..TrainingConfig::default()
    };
    let config = Box::new(config);
    w.send(ToTraining::Start {
        config,
        paused: true,
    })
    .await;
    // A running run completes dozens of these 40-step episodes a second.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(1000);
    let mut said_paused = false;
    while let Ok(event) = tokio::time::timeout_at(quiet_until, w.recv()).await {
        match event {
            FromTraining::Message(ServerMessage::Paused {}) => said_paused = true,
            FromTraining::Message(ServerMessage::EpisodeComplete(e)) => {
                panic!("the paused run went on: episode {}", e.episode)
            }
            _ => {}
        }
    }
    assert!(said_paused, "the worker did not say the run is paused");
    w.send(ToTraining::Control(RunControl::Resume)).await;
    loop {
        let event = tokio::time::timeout(LONG, w.recv()).await;
        if let FromTraining::Message(ServerMessage::EpisodeComplete(e)) = event.expect("an episode")
        {
            assert_eq!(e.episode, 1, "the first episode after resume");
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&models);
}

/// Worker-level: `worker-training` checks a `Start` itself (whatever sent it — a metaserver of
/// another version, a node that read the configuration from Redis): a configuration outside the
/// limits ends the run at once as refused, naming the field, and the worker takes the next start.
#[tokio::test(flavor = "multi_thread")]
async fn the_training_worker_refuses_a_start_outside_the_limits() {
    use ipc_proto::training::{FromTraining, ToTraining, TrainingConfig};
    let models = temp_dir("refused-start");
    let mut w = DirectWorker::spawn_training(&models).await;
    let config = Box::new(TrainingConfig {
        batch_size: 1_000_000,
        ..TrainingConfig::default()
    });
    w.send(ToTraining::Start {
        config,
        paused: false,
    })
    .await;
    loop {
        match tokio::time::timeout(LONG, w.recv())
            .await
            .expect("an answer")
        {
            FromTraining::RunEnded {
                model_saved,
                failed,
            } => {
                assert_eq!(model_saved, None);
                let failed = failed.expect("a reason");
                assert!(failed.contains("batch_size"), "{failed}");
                break;
            }
            FromTraining::Message(ipc_proto::browser::ServerMessage::EpisodeComplete(e)) => {
                panic!("the refused run ran episode {}", e.episode)
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir_all(&models);
}

/// The one table of `start_training` fields: what it says is what the server accepts — a run
/// started with every field at the table's default has exactly those values in its config.
#[tokio::test(flavor = "multi_thread")]
async fn the_training_config_table_matches_what_start_training_accepts() {
    let s = Server::start();
    let fields = s.get_json("/api/training/config")["fields"]
        .as_array()
        .unwrap()
        .clone();
    let mut start = json!({"command":"start_training"});
    for f in &fields {
        let name = f["name"].as_str().unwrap();
        assert!(f["help"].as_str().is_some_and(|h| !h.is_empty()), "{f}");
        if !f["default"].is_null() {
            start[name] = f["default"].clone();
        }
        if let (Some(lo), Some(hi)) = (f["min"].as_f64(), f["max"].as_f64()) {
            assert!(lo <= hi, "{f}");
        }
    }
    assert_eq!(fields.len(), 24, "every start_training field: {fields:?}");
    start["num_episodes"] = json!(1);
    start["max_steps"] = json!(5);
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(start.clone()).await;
    let cfg = a.expect("training_started", T).await["config"].clone();
    for f in &fields {
        let name = f["name"].as_str().unwrap();
        if !start[name].is_null() {
            assert_eq!(cfg[name], start[name], "{name}");
        }
    }
    // One past a limit is refused with the field named.
    a.expect("training_complete", LONG).await;
    let mut over = start.clone();
    over["batch_size"] = json!(
        fields.iter().find(|f| f["name"] == "batch_size").unwrap()["max"]
            .as_f64()
            .unwrap()
            + 1.0
    );
    a.send(over).await;
    let e = a.expect("error", T).await;
    assert!(e["message"].as_str().unwrap().contains("batch_size"), "{e}");
    // A choice outside its list is refused with the field and the choices named.
    let mut bad = start.clone();
    bad["td_target"] = json!("triple");
    a.send(bad).await;
    let e = a.expect("error", T).await;
    let text = e["message"].as_str().unwrap();
    assert!(
        text.contains("td_target") && text.contains("`double`"),
        "{e}"
    );
}

/// Training ignores its audience (protocol.md): 100 viewers of a run that shows every step with no
/// delay each get every `episode_complete`, and at most `--viewer-fps` `state_update`s a second
/// (the newest wins) — never a backlog.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_viewers_get_every_episode_and_at_most_viewer_fps_frames() {
    let fps = 20.0;
    let s = Server::start_with(ServerOpts {
        args: vec![
            "--viewer-fps".into(),
            fps.to_string(),
            "--client-rate".into(),
            "1000".into(),
        ],
        ..Default::default()
    });
    let episodes = 40u64;
    let mut viewers = Vec::new();
    for _ in 0..100 {
        let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
        v.expect("training_status", T).await;
        viewers.push(v);
    }
    viewers[0]
        .send(json!({"command":"start_training","num_episodes":episodes,"max_steps":200,"batch_size":32,
                     "step_delay":0,"show_every":1,"seed":1}))
        .await;
    let t0 = std::time::Instant::now();
    let counts = futures_util::future::join_all(viewers.into_iter().map(|mut v| async move {
        let (mut frames, mut episodes_seen) = (0u64, Vec::new());
        loop {
            let m = v.next(LONG).await.unwrap();
            match m["type"].as_str() {
                Some("state_update") => frames += 1,
                Some("episode_complete") => episodes_seen.push(m["episode"].as_u64().unwrap()),
                Some("training_complete") => {
                    return (frames, episodes_seen, std::time::Instant::now())
                }
                _ => {}
            }
            v.seen.clear();
        }
    }))
    .await;
    for (frames, seen, done) in &counts {
        assert_eq!(
            seen,
            &(1..=episodes).collect::<Vec<_>>(),
            "every episode_complete, in order"
        );
        let secs = done.duration_since(t0).as_secs_f64();
        assert!(*frames >= 1, "frames are still shown");
        assert!(
            (*frames as f64) <= fps * secs + 2.0,
            "{frames} state_updates in {secs:.2} s: more than {fps}/s"
        );
    }
    let (frames, _, done) = &counts[0];
    eprintln!(
        "viewer 0: {frames} frames in {:.2} s",
        done.duration_since(t0).as_secs_f64()
    );
}

/// `pacing: replay` never slows learning (protocol.md): shown episodes are recorded and replayed
/// to viewers beside the run. A run whose every episode is shown at 0.1 s a step completes its 20
/// episodes before viewers have seen one episode's frames — paced in the run it would have needed
/// 20 episodes of them. Every replayed episode is a real training episode played whole, in order,
/// marked `replay` with the episode training has reached; the last replay ends before
/// `training_complete`.
#[tokio::test(flavor = "multi_thread")]
async fn replayed_episodes_play_whole_beside_a_run_that_never_waits() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":20,"max_steps":30,"batch_size":8,
               "step_delay":0.1,"show_every":1,"seed":8,"pacing":"replay"}),
    )
    .await;
    a.expect("training_complete", LONG).await;
    let seen = &a.seen;
    let kind = |i: usize| seen[i]["type"].as_str().unwrap_or("");
    let last_episode = seen
        .iter()
        .rposition(|v| v["type"] == "episode_complete")
        .unwrap();
    let frames_before: usize = (0..last_episode)
        .filter(|&i| kind(i) == "state_update")
        .count();
    assert!(
        frames_before < 30,
        "{frames_before} frames shown before the run's 20 episodes were done: it waited"
    );
    // Cut into replays: each starts with `episode_start` and plays its episode from step 1 on.
    let mut replays: Vec<(u64, Vec<u64>)> = Vec::new();
    for v in seen {
        match v["type"].as_str() {
            Some("episode_start") => {
                assert_eq!(v["replay"], true, "{v}");
                assert!(v["live_episode"].as_u64().is_some(), "{v}");
                replays.push((v["episode"].as_u64().unwrap(), Vec::new()));
            }
            Some("state_update") => {
                assert_eq!(v["replay"], true, "{v}");
                let (ep, steps) = replays.last_mut().expect("a frame after its episode_start");
                assert_eq!(v["episode"].as_u64(), Some(*ep), "{v}");
                steps.push(v["step"].as_u64().unwrap());
            }
            _ => {}
        }
    }
    assert!(replays.len() >= 2, "{replays:?}");
    for (ep, steps) in &replays {
        assert_eq!(
            steps,
            &(1..=steps.len() as u64).collect::<Vec<_>>(),
            "episode {ep} whole and in order"
        );
    }
    // The last replay played to its end (the episode's final step, a death or the cap) before
    // `training_complete`.
    let last_frame = seen
        .iter()
        .rev()
        .find(|v| v["type"] == "state_update")
        .unwrap();
    assert!(
        last_frame["done"] == true || last_frame["step"] == 30,
        "the last replay was cut: {last_frame}"
    );
    assert_eq!(seen.last().unwrap()["type"], "training_complete");
}

/// The original semantic is the default (protocol.md **Pacing**): every shown episode whole, in
/// order, one step per `step_delay`, the run waiting while it plays — a client written for the
/// original sees episodes 1, 6, 11 play out. 0.02 s a step is below `--viewer-fps`: no step is
/// skipped. (The viewers' own cap is raised, so the frames' spacing is the run's, not the cap's.)
#[tokio::test(flavor = "multi_thread")]
async fn shown_episodes_play_whole_in_order_while_the_run_waits() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--viewer-fps".into(), "200".into()],
        ..Default::default()
    });
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":12,"max_steps":60,"batch_size":8,
               "step_delay":0.02,"show_every":5,"seed":4}),
    )
    .await;
    let mut arrived = Vec::new();
    loop {
        let v = a.next(LONG).await.unwrap();
        arrived.push(std::time::Instant::now());
        if v["type"] == "training_complete" {
            break;
        }
    }
    let mut shown: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut lengths = std::collections::HashMap::new();
    let mut started_at = None;
    for (v, at) in a.seen.iter().zip(&arrived) {
        match v["type"].as_str() {
            Some("episode_start") => {
                assert!(v.get("replay").is_none(), "{v}");
                shown.push((v["episode"].as_u64().unwrap(), Vec::new()));
                started_at = Some(*at);
            }
            Some("state_update") => {
                let (ep, steps) = shown.last_mut().expect("after its episode_start");
                assert_eq!(v["episode"].as_u64(), Some(*ep), "{v}");
                steps.push(v["step"].as_u64().unwrap());
                assert!(
                    v["q_values"].as_array().is_some_and(|q| q.len() == 5),
                    "{v}"
                );
                assert!(v["agent_meters"]["agent_0"]["meters"]["energy"].is_number());
            }
            Some("episode_complete") => {
                let ep = v["episode"].as_u64().unwrap();
                let length = v["length"].as_u64().unwrap();
                lengths.insert(ep, length);
                if let (Some((last, steps)), Some(t0)) = (shown.last(), started_at) {
                    if *last == ep {
                        assert_eq!(steps.len() as u64, length, "episode {ep} shown whole first");
                        // The run waited while it played: one step per 0.02 s at least.
                        let took = at.duration_since(t0).as_secs_f64();
                        let least = 0.9 * 0.02 * (length - 1) as f64;
                        assert!(took >= least, "episode {ep}: {length} steps in {took:.2} s");
                    }
                }
            }
            _ => {}
        }
    }
    let episodes: Vec<u64> = shown.iter().map(|(e, _)| *e).collect();
    assert_eq!(episodes, [1, 6, 11]);
    for (ep, steps) in &shown {
        assert_eq!(
            steps,
            &(1..=lengths[ep]).collect::<Vec<_>>(),
            "episode {ep}"
        );
    }
}

/// A run in progress when the server stops (SIGTERM) resumes from its checkpoint when a server
/// starts again on the same store — unless `--no-resume-training` says not to.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_survives_a_server_restart_and_the_flag_turns_that_off() {
    for (flag, resumes) in [(None, true), (Some("--no-resume-training"), false)] {
        let store = temp_dir("train-restart").join("state");
        let opts = |extra: &[&str]| ServerOpts::on_store(&store, extra);
        let mut s = Server::start_with(opts(&[]));
        let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
        a.expect("training_status", T).await;
        a.send(json!({"command":"start_training","num_episodes":100000,"max_steps":60,
                      "batch_size":8,"step_delay":0,"show_every":1000,"checkpoint_every":1,"seed":6}))
            .await;
        a.expect_where("episode 5", LONG, |v| {
            v["type"] == "episode_complete" && v["episode"] == 5
        })
        .await;
        let stopping = tokio::task::spawn_blocking(move || {
            let code = s.terminate();
            (code, s)
        });
        assert_eq!(a.expect_close(T).await, 1012);
        let (code, old) = stopping.await.unwrap();
        assert_eq!(code, Some(0));
        let s2 = Server::start_with(opts(flag.as_slice()));
        let mut v = Ws::connect(&s2.url("/ws/training")).await.unwrap();
        let st = v.expect("training_status", T).await;
        if resumes {
            let r = v.expect("training_restarted", LONG).await;
            assert_eq!(r["reason"], "server restarted");
            let from = r["resumed_from_episode"].as_u64().unwrap();
            assert!(from >= 5, "{r}");
            let next = v.expect("episode_complete", LONG).await;
            assert_eq!(next["episode"].as_u64().unwrap(), from + 1);
            assert_eq!(s2.get_json("/api/status")["training"]["is_training"], true);
        } else {
            assert_eq!(st["is_training"], false, "{st}");
            assert_eq!(s2.get_json("/api/status")["training"]["is_training"], false);
        }
        drop(v);
        drop(s2);
        drop(old);
        let _ = std::fs::remove_dir_all(store.parent().unwrap());
    }
}
