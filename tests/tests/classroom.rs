//! End-to-end: what a class needs from the default command — clients of the original Hamlet on
//! their own dev server, blank form fields, the right default model, late joiners who catch up.

use hamlet_tests::*;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LONG: Duration = Duration::from_secs(60);

/// Opens `path` with `Origin: origin`; `Err((status, body))` when refused.
async fn open_with_origin(s: &Server, path: &str, origin: &str) -> Result<(), (u16, String)> {
    let mut req = s.url(path).into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origins_of_this_machine_are_welcome_and_the_flag_adds_others() {
    // The default command: a frontend on its own dev server of the same machine works.
    let s = Server::start();
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    for origin in [
        format!("http://127.0.0.1:{port}"),
        "http://127.0.0.1:5173".to_owned(),
        "http://localhost:5173".to_owned(), // the page from localhost, the socket on 127.0.0.1
        "https://127.0.0.1".to_owned(),
    ] {
        let o: &'static str = Box::leak(origin.into_boxed_str());
        assert_eq!(open_with_origin(&s, "/ws", o).await, Ok(()), "{o}");
        assert_eq!(open_with_origin(&s, "/ws/training", o).await, Ok(()), "{o}");
    }
    let (code, body) = open_with_origin(&s, "/ws", "http://evil.example")
        .await
        .unwrap_err();
    assert_eq!(code, 403);
    assert!(
        body.contains("--allowed-origins http://evil.example"),
        "{body}"
    );
    assert!(
        open_with_origin(&s, "/ws", "http://localhost.evil.example:5173")
            .await
            .is_err()
    );

    // The flag adds to the rule: the named origin and this machine's pages both work.
    let s = Server::start_with(ServerOpts {
        args: ["--allowed-origins", "http://class.example:5173"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    assert_eq!(
        open_with_origin(&s, "/ws", "http://class.example:5173").await,
        Ok(())
    );
    assert_eq!(
        open_with_origin(&s, "/ws", "http://127.0.0.1:5173").await,
        Ok(())
    );
    assert!(open_with_origin(&s, "/ws", "http://class.example:5174")
        .await
        .is_err());

    let s = Server::start_with(ServerOpts {
        args: ["--allowed-origins", "*"].map(String::from).to_vec(),
        ..Default::default()
    });
    assert_eq!(
        open_with_origin(&s, "/ws/training", "http://anywhere.example").await,
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blank_numeric_fields_of_old_forms_mean_the_default() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(json!({"command":"start_training","batch_size":"abc"}))
        .await;
    let e = a.expect("error", T).await;
    assert_eq!(
        e["code"], "invalid_field",
        "other wrong types stay errors: {e}"
    );
    a.send(
        json!({"command":"start_training","num_episodes":2,"max_steps":5,"batch_size":"",
                  "learning_rate":"","seed":"","buffer_capacity":"","step_delay":""}),
    )
    .await;
    let cfg = a.expect("training_started", T).await["config"].clone();
    let table = s.get_json("/api/training/config")["fields"]
        .as_array()
        .unwrap()
        .clone();
    let default = |name: &str| table.iter().find(|f| f["name"] == name).unwrap()["default"].clone();
    for f in [
        "batch_size",
        "learning_rate",
        "buffer_capacity",
        "step_delay",
    ] {
        assert_eq!(cfg[f], default(f), "{f}");
    }
    assert!(cfg["seed"].is_u64(), "a blank seed draws one: {cfg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_command_gives_new_sessions_the_shipped_default_model() {
    // A fresh copy of models/ whose file times say nothing (a clone's), with another model (the
    // 424-step test fixture) as the newest file: the shipped default is what a session gets.
    let copy = |names: &[&str]| -> Vec<std::path::PathBuf> {
        let fixture = |n: &&str| n.starts_with("hamlet-qnetwork-s1");
        let dir = |n: &&str| {
            if fixture(n) {
                "tests/fixtures"
            } else {
                "models"
            }
        };
        names.iter().map(|n| root().join(dir(n)).join(n)).collect()
    };
    let s = Server::start_with(ServerOpts {
        models: 0,
        copy_models: copy(&[
            "hamlet-qnetwork-s1.onnx",
            "hamlet-default.onnx",
            "hamlet-dueling-s1.onnx",
        ]),
        ..Default::default()
    });
    let touch = |p: &std::path::Path| {
        let f = std::fs::File::options().append(true).open(p).unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
    };
    touch(&s.models.join("hamlet-qnetwork-s1.onnx"));
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    assert_eq!(
        ws.expect("connected", T).await["model"],
        "hamlet-default.onnx"
    );
    assert_eq!(
        s.get_json("/api/status")["default_model"],
        "hamlet-default.onnx"
    );

    // Without the shipped default: the most recently trained model (metadata), not the newest file.
    let s = Server::start_with(ServerOpts {
        models: 0,
        copy_models: copy(&["hamlet-qnetwork-s1.onnx", "hamlet-dueling-s1.onnx"]),
        ..Default::default()
    });
    touch(&s.models.join("hamlet-qnetwork-s1.onnx"));
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    assert_eq!(
        ws.expect("connected", T).await["model"],
        "hamlet-dueling-s1.onnx"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_joiner_gets_the_episode_being_run_and_the_averages() {
    let s = Server::start();
    let mut a = Ws::connect(&s.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send(
        json!({"command":"start_training","num_episodes":100000,"max_steps":40,"batch_size":8,
                  "step_delay":0.002,"show_every":1,"seed":6}),
    )
    .await;
    a.expect("training_started", T).await;
    a.expect_where("episode 2", LONG, |v| {
        v["type"] == "episode_complete" && v["episode"] == 2
    })
    .await;
    a.send(json!({"command":"pause"})).await;
    a.expect("paused", T).await;
    // Once paused, the last finished episode is known to the server: a late joiner arrives.
    s.wait_for("the run to rest", T, |s| {
        let t = &s.get_json("/api/status")["training"];
        t["paused"] == true && t["episodes_completed"].as_u64().is_some_and(|e| e >= 2)
    });
    let mut late = Ws::connect(&s.url("/ws/training")).await.unwrap();
    let st = late.expect("training_status", T).await;
    let done = st["last_episode"]["episode"].as_u64().unwrap();
    assert_eq!(st["current_episode"].as_u64().unwrap(), done + 1, "{st}");
    for k in [
        "avg_reward_5",
        "avg_length_5",
        "avg_loss_5",
        "reward",
        "length",
    ] {
        assert!(st["last_episode"][k].is_number(), "{k}: {st}");
    }
    // The next episode to complete is the one the status called current.
    a.send(json!({"command":"resume"})).await;
    let next = late.expect("episode_complete", LONG).await;
    assert_eq!(next["episode"].as_u64().unwrap(), done + 1);
    a.send(json!({"command":"stop"})).await;
    a.expect("training_complete", LONG).await;
}
