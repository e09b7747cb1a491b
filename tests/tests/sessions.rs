//! Sessions that outlive their connection and their server; read-only watch links
//! (sessions.md, "What is tested"). Real metaserver, real workers, a real store directory.

use hamlet_tests::play::{essence, last_frame, open_session, step};
use hamlet_tests::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// A store directory outside any one server's temporary directory, so a second server can use it.
fn shared_store(tag: &str) -> PathBuf {
    temp_dir(tag).join("state")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_resumes_the_same_session_on_the_same_trajectory() {
    let s = Server::start();
    let (mut a, c) = open_session(&s, "").await;
    let token = c["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    assert_eq!(c["resumed"], false);
    assert!(c["watch_token"].as_str().is_some_and(|w| w != token));
    a.expect("state_update", T).await;
    let before = step(&mut a, 40).await;
    a.drop_connection();
    // The session was put away: no process, a stored snapshot.
    s.wait_for("the session to be detached", T, |s| {
        let st = s.get_json("/api/status");
        st["detached"].as_array().is_some_and(|d| d.len() == 1)
            && st["sessions"].as_array().is_some_and(|x| x.is_empty())
    });
    let (mut b, c2) = open_session(&s, &format!("?resume={token}")).await;
    assert_eq!(c2["resumed"], true);
    assert_eq!(c2["session_id"], c["session_id"]);
    assert_eq!(c2["resume_token"], token.as_str());
    assert_eq!(c2["watch_token"], c["watch_token"]);
    let now = b.expect("state_update", T).await;
    assert_eq!(
        essence(&now),
        essence(before.last().unwrap()),
        "resumed where it was"
    );
    let after = step(&mut b, 30).await;
    // The same steps in one uninterrupted session.
    let (mut r, _) = open_session(&s, "").await;
    r.expect("state_update", T).await;
    let replay = step(&mut r, 70).await;
    let resumed: Vec<Value> = before.iter().chain(&after).map(essence).collect();
    let straight: Vec<Value> = replay.iter().map(essence).collect();
    assert_eq!(resumed, straight);
    assert_eq!(s.metric("hamlet_sessions_resumed_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_malformed_and_expired_tokens_get_a_fresh_session() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--resume-window-secs".into(), "1".into()],
        ..Default::default()
    });
    for bad in ["AAAAAAAAAAAAAAAAAAAAAA", "../../etc/passwd", "x"] {
        let (_ws, c) = open_session(&s, &format!("?resume={bad}")).await;
        assert_eq!(c["resumed"], false, "{bad}");
        assert_eq!(c["resume_error"], "unknown_or_expired", "{bad}");
        assert!(c["resume_token"].as_str().is_some_and(|t| t != bad));
    }
    let (ws, c) = open_session(&s, "").await;
    let token = c["resume_token"].as_str().unwrap().to_owned();
    drop(ws);
    s.wait_for(
        "the window to pass and the entry to go",
        Duration::from_secs(10),
        |s| s.metric("hamlet_sessions_expired_total") >= 1.0,
    );
    let (_ws, c2) = open_session(&s, &format!("?resume={token}")).await;
    assert_eq!(c2["resumed"], false);
    assert_eq!(c2["resume_error"], "unknown_or_expired");
    assert_ne!(c2["session_id"], c["session_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_connection_with_the_token_takes_the_session_over() {
    let s = Server::start();
    let (mut a, c) = open_session(&s, "").await;
    let token = c["resume_token"].as_str().unwrap().to_owned();
    a.expect("state_update", T).await;
    step(&mut a, 5).await;
    let (mut b, c2) = open_session(&s, &format!("?resume={token}")).await;
    assert_eq!(c2["session_id"], c["session_id"]);
    assert_eq!(c2["resumed"], true);
    assert_eq!(a.expect("error", T).await["code"], "session_taken_over");
    assert_eq!(a.expect_close(T).await, 4001);
    assert_eq!(b.expect("state_update", T).await["step"], 5);
    assert_eq!(step(&mut b, 1).await[0]["step"], 6);
    assert_eq!(s.metric("hamlet_sessions_taken_over_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_see_the_owners_frames_in_order_and_cannot_command() {
    let s = Server::start();
    let (mut owner, c) = open_session(&s, "").await;
    let (token, watch) = (
        c["resume_token"].as_str().unwrap().to_owned(),
        c["watch_token"].as_str().unwrap().to_owned(),
    );
    owner.expect("state_update", T).await;
    step(&mut owner, 3).await;
    let (mut w, wc) = open_session(&s, &format!("?watch={watch}")).await;
    assert_eq!(wc["watching"], c["session_id"]);
    assert_eq!(wc["read_only"], true);
    assert!(
        wc.get("resume_token").is_none() && wc.get("watch_token").is_none(),
        "{wc}"
    );
    assert_eq!(
        w.expect("state_update", T).await["step"],
        3,
        "the current frame at once"
    );
    // Commands are refused, status answered.
    w.send(json!({"command":"play"})).await;
    assert_eq!(w.expect("error", T).await["code"], "read_only");
    w.send(json!({"command":"status"})).await;
    assert_eq!(w.expect("session_status", T).await["step"], 3);
    let owned = step(&mut owner, 10).await;
    let mut watched = Vec::new();
    for _ in 0..10 {
        watched.push(essence(&w.expect("state_update", T).await));
    }
    assert_eq!(watched, owned.iter().map(essence).collect::<Vec<_>>());
    // The owner leaves and comes back: the watcher keeps watching.
    owner.drop_connection();
    s.wait_for("the owner to be seen gone", T, |s| {
        s.get_json("/api/status")["sessions"][0]["attached"] == false
    });
    assert_eq!(s.get_json("/api/status")["sessions_watched"], 1);
    let (mut back, c2) = open_session(&s, &format!("?resume={token}")).await;
    assert_eq!(c2["session_id"], c["session_id"]);
    back.expect("state_update", T).await;
    step(&mut back, 2).await;
    assert_eq!(w.expect("state_update", T).await["step"], 14);
    // A link that leads nowhere says so.
    let mut bad = Ws::connect(&s.url("/ws?watch=AAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .unwrap();
    assert_eq!(bad.expect("error", T).await["code"], "unknown_watch_link");
}

/// The server restarts (SIGTERM): every browser is told 1012, and a new server on the same store
/// gives each session back at the step it had, playing as it was.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_restart_resume_all_sixteen_playing_sessions_at_their_step() {
    let store = shared_store("restart");
    let mut s = Server::start_with(ServerOpts::on_store(&store, &[]));
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let (mut ws, c) = open_session(&s, "").await;
        ws.send(json!({"command":"set_speed","speed":10})).await;
        ws.send(json!({"command":"play"})).await;
        sessions.push((
            ws,
            c["resume_token"].as_str().unwrap().to_owned(),
            c["session_id"].clone(),
        ));
    }
    for (ws, _, _) in &mut sessions {
        ws.expect_where("a few steps", T, |v| {
            v["type"] == "state_update" && v["step"].as_u64() >= Some(5)
        })
        .await;
    }
    let stopping = tokio::task::spawn_blocking(move || {
        let code = s.terminate();
        (code, s)
    });
    let mut last_steps = Vec::new();
    for (ws, _, _) in &mut sessions {
        assert_eq!(ws.expect_close(T).await, 1012);
        let last = last_frame(ws);
        last_steps.push((last["episode"].clone(), last["step"].clone()));
    }
    let (code, old) = stopping.await.unwrap();
    assert_eq!(code, Some(0));
    drop(old);
    let s2 = Server::start_with(ServerOpts::on_store(&store, &[]));
    for ((_, token, id), (episode, step)) in sessions.iter().zip(&last_steps) {
        let (mut ws, c) = open_session(&s2, &format!("?resume={token}")).await;
        assert_eq!(c["resumed"], true);
        assert_eq!(&c["session_id"], id);
        assert_eq!(c["playing"], true, "it keeps playing");
        let f = ws.expect("state_update", T).await;
        assert_eq!(
            (&f["episode"], &f["step"]),
            (episode, step),
            "resumed at the step it had"
        );
        ws.expect_where("the next step", T, |v| {
            v["type"] == "state_update" && v["step"].as_u64() > step.as_u64()
        })
        .await;
    }
    drop(s2);
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}

/// SIGKILL of the server: nothing is flushed at the end, so the rewind is what the periodic
/// flush bounds — at most one `--snapshot-flush-ms` interval of steps (plus the write itself).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_and_restart_rewind_at_most_one_flush_interval() {
    let store = shared_store("kill");
    let flush_ms = 250u64;
    let mut s = Server::start_with(ServerOpts::on_store(
        &store,
        &["--snapshot-flush-ms", "250"],
    ));
    let (mut ws, c) = open_session(&s, "").await;
    let token = c["resume_token"].as_str().unwrap().to_owned();
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    ws.expect_where("a second of play", T, |v| {
        v["type"] == "state_update" && v["step"].as_u64() >= Some(100)
    })
    .await;
    s.kill9();
    let last = ws
        .seen
        .iter()
        .rev()
        .find(|v| v["type"] == "state_update")
        .unwrap()["step"]
        .as_u64()
        .unwrap();
    let s2 = Server::start_with(ServerOpts::on_store(&store, &[]));
    let (mut ws2, c2) = open_session(&s2, &format!("?resume={token}")).await;
    assert_eq!(c2["resumed"], true, "{c2}");
    let resumed = ws2.expect("state_update", T).await["step"]
        .as_u64()
        .unwrap();
    // Speed 10 is a step every 10 ms: one flush interval, plus 100 ms for the write, in steps.
    let bound = (flush_ms + 100) / 10;
    assert!(
        resumed <= last && last - resumed <= bound,
        "last seen step {last}, resumed at {resumed}: rewind over {bound} steps"
    );
    drop(s2);
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}

/// Tokens are secrets: not in the log (at debug level) and not in any HTTP answer.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_appear_in_no_log_line_and_no_http_answer() {
    let dir = temp_dir("tokens-log");
    let log = dir.join("metaserver.log");
    let s = Server::start_with(ServerOpts {
        log_file: Some(log.clone()),
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Default::default()
    });
    let (mut a, c) = open_session(&s, "").await;
    let token = c["resume_token"].as_str().unwrap().to_owned();
    let watch = c["watch_token"].as_str().unwrap().to_owned();
    a.expect("state_update", T).await;
    a.drop_connection();
    let (_b, _) = open_session(&s, &format!("?resume={token}")).await;
    let (_w, _) = open_session(&s, &format!("?watch={watch}")).await;
    // Snapshots are written on the flush clock, not on attach: wait for the first one to land.
    s.wait_for("a snapshot in the store", T, |s| {
        s.metric("hamlet_store_flush_seconds_count") >= 1.0
    });
    // A session's copies begin with a binary header (`slot_file.rs`): read as bytes, shown as
    // text where they are text (the JSON, where a token would be).
    let stored: String = std::fs::read_dir(s.dir.join("state"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned() + &e.file_name().to_string_lossy())
        })
        .collect();
    assert!(
        stored.contains("\"saved_at_ms\""),
        "the stored session was read: {stored:.200}"
    );
    assert!(!stored.is_empty());
    for path in [
        "/",
        "/api/status",
        "/api/models",
        "/api/workers",
        "/api/ready",
        "/api/training/config",
        "/api/training/history",
        "/metrics",
    ] {
        let (code, body) = s.get(path);
        assert_eq!(code, 200, "{path}");
        for secret in [&token, &watch] {
            assert!(!body.contains(secret.as_str()), "{path} shows a token");
        }
    }
    drop(s);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("session task started"),
        "the log was captured"
    );
    for secret in [&token, &watch] {
        assert!(!text.contains(secret.as_str()), "the log shows a token");
        assert!(!stored.contains(secret.as_str()), "the store holds a token");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_puts_sessions_away_and_readiness_follows() {
    let s = Server::start();
    assert_eq!(s.get_json("/api/ready")["ready"], true);
    let (mut a, c) = open_session(&s, "").await;
    a.expect("state_update", T).await;
    step(&mut a, 4).await;
    let (code, _) = http(&s.addr, "POST", "/api/drain", &[]);
    assert_eq!(code, 202);
    assert_eq!(a.expect_close(T).await, 1012);
    let (code, body) = s.get("/api/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("draining"));
    // New sessions go elsewhere; the drained one is in the store for whoever resumes it.
    assert!(Ws::connect(&s.url("/ws")).await.is_err());
    s.wait_for("the session stored", T, |s| {
        s.get_json("/api/status")["detached"][0]["id"] == c["session_id"]
    });
    assert_eq!(s.get_json("/api/status")["detached"][0]["step"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_are_bounded_per_session() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--max-watchers".into(), "1".into()],
        ..Default::default()
    });
    let (mut owner, c) = open_session(&s, "").await;
    owner.expect("state_update", T).await;
    let watch = c["watch_token"].as_str().unwrap().to_owned();
    let (_first, _) = open_session(&s, &format!("?watch={watch}")).await;
    let mut second = Ws::connect(&s.url(&format!("/ws?watch={watch}")))
        .await
        .unwrap();
    assert_eq!(second.expect("error", T).await["code"], "too_many_watchers");
    assert_eq!(second.expect_close(T).await, 1013);
}
