//! End-to-end: "what if" probes, and a session that remembers what the teacher set — after a
//! reload, and on every watcher's screen.

use hamlet_tests::*;
use serde_json::{json, Value};

async fn session(s: &Server) -> Ws {
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    ws
}

fn q(v: &Value) -> Vec<f64> {
    v["q_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A frame's place in the world: episode, step, cell, meters, reward.
fn place(u: &Value) -> Value {
    json!([
        u["episode"],
        u["step"],
        u["grid"]["agents"][0],
        u["agent_meters"],
        u["reward"]
    ])
}

/// Dragging a meter changes what the network thinks; an unedited probe is the frame itself; and a
/// session that probed steps exactly as one that never did.
#[tokio::test(flavor = "multi_thread")]
async fn a_probe_answers_what_if_and_leaves_the_session_as_it_was() {
    let s = Server::start();
    let mut a = session(&s).await;
    let first = a.seen.last().unwrap().clone();
    a.send(json!({"command":"probe"})).await;
    let same = a.expect("probe_result", T).await;
    assert_eq!(
        q(&same),
        q(&first),
        "an unedited probe is the current state"
    );
    assert_eq!(same["position"], json!({"x":4,"y":4}));
    a.send(json!({"command":"probe","meters":{"energy":0.05,"satiation":0.1}}))
        .await;
    let hungry = a.expect("probe_result", T).await;
    assert_ne!(q(&hungry), q(&first), "{hungry}");
    assert!((hungry["meters"]["energy"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    assert!(hungry["activations"]["h1"]
        .as_array()
        .is_some_and(|h| !h.is_empty()));
    let best = q(&hungry)
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .unwrap()
        .0;
    assert_eq!(hungry["action"].as_u64().unwrap() as usize, best);
    a.send(json!({"command":"probe","position":{"x":1,"y":1}}))
        .await;
    let moved = a.expect("probe_result", T).await;
    assert_eq!(moved["position"], json!({"x":1,"y":1}));
    assert_ne!(q(&moved), q(&first));
    for bad in [
        json!({"command":"probe","meters":{"happiness":0.5}}),
        json!({"command":"probe","meters":{"energy":2}}),
        json!({"command":"probe","position":{"x":9,"y":0}}),
    ] {
        a.send(bad.clone()).await;
        assert_eq!(a.expect("error", T).await["code"], "invalid_field", "{bad}");
    }
    // The probing session and an untouched one walk the same path.
    let mut b = session(&s).await;
    for _ in 0..40 {
        a.send(json!({"command":"probe","meters":{"stress":90}}))
            .await;
        a.send(json!({"command":"step"})).await;
        b.send(json!({"command":"step"})).await;
        let ua = a.expect("state_update", T).await;
        let ub = b.expect("state_update", T).await;
        assert_eq!(place(&ua), place(&ub));
    }
}

/// A watcher may probe (it changes nothing) but not steer; it sees the owner's settings as they
/// change, and the network's layers while the owner has the Inside panel on.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_probes_and_follows_the_owners_settings_and_inside_view() {
    let s = Server::start();
    let mut owner = session(&s).await;
    let link = owner.seen[0]["watch_token"].as_str().unwrap().to_owned();
    let mut w = Ws::connect(&s.url(&format!("/ws?watch={link}")))
        .await
        .unwrap();
    let c = w.expect("connected", T).await;
    assert_eq!(
        (c["epsilon"].clone(), c["detail"].clone()),
        (json!(0.0), json!(false))
    );
    w.expect("state_update", T).await;
    w.send(json!({"command":"probe","meters":{"hygiene":0.1}}))
        .await;
    assert!(w.expect("probe_result", T).await["q_values"].is_array());
    assert!(
        owner.seen.iter().all(|m| m["type"] != "probe_result"),
        "the answer went to the watcher only"
    );
    w.send(json!({"command":"set_epsilon","epsilon":0.5})).await;
    assert_eq!(w.expect("error", T).await["code"], "read_only");
    owner
        .send(json!({"command":"set_epsilon","epsilon":0.25}))
        .await;
    owner
        .send(json!({"command":"set_detail","activations":true}))
        .await;
    owner.send(json!({"command":"set_speed","speed":4})).await;
    let st = w
        .expect_where("the owner's settings", T, |m| {
            m["type"] == "settings" && m["speed"] == 4.0
        })
        .await;
    assert_eq!(
        (
            st["epsilon"].clone(),
            st["detail"].clone(),
            st["start_mode"].clone()
        ),
        (json!(0.25), json!(true), json!("fixed"))
    );
    owner.send(json!({"command":"step"})).await;
    let u = w.expect("state_update", T).await;
    assert!(
        u["activations"]["h2"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{u}"
    );
}

/// A reloaded page (the same resume token) gets the session's teaching settings and its recent
/// episodes back, so the sliders and the survival chart show what the teacher set and saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_restores_the_settings_and_the_recent_episodes() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--max-steps".into(), "20".into()],
        ..Default::default()
    });
    let mut a = session(&s).await;
    let token = a.seen[0]["resume_token"].as_str().unwrap().to_owned();
    for cmd in [
        json!({"command":"set_epsilon","epsilon":0.3}),
        json!({"command":"set_start","mode":"random"}),
        json!({"command":"set_detail","activations":true}),
        json!({"command":"set_speed","speed":10}),
        json!({"command":"play"}),
    ] {
        a.send(cmd).await;
    }
    let mut ends = Vec::new();
    while ends.len() < 3 {
        ends.push(a.expect("episode_end", T).await);
    }
    a.send(json!({"command":"pause"})).await;
    a.send(json!({"command":"status"})).await;
    assert_eq!(a.expect("session_status", T).await["playing"], false);
    a.ws.close(None).await.ok();
    let mut b = Ws::connect(&s.url(&format!("/ws?resume={token}")))
        .await
        .unwrap();
    let c = b.expect("connected", T).await;
    assert_eq!(c["resumed"], true);
    assert_eq!(c["epsilon"], 0.3);
    assert_eq!(c["start_mode"], "random");
    assert_eq!(c["detail"], true);
    assert_eq!(c["speed"], 10.0);
    let recent = c["recent_episodes"].as_array().unwrap();
    assert!(recent.len() >= 3, "{c}");
    for e in &ends {
        let r = recent
            .iter()
            .find(|r| r["episode"] == e["episode"])
            .unwrap_or_else(|| panic!("episode {} missing: {recent:?}", e["episode"]));
        assert_eq!(r["length"], e["steps"]);
        assert_eq!(r["reason"], e["reason"]);
    }
}
