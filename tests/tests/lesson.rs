//! End-to-end: what the lesson needs from the live training run (issue 30) — the best model is the
//! one saved and replays as evaluated, a run stops when it has learned, and the teacher can always
//! take the controls.

use hamlet_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn better(a: &Value, b: &Value) -> bool {
    let key = |v: &Value| (v["steps"].as_u64().unwrap(), v["return"].as_f64().unwrap());
    let (sa, ra) = key(a);
    let (sb, rb) = key(b);
    (sa, ra) > (sb, rb)
}

/// The saved model is the network with the best greedy evaluation (survival first, then return),
/// not the last; its metadata says what it achieved; an inference worker playing it greedily from
/// the fixed start reproduces that episode.
#[tokio::test(flavor = "multi_thread")]
async fn the_saved_model_is_the_best_evaluated_network_and_plays_as_evaluated() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":60,"max_steps":200,"batch_size":32,
                  "buffer_capacity":5000,"learning_rate":0.0005,"eval_every":3,"step_delay":0,
                  "show_every":1000,"seed":2,"model_name":"best-of-run"}),
    )
    .await;
    let done = a.expect("training_complete", LONG).await;
    assert_eq!(done["model_saved"], "best-of-run.onnx");
    let best = &done["best"];
    let evals: Vec<&Value> = a
        .seen
        .iter()
        .filter(|v| v["type"] == "evaluation")
        .collect();
    assert_eq!(evals.len(), 20, "one evaluation every 3 of 60 episodes");
    for e in &evals {
        assert!(!better(e, best), "{e} beats the saved {best}");
        assert!(!better(e, &e["best"]), "{e}: its best so far is worse");
    }
    // The best is one of the evaluations, or the final network's (evaluated at the end).
    assert!(
        evals.iter().any(|e| e["episode"] == best["episode"]
            && e["steps"] == best["steps"]
            && e["return"] == best["return"])
            || best["episode"] == 60,
        "{best} is not an evaluated network"
    );
    let details = s.get_json("/api/models")["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "best-of-run.onnx")
        .cloned()
        .expect("listed");
    assert_eq!(details["greedy_steps"], best["steps"]);
    let saved_return = details["greedy_return"].as_f64().unwrap();
    assert!((saved_return - best["return"].as_f64().unwrap()).abs() < 0.01);
    // Played greedily from world.md's start by ONNX Runtime: the same episode.
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("connected", T).await;
    ws.send(json!({"command":"load_model","model":"best-of-run.onnx"}))
        .await;
    ws.expect("model_loaded", T).await;
    ws.send(json!({"command":"reset"})).await;
    ws.expect("episode_start", T).await;
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    let end = ws
        .expect_where("the episode's end", LONG, |v| {
            v["type"] == "episode_end" && v["reason"] != "reset"
        })
        .await;
    let steps = end["steps"].as_u64().unwrap();
    // Inference sessions cap at their own 500 steps; the run's evaluation at its 200.
    assert_eq!(
        steps.min(200),
        best["steps"].as_u64().unwrap(),
        "{end} vs {best}"
    );
    if steps < 200 {
        let got = end["total_reward"].as_f64().unwrap();
        assert!(
            (got - best["return"].as_f64().unwrap()).abs() < 0.01,
            "{end} vs {best}"
        );
    }
}

/// The lesson preset through the real stack: it trains until a greedy evaluation survives all 500
/// steps with a return of at least 1000, stops there, and saves that network. Seed 1 is competent
/// after about 1200 episodes (BENCHMARKS.md); a class watches it with 30 viewers connected.
#[tokio::test(flavor = "multi_thread")]
async fn the_lesson_preset_stops_when_competent_and_saves_the_competent_agent() {
    let s = Server::start();
    let presets = s.get_json("/api/training/config")["presets"].clone();
    let learn = presets
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "learn")
        .expect("the lesson preset")
        .clone();
    assert_eq!(learn["config"]["stop_when_competent"], true);
    let mut viewers = Vec::new();
    for _ in 0..30 {
        let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
        v.expect("training_status", T).await;
        viewers.push(v);
    }
    let mut start = learn["config"].clone();
    start["command"] = json!("start_training");
    start["seed"] = json!(1);
    start["model_name"] = json!("lesson");
    viewers[0].send(start).await;
    let mut a = viewers.remove(0);
    let readers = tokio::spawn(async move {
        for mut v in viewers {
            // Every viewer gets to the end (they are read together below only for the count).
            while v
                .next(Duration::from_secs(300))
                .await
                .is_ok_and(|m| m["type"] != "training_complete")
            {
                v.seen.clear();
            }
        }
    });
    let done = a
        .expect("training_complete", Duration::from_secs(400))
        .await;
    assert_eq!(done["competent"], true, "{done}");
    assert_eq!(done["stopped"], false, "{done}");
    assert_eq!(done["best"]["steps"], 500, "{done}");
    assert!(done["best"]["return"].as_f64().unwrap() >= 1000.0, "{done}");
    let evals: Vec<&Value> = a
        .seen
        .iter()
        .filter(|v| v["type"] == "evaluation")
        .collect();
    let (last, before) = evals.split_last().unwrap();
    assert_eq!(last["competent"], true);
    assert!(
        before.iter().all(|e| e["competent"] == false),
        "it stopped at the first"
    );
    let episodes = a
        .seen
        .iter()
        .filter(|v| v["type"] == "episode_complete")
        .count();
    assert!(episodes < 5000, "stopped early: {episodes}");
    assert_eq!(last["episode"].as_u64().unwrap() as usize, episodes);
    readers.await.unwrap();
}

