//! End-to-end: what lets a class see *why* the agent acts — ε-greedy play, random starts, the
//! meter that ran out, and the network's hidden layers.

use hamlet_tests::*;
use serde_json::{json, Value};

async fn session(s: &Server) -> Ws {
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    ws
}

async fn steps(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        ws.send(json!({"command":"step"})).await;
        out.push(ws.expect("state_update", T).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn epsilon_one_always_explores_and_zero_never() {
    let s = Server::start();
    let mut ws = session(&s).await;
    let greedy = steps(&mut ws, 5).await;
    assert!(
        greedy.iter().all(|u| u.get("explored").is_none()),
        "greedy frames stay as before"
    );
    ws.send(json!({"command":"set_epsilon","epsilon":1})).await;
    let random = steps(&mut ws, 30).await;
    assert!(
        random.iter().all(|u| u["explored"] == true),
        "{:?}",
        random.iter().map(|u| &u["explored"]).collect::<Vec<_>>()
    );
    // Random actions: not all the same as the greedy choice (the highest Q-value).
    let differs = random.iter().filter(|u| {
        let q: Vec<f64> = u["q_values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let best = q
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        u["action"].as_u64().unwrap() as usize != best
    });
    assert!(differs.count() >= 10);
    ws.send(json!({"command":"set_epsilon","epsilon":0})).await;
    assert!(steps(&mut ws, 10)
        .await
        .iter()
        .all(|u| u.get("explored").is_none()));
    for bad in [json!(1.5), json!(-0.1), json!("x")] {
        ws.send(json!({"command":"set_epsilon","epsilon":bad}))
            .await;
        let e = ws.expect("error", T).await;
        assert!(
            e["code"] == "out_of_range" || e["code"] == "invalid_field",
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_starts_differ_between_episodes() {
    let s = Server::start();
    let mut ws = session(&s).await;
    ws.send(json!({"command":"set_start","mode":"random"}))
        .await;
    let mut starts = std::collections::BTreeSet::new();
    for _ in 0..8 {
        ws.send(json!({"command":"reset"})).await;
        let u = ws
            .expect_where("a step-0 frame", T, |v| {
                v["type"] == "state_update" && v["step"] == 0
            })
            .await;
        let a = &u["grid"]["agents"][0];
        starts.insert((a["x"].as_i64().unwrap(), a["y"].as_i64().unwrap()));
    }
    assert!(starts.len() >= 4, "8 random starts fell on {starts:?}");
    assert!(starts.iter().all(|c| !u_affordance(*c)), "{starts:?}");
    ws.send(json!({"command":"set_start","mode":"fixed"})).await;
    ws.send(json!({"command":"reset"})).await;
    let u = ws
        .expect_where("a step-0 frame", T, |v| {
            v["type"] == "state_update" && v["step"] == 0
        })
        .await;
    assert_eq!(
        (
            u["grid"]["agents"][0]["x"].clone(),
            u["grid"]["agents"][0]["y"].clone()
        ),
        (json!(4), json!(4))
    );
}

fn u_affordance((x, y): (i64, i64)) -> bool {
    hamlet_env::AFFORDANCES
        .iter()
        .any(|a| i64::from(a.x) == x && i64::from(a.y) == y)
}

#[tokio::test(flavor = "multi_thread")]
async fn episode_end_names_the_meter_that_ran_out() {
    // A barely trained model dies long before the cap.
    let s = Server::start();
    let mut ws = session(&s).await;
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    let end = ws
        .expect_where(
            "a meter running out",
            std::time::Duration::from_secs(60),
            |v| v["type"] == "episode_end" && v["reason"] == "meter_depleted",
        )
        .await;
    let meter = end["meter"].as_str().expect("`meter` on meter_depleted");
    assert!(["energy", "hygiene", "satiation"].contains(&meter), "{end}");
    let last = ws
        .seen
        .iter()
        .rev()
        .find(|v| v["type"] == "state_update" && v["episode"] == end["episode"])
        .unwrap();
    assert_eq!(
        last["agent_meters"]["agent_0"]["meters"][meter], 0.0,
        "{last}"
    );
    assert_eq!(last["done"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_detail_shows_the_hidden_layers_and_refuses_models_without_them() {
    let s = Server::start_with(ServerOpts {
        copy_models: vec![root().join("tests/fixtures/hamlet-qnetwork-s1.onnx")],
        ..Default::default()
    });
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("connected", T).await;
    ws.send(json!({"command":"load_model","model":"test0.onnx"}))
        .await;
    ws.expect("model_loaded", T).await;
    let plain = steps(&mut ws, 1).await.remove(0);
    assert!(
        plain.get("activations").is_none(),
        "off by default: frames stay small"
    );
    ws.send(json!({"command":"set_detail","activations":true}))
        .await;
    let frames = steps(&mut ws, 4).await;
    let h = |u: &Value, k: &str| -> Vec<f64> {
        u["activations"][k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} in {u}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    for u in &frames {
        assert_eq!(h(u, "h1").len(), 128);
        assert_eq!(h(u, "h2").len(), 128);
        assert!(h(u, "h1").iter().all(|v| *v >= 0.0), "ReLU outputs");
        let top = u["activations"]["top"].as_array().unwrap();
        assert!(!top.is_empty() && top.len() <= 8, "{top:?}");
    }
    assert!(
        frames.windows(2).any(|w| h(&w[0], "h1") != h(&w[1], "h1")),
        "activations change between steps"
    );
    ws.send(json!({"command":"set_detail","activations":false}))
        .await;
    assert!(steps(&mut ws, 1).await[0].get("activations").is_none());
    // A model exported without hidden-layer outputs.
    ws.send(json!({"command":"load_model","model":"hamlet-qnetwork-s1.onnx"}))
        .await;
    ws.expect("model_loaded", T).await;
    ws.send(json!({"command":"set_detail","activations":true}))
        .await;
    assert_eq!(ws.expect("error", T).await["code"], "no_activations");
    assert!(steps(&mut ws, 1).await[0].get("activations").is_none());
}

/// The teacher holds the controls: pause, resume and stop are for the connection that started the
/// run, anyone with its control token, and operators. (`--loopback-is-operator false`, so these
/// loopback viewers are not operators by address.)
#[tokio::test(flavor = "multi_thread")]
async fn only_the_starter_the_token_or_an_operator_controls_the_run() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start_with(ServerOpts {
        args: [
            "--loopback-is-operator",
            "false",
            "--admin-token",
            "op-secret",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let mut teacher = Ws::connect(&s.url("/ws/training")).await.unwrap();
    let mut student = Ws::connect(&s.url("/ws/training")).await.unwrap();
    teacher.expect("training_status", T).await;
    assert_eq!(
        student.expect("training_status", T).await["can_control"],
        false
    );
    teacher
        .send(
            json!({"command":"start_training","num_episodes":5000,"max_steps":40,"batch_size":8,
                     "step_delay":0.002,"show_every":1,"seed":2,"pacing":"replay"}),
        )
        .await;
    let token = teacher.expect("training_started", T).await["control_token"]
        .as_str()
        .expect("the starter's copy carries the token")
        .to_owned();
    let other = student.expect("training_started", T).await;
    assert!(other.get("control_token").is_none(), "{other}");
    // A student cannot stop the teacher's run, with no token or a wrong one.
    student.send(json!({"command":"stop"})).await;
    assert_eq!(student.expect("error", T).await["code"], "not_run_owner");
    student
        .send(json!({"command":"pause","control_token":"guess"}))
        .await;
    assert_eq!(student.expect("error", T).await["code"], "not_run_owner");
    assert_eq!(s.get_json("/api/status")["training"]["is_training"], true);
    // The teacher can.
    teacher.send(json!({"command":"pause"})).await;
    teacher.expect("paused", T).await;
    // The teacher's page reloads: a new connection with the token.
    drop(teacher);
    let mut again = Ws::connect(&s.url("/ws/training")).await.unwrap();
    assert_eq!(
        again.expect("training_status", T).await["can_control"],
        false
    );
    again
        .send(json!({"command":"resume","control_token":token}))
        .await;
    again.expect("resumed", T).await;
    // An operator (the admin token; loopback does not count here).
    let mut req = s.url("/ws/training").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer op-secret".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut op = Ws {
        connected_seen: false,
        ws,
        seen: vec![],
        closed: None,
    };
    assert_eq!(op.expect("training_status", T).await["can_control"], true);
    op.send(json!({"command":"stop"})).await;
    let done = op
        .expect("training_complete", std::time::Duration::from_secs(60))
        .await;
    assert_eq!(done["stopped"], true);
    // And the operator endpoints follow the same rule.
    assert_eq!(s.get("/api/workers").0, 403);
    assert_eq!(
        http(
            &s.addr,
            "GET",
            "/api/workers",
            &[("Authorization", "Bearer op-secret")]
        )
        .0,
        200
    );
}

/// `GET /api/training/history`: complete for a short run (every episode, an evaluation every 10),
/// with the random policy's measured survival and the cap as references; bounded and downsampled
/// for a long one; the previous run kept for comparison.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_endpoint_has_the_whole_run() {
    let s = Server::start();
    let config = s.get_json("/api/training/config");
    assert_eq!(
        config["pace"]["env_steps_per_sec"],
        serde_json::json!({}),
        "no run yet: {config}"
    );
    assert_eq!(config["presets"][0]["name"], "learn");
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":30,"max_steps":50,"batch_size":8,
                  "step_delay":0,"show_every":1000,"seed":3}),
    )
    .await;
    a.expect("training_complete", std::time::Duration::from_secs(60))
        .await;
    // The server now knows how fast it trains (for the presets' expected durations), and with
    // which network: the dueling presets' durations are not estimated from a qnetwork's speed.
    let config = s.get_json("/api/training/config");
    let pace = config["pace"].clone();
    let dueling = config["presets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "full-dueling")
        .expect("a dueling full-run preset");
    assert_eq!(dueling["config"]["network"], "dueling");
    assert!(
        pace["env_steps_per_sec"]["qnetwork"]
            .as_f64()
            .is_some_and(|r| r > 100.0),
        "{pace}"
    );
    assert!(pace["env_steps_per_sec"]["dueling"].is_null(), "{pace}");
    assert!(
        pace["mean_episode_length"]
            .as_f64()
            .is_some_and(|l| l > 0.0 && l <= 50.0),
        "{pace}"
    );
    let h = s.get_json("/api/training/history");
    let eps: Vec<u64> = h["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["episode"].as_u64().unwrap())
        .collect();
    assert_eq!(eps, (1..=30).collect::<Vec<_>>());
    let seen: Vec<&Value> = a
        .seen
        .iter()
        .filter(|v| v["type"] == "episode_complete")
        .collect();
    for (row, ep) in h["episodes"].as_array().unwrap().iter().zip(&seen) {
        assert_eq!(row["reward"], ep["reward"]);
        assert_eq!(row["length"], ep["length"]);
    }
    let evals: Vec<u64> = h["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["episode"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, [10, 20, 30]);
    assert!(h["evaluations"][0]["steps"].as_u64().unwrap() <= 50);
    assert_eq!(h["downsampled"], false);
    assert_eq!(h["config"]["seed"], 3);
    let random = h["reference"]["random"]["steps"].as_f64().unwrap();
    assert!((50.0..200.0).contains(&random), "{random}");
    assert_eq!(h["reference"]["max_steps"], 50);
    assert!(h["previous"].is_null());

    // A long run: bounded to 2000 rows, downsampled, the first run now the previous one.
    // (A batch larger than the replay buffer: no learning, just episodes — quick.)
    a.send(
        json!({"command":"start_training","num_episodes":2100,"max_steps":2,"batch_size":1024,
                  "buffer_capacity":100,"step_delay":0,"show_every":100000,"seed":4}),
    )
    .await;
    a.expect("training_complete", std::time::Duration::from_secs(120))
        .await;
    let h = s.get_json("/api/training/history");
    let rows = h["episodes"].as_array().unwrap();
    assert!(rows.len() <= 2000 && rows.len() > 1000, "{}", rows.len());
    assert_eq!(
        rows[0]["episode"], 1,
        "the first bucket's extremes include its start"
    );
    assert_eq!(h["downsampled"], true);
    assert!(rows
        .windows(2)
        .all(|w| w[0]["episode"].as_u64() < w[1]["episode"].as_u64()));
    assert_eq!(h["previous"]["episodes"].as_array().unwrap().len(), 30);
}
