//! End-to-end: the real metaserver, real inference workers, real ONNX Runtime, over real sockets.

use hamlet_tests::*;
use serde_json::json;

#[test]
fn health_models_and_status_endpoints() {
    let s = Server::start();
    let h = s.get_json("/");
    assert_eq!(h["status"], "running");
    assert_eq!(h["service"], "Hamlet Metaserver");
    assert_eq!(
        h["endpoints"],
        json!({"inference": "/ws", "training": "/ws/training"})
    );
    assert_eq!(h["training_active"], false);
    let m = s.get_json("/api/models");
    assert_eq!(m["count"], 1);
    assert_eq!(m["models"], json!(["test0.onnx"]));
    assert_eq!(m["details"][0]["arch"], "qnetwork");
    assert_eq!(m["details"][0]["obs_dim"], 72);
    assert_eq!(m["details"][0]["n_actions"], 5);
    let st = s.get_json("/api/status");
    assert_eq!(st["limits"]["max_sessions"], 256);
    assert!(st["sessions"].as_array().unwrap().is_empty());
    // A browser navigation goes to the UI.
    let (code, _) = http(
        &s.addr,
        "GET",
        "/",
        &[("Accept", "text/html,application/xhtml+xml")],
    );
    assert_eq!(code, 307);
    let (code, body) = s.get("/ui/");
    assert_eq!(code, 200);
    assert!(body.contains("<html"));
}