fn student_and_teacher(extra: &[&str]) -> Server {
    let mut args = vec![
        "--loopback-is-operator",
        "false",
        "--admin-token",
        "teacher-secret",
    ];
    args.extend_from_slice(extra);
    Server::start_with(ServerOpts {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

async fn viewer(s: &Server) -> Ws {
    let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
    v.expect("training_status", T).await;
    v
}

const LONG_RUN: &str = r#"{"command":"start_training","num_episodes":5000,"max_steps":50,
    "batch_size":8,"step_delay":0,"show_every":1000,"seed":3}"#;

/// The teacher's browser on another machine (no loopback rule) enters the admin token once and is
/// an operator for the training run: it stops a run a student started, and takes control of one
/// so the student's controls stop working.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_token_browser_controls_a_run_a_student_started() {
    let s = student_and_teacher(&[]);
    let mut student = viewer(&s).await;
    let mut teacher = viewer(&s).await;
    student.send_text(LONG_RUN).await;
    student.expect("training_started", T).await;
    teacher.expect("training_started", T).await;
    // Without the token the teacher's page is a viewer like any other.
    teacher.send(json!({"command":"pause"})).await;
    assert_eq!(teacher.expect("error", T).await["code"], "not_run_owner");
    teacher
        .send(json!({"command":"status","admin_token":"wrong"}))
        .await;
    assert_eq!(
        teacher.expect("training_status", T).await["operator"],
        false
    );
    teacher
        .send(json!({"command":"status","admin_token":"teacher-secret"}))
        .await;
    let st = teacher.expect("training_status", T).await;
    assert_eq!(
        (st["operator"].clone(), st["can_control"].clone()),
        (json!(true), json!(true))
    );
    // Take control: a new token for the teacher, the student's controls refused from now on.
    teacher.send(json!({"command":"take_control"})).await;
    let granted = teacher.expect("control_granted", T).await;
    let token = granted["control_token"].as_str().unwrap().to_owned();
    assert_eq!(
        student.expect("training_status", T).await["can_control"],
        false
    );
    student.send(json!({"command":"pause"})).await;
    assert_eq!(student.expect("error", T).await["code"], "not_run_owner");
    // The new token works from any connection (the teacher's other tab), the old owner's not.
    let mut projector = viewer(&s).await;
    projector
        .send(json!({"command":"pause","control_token":token}))
        .await;
    projector.expect("paused", T).await;
    teacher.send(json!({"command":"stop"})).await;
    let done = teacher.expect("training_complete", LONG).await;
    assert_eq!(done["stopped"], true);
    // A student may not take control.
    student.send_text(LONG_RUN).await;
    student.expect("training_started", T).await;
    student.send(json!({"command":"take_control"})).await;
    assert_eq!(student.expect("error", T).await["code"], "operators_only");
    teacher
        .send(json!({"command":"stop","admin_token":"teacher-secret"}))
        .await;
    teacher.expect("training_complete", LONG).await;
}

/// `--start-training operators` keeps the run for the teacher; `--max-student-episodes` bounds what
/// anyone else may start.
#[tokio::test(flavor = "multi_thread")]
async fn who_may_start_a_run_and_how_long_it_may_be() {
    let s = student_and_teacher(&["--start-training", "operators"]);
    let mut student = viewer(&s).await;
    student.send_text(LONG_RUN).await;
    let e = student.expect("error", T).await;
    assert_eq!(e["code"], "operators_only", "{e}");
    assert_eq!(s.get_json("/api/status")["training"]["is_training"], false);
    let mut start: Value = serde_json::from_str(LONG_RUN).unwrap();
    start["admin_token"] = json!("teacher-secret");
    student.send(start).await;
    student.expect("training_started", T).await;
    student.send(json!({"command":"stop"})).await;
    student.expect("training_complete", LONG).await;
    drop(s);

    let s = student_and_teacher(&["--max-student-episodes", "50"]);
    let mut student = viewer(&s).await;
    student.send_text(LONG_RUN).await;
    let e = student.expect("error", T).await;
    assert_eq!(e["code"], "operators_only", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("50 episodes"),
        "{e}"
    );
    let mut ok: Value = serde_json::from_str(LONG_RUN).unwrap();
    ok["num_episodes"] = json!(50);
    student.send(ok).await;
    assert_eq!(
        student.expect("training_started", T).await["num_episodes"],
        50
    );
}

/// The presets' expected durations come from the training speed this server measured, and a
/// restarted server still knows it (kept beside the session store).
#[tokio::test(flavor = "multi_thread")]
async fn the_measured_training_speed_survives_a_server_restart() {
    let store = temp_dir("pace-store").join("state");
    let mut s = Server::start_with(ServerOpts::on_store(&store, &[]));
    let rate = |s: &Server| {
        s.get_json("/api/training/config")["pace"]["env_steps_per_sec"]["qnetwork"].as_f64()
    };
    assert_eq!(rate(&s), None, "nothing measured yet");
    let mut v = viewer(&s).await;
    v.send(
        json!({"command":"start_training","num_episodes":30,"max_steps":100,"batch_size":16,
                  "step_delay":0,"show_every":1000,"seed":6}),
    )
    .await;
    v.expect("training_complete", LONG).await;
    let measured = rate(&s).expect("a speed after a run");
    assert!(measured > 100.0, "{measured} env steps/s");
    assert_eq!(s.terminate(), Some(0));
    let s2 = Server::start_with(ServerOpts::on_store(&store, &[]));
    assert_eq!(rate(&s2), Some(measured), "the next server knows it");
    drop((s, s2));
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}
