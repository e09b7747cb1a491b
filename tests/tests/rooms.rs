//! End-to-end: training rooms (rooms.md, issue 33's first part) — every group its own run in its
//! own `worker-training` process, `/ws/training` without a room being the class's run as before.

use hamlet_tests::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

async fn viewer(s: &Server, room: &str) -> Ws {
    let mut v = Ws::connect(&s.url(&format!("/ws/training?room={room}")))
        .await
        .unwrap();
    assert_eq!(v.expect("training_status", T).await["is_training"], false);
    v
}

fn room(s: &Server, name: &str) -> Value {
    let rooms = s.get_json("/api/rooms");
    rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A server whose pool runs `runs` trainings at once (the default is the machine's cores).
fn pool_of(runs: u32) -> Server {
    Server::start_with(ServerOpts {
        args: vec!["--max-training-runs".into(), runs.to_string()],
        ..Default::default()
    })
}

fn start(episodes: u32, seed: u32, name: &str) -> Value {
    json!({"command":"start_training","num_episodes":episodes,"max_steps":50,"batch_size":8,
           "step_delay":0,"show_every":1000,"seed":seed,"model_name":name,"checkpoint_every":2})
}

#[tokio::test(flavor = "multi_thread")]
async fn two_rooms_train_at_once_each_with_its_own_run_history_and_model() {
    let s = pool_of(3);
    let mut class = Ws::connect(&s.url("/ws/training")).await.unwrap();
    class.expect("training_status", T).await;
    let (mut red, mut blue) = (viewer(&s, "red").await, viewer(&s, "blue").await);
    red.send(start(30, 1, "red-run")).await;
    blue.send(start(20, 2, "blue-run")).await;
    assert_eq!(red.expect("training_started", T).await["num_episodes"], 30);
    assert_eq!(blue.expect("training_started", T).await["num_episodes"], 20);
    // Two runs at once, in two processes.
    s.wait_for("two training workers", T, |s| {
        let pid = |r: &str| room(s, r)["worker_pid"].as_u64();
        matches!((pid("red"), pid("blue")), (Some(a), Some(b)) if a != b)
    });
    let done = red.expect("training_complete", LONG).await;
    assert_eq!(done["model_saved"], "red-run.onnx");
    let done = blue.expect("training_complete", LONG).await;
    assert_eq!(done["model_saved"], "blue-run.onnx");
    // Each viewer saw its own room's run only; the class saw none.
    let episodes = |v: &Ws| {
        v.seen
            .iter()
            .filter(|m| m["type"] == "episode_complete")
            .count()
    };
    assert_eq!((episodes(&red), episodes(&blue)), (30, 20));
    // Every message says its room.
    for (v, name) in [(&red, "red"), (&blue, "blue"), (&class, "class")] {
        let stray: Vec<&Value> = v.seen.iter().filter(|m| m["room"] != name).collect();
        assert!(stray.is_empty(), "{name}'s viewer got: {stray:?}");
    }
    assert!(
        class.next(Duration::from_millis(300)).await.is_err(),
        "the class room heard another room's run: {:?}",
        class.seen
    );
    let history = |q: &str| s.get_json(&format!("/api/training/history{q}"))["episodes"].clone();
    assert_eq!(history("?room=red").as_array().unwrap().len(), 30);
    assert_eq!(history("?room=blue").as_array().unwrap().len(), 20);
    assert_eq!(
        history("").as_array().unwrap().len(),
        0,
        "the class's history"
    );
    assert_eq!(room(&s, "red")["episodes_completed"], 30);
    assert_eq!(room(&s, "blue")["episodes_completed"], 20);
    // The board's view of each room: its state and its run, labelled by what differs from the
    // defaults (the seed and the model's name are not learning settings).
    let red_room = room(&s, "red");
    assert_eq!(red_room["state"], "complete");
    assert_eq!(red_room["run"]["episodes"], 30);
    assert_eq!(
        red_room["run"]["differences"],
        json!({"num_episodes": 30, "max_steps": 50, "batch_size": 8})
    );
    let evals: Vec<u64> = red_room["run"]["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["episode"].as_u64().unwrap())
        .collect();
    assert_eq!(
        evals,
        [10, 20, 30],
        "one greedy evaluation every 10 episodes"
    );
    assert_eq!(room(&s, "class")["state"], "idle");
    assert!(room(&s, "class")["run"].is_null());
    // Finished runs, for the board: room, outcome, model, seed, best and curve.
    let runs = s.get_json("/api/runs");
    assert_eq!(runs["count"], 2, "{runs}");
    for (name, episodes, seed) in [("red", 30, 1), ("blue", 20, 2)] {
        let r = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room"] == name)
            .unwrap_or_else(|| panic!("no finished run of {name}: {runs}"));
        assert_eq!(r["outcome"], "completed");
        assert_eq!(r["episodes"], episodes);
        assert_eq!(r["seed"], seed);
        assert_eq!(r["model_saved"], format!("{name}-run.onnx"));
        assert!(r["best"]["steps"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["curve"].as_array().unwrap().len(), episodes / 10);
    }
    assert_eq!(s.get_json("/api/rooms")["rooms"][0]["room"], "class");
    // A room's unnamed model is named after the room.
    let mut green = viewer(&s, "green").await;
    green
        .send(json!({"command":"start_training","num_episodes":3,"max_steps":20,"batch_size":8,"seed":3}))
        .await;
    let saved = green.expect("training_complete", LONG).await["model_saved"].clone();
    assert!(
        saved
            .as_str()
            .unwrap()
            .starts_with("green-dqn-qnetwork-s3-"),
        "{saved}"
    );
    // Both models are offered to every session.
    let models = s.get_json("/api/models")["models"].clone();
    for m in ["red-run.onnx", "blue-run.onnx"] {
        assert!(
            models.as_array().unwrap().iter().any(|n| n == m),
            "{models}"
        );
    }
}

/// The last episode a viewer has seen completed.
fn last_episode(v: &Ws) -> u64 {
    v.seen
        .iter()
        .filter(|m| m["type"] == "episode_complete")
        .filter_map(|m| m["episode"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Three rooms train at once (a pool of three), a fourth waits with its place; `kill -9` of one
/// room's worker resumes that room from its checkpoint while the other two never notice — their
/// episodes keep coming through the crash, and no `training_restarted` reaches them; when a run
/// ends, the fourth starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_in_one_room_is_that_rooms_alone() {
    let s = pool_of(3);
    let mut rooms = Vec::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let mut v = viewer(&s, name).await;
        v.send(start(100_000, i as u32 + 1, &format!("{name}-run")))
            .await;
        v.expect("training_started", T).await;
        rooms.push(v);
    }
    let mut d = viewer(&s, "d").await;
    d.send(start(100_000, 4, "d-run")).await;
    assert_eq!(d.expect("queued", T).await["position"], 1);
    let [mut a, mut b, mut c] = <[Ws; 3]>::try_from(rooms).ok().unwrap();
    a.expect_where("episode 3", LONG, |m| {
        m["type"] == "episode_complete" && m["episode"].as_u64() >= Some(3)
    })
    .await;
    for v in [&mut b, &mut c] {
        v.expect("episode_complete", LONG).await;
    }
    let before = (last_episode(&b), last_episode(&c));
    let pid = room(&s, "a")["worker_pid"].as_u64().unwrap() as u32;
    signal(pid, Signal::SIGKILL);
    let back = a.expect("training_restarted", LONG).await;
    assert!(
        back["resumed_from_episode"].as_u64().unwrap() >= 2,
        "{back}"
    );
    a.expect("episode_complete", LONG).await;
    // Rooms b and c went on through a's crash and restart, and were told of no restart.
    for v in [&mut b, &mut c] {
        v.expect("episode_complete", LONG).await;
    }
    let after = (last_episode(&b), last_episode(&c));
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{before:?} → {after:?}"
    );
    for (v, name) in [(&b, "b"), (&c, "c")] {
        assert!(
            !v.seen.iter().any(|m| m["type"] == "training_restarted"),
            "room {name} heard room a's restart"
        );
        assert_eq!(room(&s, name)["restarts"], 0);
    }
    assert_eq!(room(&s, "a")["restarts"], 1);
    assert_eq!(room(&s, "d")["state"], "queued");
    // A slot frees: the fourth room's run starts.
    c.send(json!({"command":"stop"})).await;
    c.expect("training_complete", LONG).await;
    assert_eq!(d.expect("training_started", T).await["config"]["seed"], 4);
    for v in [&mut a, &mut b, &mut d] {
        v.send(json!({"command":"stop"})).await;
        v.expect("training_complete", LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_named_bounded_and_closed_when_idle() {
    let s = Server::start_with(ServerOpts {
        args: ["--max-rooms", "2", "--room-idle-secs", "1"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    // Names outside the rule, before any upgrade: 400, and no room is made.
    let long = "x".repeat(33);
    for bad in ["Red", "-x", "a/b", "%2e%2e", long.as_str(), ""] {
        let (code, _) = s.get(&format!("/api/training/history?room={bad}"));
        assert_eq!(code, 400, "{bad:?}");
        assert!(Ws::connect(&s.url(&format!("/ws/training?room={bad}")))
            .await
            .is_err());
    }
    assert_eq!(s.get("/api/training/history?room=nobody").0, 404);
    // Two rooms at most besides the class; a third is refused while they exist.
    let one = viewer(&s, "one").await;
    let two = viewer(&s, "two").await;
    assert!(Ws::connect(&s.url("/ws/training?room=three"))
        .await
        .is_err());
    assert_eq!(s.get_json("/api/rooms")["count"], 3);
    // Left empty and without a run, a room closes; its place is free again.
    drop(one);
    s.wait_for("room one to close", T, |s| room(s, "one").is_null());
    assert!(
        !room(&s, "two").is_null(),
        "a room with a viewer stays open"
    );
    viewer(&s, "three").await;
    drop(two);
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_beyond_the_pool_wait_in_a_queue_and_start_when_a_slot_frees() {
    let s = pool_of(1);
    let (mut a, mut b, mut c) = (
        viewer(&s, "a").await,
        viewer(&s, "b").await,
        viewer(&s, "c").await,
    );
    a.send(start(100_000, 1, "a-run")).await;
    a.expect("training_started", T).await;
    // The one slot is taken: b and c wait, told their places; never refused.
    b.send(start(100_000, 2, "b-run")).await;
    let q = b.expect("queued", T).await;
    assert_eq!(
        (q["room"].as_str(), q["position"].as_u64()),
        (Some("b"), Some(1))
    );
    c.send(start(100_000, 3, "c-run")).await;
    assert_eq!(c.expect("queued", T).await["position"], 2);
    assert_eq!(room(&s, "b")["queued"], 1);
    assert_eq!(room(&s, "c")["queued"], 2);
    assert_eq!(room(&s, "b")["is_training"], false);
    assert_eq!(
        (
            room(&s, "a")["state"].as_str(),
            room(&s, "b")["state"].as_str()
        ),
        (Some("training"), Some("queued"))
    );
    // c changes its mind, then queues again: at the back.
    c.send(json!({"command":"stop"})).await;
    c.expect("training_status", T).await;
    assert!(room(&s, "c")["queued"].is_null());
    c.send(start(100_000, 3, "c-run")).await;
    assert_eq!(c.expect("queued", T).await["position"], 2);
    // a's run ends: b starts, c moves up.
    a.send(json!({"command":"stop"})).await;
    a.expect("training_complete", LONG).await;
    assert_eq!(b.expect("training_started", T).await["config"]["seed"], 2);
    assert_eq!(c.expect("queued", T).await["position"], 1);
    b.expect("episode_complete", LONG).await;
    b.send(json!({"command":"stop"})).await;
    b.expect("training_complete", LONG).await;
    assert_eq!(c.expect("training_started", T).await["config"]["seed"], 3);
    c.send(json!({"command":"stop"})).await;
    c.expect("training_complete", LONG).await;
    // Three stopped runs, in the order they finished.
    let runs = s.get_json("/api/runs")["runs"].clone();
    let finished: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        finished,
        [("a", "stopped"), ("b", "stopped"), ("c", "stopped")]
    );
    // A board that polls asks only for the runs after the newest it holds.
    let first = runs[0]["id"].as_u64().unwrap();
    let later = s.get_json(&format!("/api/runs?after={first}"))["runs"].clone();
    let rooms: Vec<&str> = later
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["b", "c"]);
}

/// Plays `model` greedily from the fixed start in a fresh session for `steps` steps (or to the
/// episode's end); the actions it took.
async fn play(s: &Server, model: &str, steps: usize) -> Vec<Value> {
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("connected", T).await;
    let first = ws.expect("state_update", T).await;
    assert_eq!(first["step"], 0);
    ws.send(json!({"command":"load_model","model":model})).await;
    assert_eq!(ws.expect("model_loaded", T).await["model"], model);
    let mut actions = Vec::new();
    for _ in 0..steps {
        ws.send(json!({"command":"step"})).await;
        let f = ws.expect("state_update", T).await;
        actions.push(json!([f["action"], f["agents"]]));
        if f["done"] == true {
            break;
        }
    }
    actions
}

/// The time machine (rooms.md): a run keeps its first network and one every `snapshot_period`
/// episodes as loadable models, listed with its best; they are not offered as models; played
/// from the same start, the first and the last go different ways (and one snapshot played twice
/// goes the same way); only the newest `--max-snapshot-runs` runs keep their snapshots.
#[tokio::test(flavor = "multi_thread")]
async fn a_runs_snapshots_are_listed_loadable_and_play_their_own_way() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--max-snapshot-runs".into(), "1".into()],
        ..Default::default()
    });
    let mut v = viewer(&s, "tm").await;
    v.send(
        json!({"command":"start_training","num_episodes":40,"max_steps":120,"batch_size":16,
                  "step_delay":0,"show_every":1000,"seed":5,"model_name":"tm-run","eval_every":10}),
    )
    .await;
    v.expect("training_complete", LONG).await;
    let snaps = s.get_json("/api/rooms/tm/snapshots");
    let list = snaps["snapshots"].as_array().unwrap().clone();
    let got: Vec<(u64, &str)> = list
        .iter()
        .map(|s| (s["episode"].as_u64().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    let best_episode = got.last().unwrap().0;
    let mut want: Vec<(u64, &str)> = vec![(0, "first")];
    want.extend((1..=8).map(|k| (k * 5, "every")));
    want.push((best_episode, "best"));
    assert_eq!(
        got, want,
        "eight spread over 40 episodes, the first, the best"
    );
    assert_eq!(list.last().unwrap()["model"], "tm-run.onnx");
    let offered = s.get_json("/api/models")["models"].to_string();
    assert!(
        !offered.contains(".snap-e"),
        "snapshots offered as models: {offered}"
    );
    // Side by side from the same start: the untrained and the trained network differ.
    let model = |i: usize| list[i]["model"].as_str().unwrap().to_owned();
    let (first, last) = (model(0), model(8));
    let (a, b, c) = tokio::join!(
        play(&s, &first, 60),
        play(&s, &last, 60),
        play(&s, &last, 60)
    );
    assert_eq!(b, c, "one snapshot, one start: one trajectory");
    assert_ne!(a, b, "the first and the last snapshot went the same way");
    // A second run: with --max-snapshot-runs 1 the first run's snapshots are deleted.
    let mut w = viewer(&s, "tm2").await;
    w.send(
        json!({"command":"start_training","num_episodes":8,"max_steps":50,"batch_size":8,
                  "step_delay":0,"show_every":1000,"seed":6,"model_name":"tm2-run"}),
    )
    .await;
    w.expect("training_complete", LONG).await;
    s.wait_for("the first run's snapshots pruned", T, |s| {
        let l = s.get_json("/api/rooms/tm/snapshots")["snapshots"].clone();
        l.as_array().unwrap().len() == 1
    });
    assert_eq!(
        s.get_json("/api/rooms/tm2/snapshots")["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        10,
        "the newest run keeps its eight, its first and its best"
    );
    assert_eq!(s.get("/api/rooms/nobody/snapshots").0, 404);
    assert_eq!(s.get("/api/rooms/..%2F/snapshots").0, 400);
}

/// A room's run in progress when the server stops (SIGTERM) is kept beside the store and resumed
/// from its checkpoint by the next server, in its own room; a room without a run is not kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_rooms_run_survives_a_server_restart() {
    let store = temp_dir("room-restart").join("state");
    let mut s = Server::start_with(ServerOpts::on_store(&store, &[]));
    let mut red = viewer(&s, "red").await;
    let _blue = viewer(&s, "blue").await;
    red.send(
        json!({"command":"start_training","num_episodes":100000,"max_steps":60,"batch_size":8,
                    "step_delay":0,"show_every":1000,"checkpoint_every":1,"seed":6}),
    )
    .await;
    red.expect_where("episode 5", LONG, |v| {
        v["type"] == "episode_complete" && v["episode"] == 5
    })
    .await;
    let stopping = tokio::task::spawn_blocking(move || {
        let code = s.terminate();
        (code, s)
    });
    assert_eq!(red.expect_close(T).await, 1012);
    let (code, old) = stopping.await.unwrap();
    assert_eq!(code, Some(0));
    let s2 = Server::start_with(ServerOpts::on_store(&store, &[]));
    let rooms: Vec<String> = s2.get_json("/api/rooms")["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rooms, ["class", "red"], "only the room with a run is kept");
    let mut back = Ws::connect(&s2.url("/ws/training?room=red")).await.unwrap();
    let status = back.expect("training_status", T).await;
    let first = back
        .expect_where("the restart or an episode", LONG, |v| {
            v["type"] == "training_restarted" || v["type"] == "episode_complete"
        })
        .await;
    // The restart is announced to the viewers present. The run may have resumed before this
    // viewer connected (the server reopens the room as it starts); then its status says where
    // the run is, and the episodes go on from there — never from the first.
    let (from, next) = if first["type"] == "training_restarted" {
        assert_eq!(first["reason"], "server restarted");
        let from = first["resumed_from_episode"].as_u64().unwrap();
        (from, back.expect("episode_complete", LONG).await)
    } else {
        let (running, episode) = (
            status["current_episode"].as_u64(),
            first["episode"].as_u64(),
        );
        let episode = episode.unwrap();
        assert!(episode >= running.unwrap(), "{status} then {first}");
        (episode - 1, first)
    };
    assert!(from >= 5, "resumed after episode {from}");
    assert_eq!(
        (next["episode"].as_u64().unwrap(), next["room"].as_str()),
        (from + 1, Some("red"))
    );
    assert_eq!(room(&s2, "red")["state"], "training");
    assert_eq!(room(&s2, "class")["is_training"], false);
    drop((back, s2, old));
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}