#[tokio::test(flavor = "multi_thread")]
async fn walking_skeleton_connect_spawns_worker_and_close_reaps_it() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--warm-workers".into(), "0".into()],
        ..Default::default()
    });
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    let c = ws.expect("connected", T).await;
    assert_eq!(c["available_models"], json!(["test0.onnx"]));
    assert_eq!(c["model"], "test0.onnx");
    assert_eq!(c["playing"], false);
    assert_eq!(c["max_steps"], 500);
    let sid = c["session_id"].as_str().unwrap().to_owned();
    let e = ws.expect("episode_start", T).await;
    assert_eq!(e["episode"], 1);
    assert_eq!(e["model_name"], "test0.onnx");
    // The step-0 frame shows the paused world.
    let u = ws.expect("state_update", T).await;
    assert_eq!(u["step"], 0);
    assert_eq!(
        u["grid"]["agents"][0],
        json!({"id":"agent_0","x":4,"y":4,"color":"#3b82f6"})
    );
    assert_eq!(u["affordances"].as_array().unwrap().len(), 7);
    assert_eq!(u["agent_meters"]["agent_0"]["meters"]["money"], 50.0);
    assert_eq!(u["q_values"].as_array().unwrap().len(), 5);

    let workers = s.workers();
    let w = workers
        .iter()
        .find(|w| w["session"] == sid.as_str())
        .expect("a worker serves the session");
    let pid = w["pid"].as_u64().unwrap() as u32;
    assert!(
        alive(pid),
        "the worker pid /api/workers shows is a real process"
    );
    let status = s.get_json("/api/status");
    assert_eq!(status["sessions"][0]["id"], sid.as_str());
    assert_eq!(status["sessions"][0]["worker_pid"], pid);

    // Socket files are removed once the worker is connected.
    let sock_dir = std::env::temp_dir().join(format!("hamlet-metaserver-{}", s.pid));
    let socks: Vec<_> = std::fs::read_dir(&sock_dir).unwrap().flatten().collect();
    assert!(socks.is_empty(), "leftover sockets: {socks:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock_dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);

    drop(ws);
    s.wait_for("the worker to be reaped", T, |_| !alive(pid));
    s.wait_for("the session to be gone", T, |s| {
        s.get_json("/api/status")["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn every_session_command_and_its_errors() {
    let s = Server::start_with(ServerOpts {
        models: 2,
        ..Default::default()
    });
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;

    // step while paused: exactly one step.
    ws.send(json!({"type":"control","command":"step"})).await;
    let u = ws.expect("state_update", T).await;
    assert_eq!(u["step"], 1);
    assert!(u["action"].as_u64().unwrap() < 5);
    assert_eq!(u["q_values"].as_array().unwrap().len(), 5);
    // Compat: without "type".
    ws.send(json!({"command":"step"})).await;
    assert_eq!(ws.expect("state_update", T).await["step"], 2);

    // status (new)
    ws.send(json!({"command":"status"})).await;
    let st = ws.expect("session_status", T).await;
    assert_eq!(st["step"], 2);
    assert_eq!(st["playing"], false);

    // reset while paused: episode_end(reset), then the next episode at once.
    ws.send(json!({"command":"reset"})).await;
    let end = ws.expect("episode_end", T).await;
    assert_eq!(end["reason"], "reset");
    assert_eq!(end["episode"], 1);
    assert_eq!(end["steps"], 2);
    assert_eq!(ws.expect("episode_start", T).await["episode"], 2);
    assert_eq!(ws.expect("state_update", T).await["step"], 0);

    // play at speed 10, then pause: steps arrive about every 10 ms.
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    let a = ws
        .expect_where("step 5", T, |v| {
            v["type"] == "state_update" && v["step"] == 5
        })
        .await;
    assert_eq!(a["episode"], 2);
    ws.send(json!({"command":"pause"})).await;
    ws.send(json!({"command":"status"})).await;
    let st = ws.expect("session_status", T).await;
    assert_eq!(st["playing"], false);
    assert_eq!(st["speed"], 10.0);
    let paused_at = st["step"].as_u64().unwrap();
    // Paused: a status round trip later, the step has not moved.
    ws.send(json!({"command":"status"})).await;
    assert_eq!(
        ws.expect("session_status", T).await["step"]
            .as_u64()
            .unwrap(),
        paused_at
    );

    // load_model: success, unknown, path-like, wrong type.
    ws.send(json!({"command":"load_model","model":"test1.onnx"}))
        .await;
    assert_eq!(ws.expect("model_loaded", T).await["model"], "test1.onnx");
    for (model, code) in [
        (json!("nope.onnx"), "model_not_found"),
        (json!("../../etc/passwd"), "invalid_model_name"),
        (json!("/etc/passwd"), "invalid_model_name"),
        (json!("a\u{0}.onnx"), "invalid_model_name"),
        (json!(42), "invalid_field"),
    ] {
        ws.send(json!({"command":"load_model","model":model})).await;
        let e = ws.expect("error", T).await;
        assert_eq!(e["code"], code, "{model}");
    }
    ws.send(json!({"command":"status"})).await;
    assert_eq!(
        ws.expect("session_status", T).await["model"],
        "test1.onnx",
        "the session keeps its model"
    );

    // Garbage keeps the connection open.
    for (text, code) in [
        ("not json", "bad_json"),
        ("[1,2]", "bad_json"),
        (r#"{"command":"dance"}"#, "unknown_command"),
        (r#"{"command":"set_speed","speed":"x"}"#, "invalid_field"),
        (r#"{"command":"set_speed","speed":NaN}"#, "bad_json"),
    ] {
        ws.send_text(text).await;
        assert_eq!(ws.expect("error", T).await["code"], code, "{text}");
    }
    ws.send(json!({"command":"step"})).await;
    assert_eq!(
        ws.expect("state_update", T).await["step"].as_u64().unwrap(),
        paused_at + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_shape_model_is_refused_and_previous_kept() {
    let s = Server::start();
    // A model with the wrong input width, written by our own exporter.
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    // Added after the session started (the newest file would otherwise be the default model).
    std::fs::write(s.models.join("wrong.onnx"), hamlet_onnx_bad_model()).unwrap();
    ws.send(json!({"command":"load_model","model":"wrong.onnx"}))
        .await;
    let e = ws.expect("error", T).await;
    assert_eq!(e["code"], "invalid_model");
    assert!(e["message"].as_str().unwrap().contains("72"), "{e}");
    ws.send(json!({"command":"step"})).await;
    assert_eq!(
        ws.expect("state_update", T).await["step"],
        1,
        "the old model still plays"
    );
}

/// A valid ONNX file whose network takes 10 inputs instead of 72.
fn hamlet_onnx_bad_model() -> Vec<u8> {
    let d = hamlet_onnx::Dense {
        inputs: 10,
        outputs: 5,
        weight: vec![0.1; 50],
        bias: vec![0.0; 5],
        relu: false,
    };
    hamlet_onnx::export(&hamlet_onnx::NetworkDesc::Mlp(vec![d]), &Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_are_independent() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws")).await.unwrap();
    let mut b = Ws::connect(&s.url("/ws")).await.unwrap();
    let ida = a.expect("connected", T).await["session_id"].clone();
    let idb = b.expect("connected", T).await["session_id"].clone();
    assert_ne!(ida, idb);
    a.expect("state_update", T).await;
    b.expect("state_update", T).await;
    a.send(json!({"command":"set_speed","speed":10})).await;
    a.send(json!({"command":"play"})).await;
    b.send(json!({"command":"step"})).await;
    a.expect_where("a at step 20", T, |v| {
        v["type"] == "state_update" && v["step"] == 20
    })
    .await;
    b.send(json!({"command":"status"})).await;
    let st = b.expect("session_status", T).await;
    assert_eq!(st["step"], 1, "b stays paused while a plays");
    assert_eq!(st["playing"], false);
    let pids: Vec<_> = s
        .workers()
        .iter()
        .filter(|w| w["state"] == "active")
        .map(|w| w["pid"].clone())
        .collect();
    assert_eq!(pids.len(), 2, "one process per session");
    assert_ne!(pids[0], pids[1]);
}

/// Plays one episode of the shipped model `name` through the real metaserver, worker and ONNX
/// Runtime: it must be competent (issue 16) — survive the cap *and* live well, a return of at
/// least 1000.
async fn a_shipped_model_is_competent(name: &str) {
    let s = Server::start_with(ServerOpts {
        models: 0,
        copy_models: vec![root().join("models").join(name)],
        args: vec!["--default-model".into(), name.into()],
        ..Default::default()
    });
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    assert_eq!(ws.expect("connected", T).await["model"], name);
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    let end = ws
        .expect("episode_end", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(end["reason"], "max_steps", "{name}: {end}");
    assert_eq!(end["steps"], 500);
    // The episode's last frame came before its end, and shows the same step and return (an
    // episode's last step travels apart from the others: issue 19's one message per step).
    let last = ws
        .seen
        .iter()
        .rev()
        .find(|v| v["type"] == "state_update")
        .expect("frames before the end");
    assert_eq!(last["step"], 500, "{last}");
    assert_eq!(last["episode"], end["episode"]);
    assert_eq!(last["cumulative_reward"], end["total_reward"]);
    assert!(
        end["total_reward"].as_f64().unwrap() >= 1000.0,
        "{name}: {end}"
    );
}

/// Every model a user sees in the shipped `models/` is competent (issue 32: test fixtures live in
/// `tests/fixtures/`), the default among them.
#[tokio::test(flavor = "multi_thread")]
async fn every_shipped_model_survives_the_full_episode() {
    let mut shipped: Vec<String> = std::fs::read_dir(root().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    shipped.sort();
    assert!(
        shipped.contains(&"hamlet-default.onnx".to_owned()),
        "{shipped:?}"
    );
    assert!(shipped.len() >= 2, "{shipped:?}");
    for name in &shipped {
        a_shipped_model_is_competent(name).await;
    }
}

#[test]
fn model_listing_follows_files_that_change_under_the_same_name() {
    let s = Server::start();
    let write = |arch: &str| {
        let d = hamlet_onnx::Dense {
            inputs: 72,
            outputs: 5,
            weight: vec![0.0; 360],
            bias: vec![0.0; 5],
            relu: false,
        };
        let meta = [("hamlet.arch".to_string(), arch.to_string())]
            .into_iter()
            .collect();
        let bytes = hamlet_onnx::export(&hamlet_onnx::NetworkDesc::Mlp(vec![d]), &meta).unwrap();
        hamlet_onnx::write_atomic(&s.models.join("changing.onnx"), &bytes).unwrap();
    };
    let arch_of = |s: &Server| {
        let m = s.get_json("/api/models");
        m["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "changing.onnx")
            .map(|d| d["arch"].clone())
    };
    write("first");
    assert_eq!(arch_of(&s), Some(json!("first")));
    assert_eq!(
        arch_of(&s),
        Some(json!("first")),
        "served again (from the cache)"
    );
    write("second-version");
    assert_eq!(
        arch_of(&s),
        Some(json!("second-version")),
        "a rewritten file is read again"
    );
    std::fs::remove_file(s.models.join("changing.onnx")).unwrap();
    assert_eq!(arch_of(&s), None, "a removed file leaves the listing");
}

/// Files in the models directory that are not usable models — truncated, random bytes, far too
/// large — are never offered (`/api/models` lists them apart, with why), and loading one gets
/// `invalid_model` naming the file and no path of the server: whether the catalog has seen the
/// file or the worker finds it first.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_model_files_are_refused_by_name_never_by_path() {
    let s = Server::start();
    let good = std::fs::read(s.models.join("test0.onnx")).unwrap();
    // Bytes no ONNX parser takes: a fixed pseudo-random sequence (xorshift).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..40_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(s.models.join("truncated.onnx"), &good[..good.len() / 2]).unwrap();
    std::fs::write(s.models.join("random.onnx"), &random).unwrap();
    let huge = std::fs::File::create(s.models.join("huge.onnx")).unwrap();
    huge.set_len(64 << 20).unwrap();
    let bad = ["truncated.onnx", "random.onnx", "huge.onnx"];
    let m = s.get_json("/api/models");
    assert_eq!(m["models"], json!(["test0.onnx"]), "{m}");
    let refused: Vec<&str> = m["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        ["huge.onnx", "random.onnx", "truncated.onnx"],
        "{m}"
    );
    let server_path = s.models.parent().unwrap().display().to_string();
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    let c = ws.expect("connected", T).await;
    assert_eq!(c["available_models"], json!(["test0.onnx"]), "{c}");
    // The last is written after the catalog's scan: the worker is the one to refuse it.
    std::fs::write(s.models.join("late.onnx"), &random).unwrap();
    for name in bad.iter().chain(&["late.onnx"]) {
        ws.send(json!({"command":"load_model","model":name})).await;
        let e = ws.expect("error", T).await;
        let text = e["message"].as_str().unwrap();
        assert_eq!(e["code"], "invalid_model", "{name}: {e}");
        assert!(text.contains(name), "{name}: {text}");
        assert!(
            !text.contains(&server_path) && !text.contains('/'),
            "{name}: {text}"
        );
    }
    ws.send(json!({"command":"step"})).await;
    assert_eq!(
        ws.expect("state_update", T).await["step"],
        1,
        "still playing"
    );
}
