//! The cluster where features meet (issue 31), for real (`redis-server`, metaserver nodes on their
//! own loopback addresses): a watch link opened on another node never takes the session; two
//! resumes of one session on one node keep it; a store that fails and comes back.

use hamlet_tests::cluster::*;
use hamlet_tests::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// (episode, step) of a `state_update`.
fn at(v: &Value) -> (u64, u64) {
    (v["episode"].as_u64().unwrap(), v["step"].as_u64().unwrap())
}

/// Reads `ws` for `secs`: the positions of its frames, and the close code if it was closed.
async fn frames_for(ws: &mut Ws, secs: f64) -> (HashSet<(u64, u64)>, Option<u16>) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut seen = HashSet::new();
    while Instant::now() < end {
        match ws.next(end.saturating_duration_since(Instant::now())).await {
            Ok(v) if v["type"] == "state_update" => {
                seen.insert(at(&v));
            }
            Ok(v) if v["type"] == "connected" => ws.connected_seen = true,
            Ok(_) => {}
            // A timeout at the end of the window, or the connection closed (its code kept).
            Err(_) => break,
        }
        ws.seen.clear();
    }
    (seen, ws.closed.as_ref().map(|c| c.0))
}

/// The teacher's session runs on node 1 at speed 10; its watch link is opened on nodes 2 and 3
/// (behind a load balancer, watchers land anywhere). The watchers see the owner's frames through
/// Redis — at least 95 % of them over five seconds — with its settings, and the owner is never
/// taken over (4001): a watch token does not claim.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_on_other_nodes_see_the_owners_frames_and_never_take_the_session() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 3, &[]);
    let mut owner = Ws::connect(&nodes[0].url("/ws")).await.unwrap();
    let c = owner.expect("connected", T).await;
    owner.expect("state_update", T).await;
    let link = c["watch_token"].as_str().unwrap().to_owned();
    let mut watchers = Vec::new();
    for n in &nodes[1..] {
        let mut w = Ws::connect(&n.url(&format!("/ws?watch={link}")))
            .await
            .unwrap();
        let wc = w.expect("connected", T).await;
        assert_eq!(wc["watching"], c["session_id"]);
        assert_eq!(wc["read_only"], true);
        w.expect("state_update", T).await;
        watchers.push(w);
    }
    // The owner's node learns it is watched from elsewhere within the request period.
    owner.send(json!({"command":"set_speed","speed":10})).await;
    for w in &mut watchers {
        let st = w.expect("settings", Duration::from_secs(10)).await;
        assert_eq!(st["speed"], 10.0, "{st}");
    }
    owner.send(json!({"command":"play"})).await;
    let (own, mine, theirs) = {
        let (a, b) = watchers.split_at_mut(1);
        tokio::join!(
            frames_for(&mut owner, 5.0),
            frames_for(&mut a[0], 5.5),
            frames_for(&mut b[0], 5.5)
        )
    };
    let (own, own_close) = own;
    assert_eq!(own_close, None, "the owner was closed");
    assert!(own.len() >= 300, "the owner played: {} frames", own.len());
    for (i, (seen, closed)) in [mine, theirs].into_iter().enumerate() {
        assert_eq!(closed, None, "watcher {i} was closed");
        let share = own.intersection(&seen).count() as f64 / own.len() as f64;
        eprintln!(
            "figures: watcher on node {}: {:.1} % of the owner's {} frames",
            i + 2,
            share * 100.0,
            own.len()
        );
        assert!(
            share >= 0.95,
            "watcher on node {}: {:.1} %",
            i + 2,
            share * 100.0
        );
    }
    // A watcher's command is refused; the owner keeps its session.
    watchers[0].send(json!({"command":"pause"})).await;
    assert_eq!(watchers[0].expect("error", T).await["code"], "read_only");
    let u = owner.expect("state_update", T).await;
    assert!(u["step"].as_u64().is_some());
    assert!(owner.seen.iter().all(|m| m["code"] != "session_taken_over"));
    drop((redis, nodes));
}

/// A watch link of a session whose owner has left shows the session as it was left, paused;
/// when the owner resumes it on another node, the watcher follows its frames from there.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_of_a_detached_session_waits_and_follows_its_resume_elsewhere() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 3, &[]);
    let mut owner = Ws::connect(&nodes[0].url("/ws")).await.unwrap();
    let c = owner.expect("connected", T).await;
    let (token, link) = (
        c["resume_token"].as_str().unwrap().to_owned(),
        c["watch_token"].as_str().unwrap().to_owned(),
    );
    for _ in 0..5 {
        owner.send(json!({"command":"step"})).await;
        owner.expect("state_update", T).await;
    }
    owner.ws.close(None).await.ok();
    // Put away: the node runs no worker for it, Redis has it.
    nodes[0].wait_for("the session detached", T, |s| {
        s.get_json("/api/status")["sessions"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    let mut w = Ws::connect(&nodes[2].url(&format!("/ws?watch={link}")))
        .await
        .unwrap();
    w.expect("connected", T).await;
    assert_eq!(
        w.expect("state_update", T).await["step"],
        5,
        "the session as it was left"
    );
    assert!(
        nodes[2].get_json("/api/status")["sessions"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a watcher starts no session"
    );
    let mut back = Ws::connect(&nodes[1].url(&format!("/ws?resume={token}")))
        .await
        .unwrap();
    assert_eq!(back.expect("connected", T).await["resumed"], true);
    back.expect("state_update", T).await;
    // The owner plays on node 2; the watcher on node 3 follows from step 6 on.
    back.send(json!({"command":"set_speed","speed":10})).await;
    back.send(json!({"command":"play"})).await;
    let u = w
        .expect_where("a frame from the resumed session", LONG, |m| {
            m["type"] == "state_update" && m["step"].as_u64().is_some_and(|s| s > 5)
        })
        .await;
    assert_eq!(u["episode"], 1, "{u}");
}

/// A watcher waiting on node 3 for a session that runs elsewhere, whose owner then resumes it on
/// node 3 itself: the watcher keeps seeing its frames. (Found by the cluster's chaos run: such a
/// watcher stayed subscribed to the session's channel, where nobody published any more — a node
/// does not answer its own requests — and saw nothing for as long as the session stayed there.
/// Now the node asks it to reconnect, 1012, and it comes back as a watcher of the live session.)
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_keeps_its_frames_when_the_session_moves_onto_its_node() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 3, &[]);
    let mut owner = Ws::connect(&nodes[0].url("/ws")).await.unwrap();
    let c = owner.expect("connected", T).await;
    let (token, link) = (
        c["resume_token"].as_str().unwrap().to_owned(),
        c["watch_token"].as_str().unwrap().to_owned(),
    );
    owner.send(json!({"command":"set_speed","speed":10})).await;
    owner.send(json!({"command":"play"})).await;
    let watch_url = nodes[2].url(&format!("/ws?watch={link}"));
    let mut w = Ws::connect(&watch_url).await.unwrap();
    w.expect("connected", T).await;
    w.expect_where("frames through Redis", T, |m| {
        m["type"] == "state_update" && m["step"].as_u64() > Some(1)
    })
    .await;
    // The owner's duplicated tab lands on node 3: it takes the session there.
    let mut moved = Ws::connect(&nodes[2].url(&format!("/ws?resume={token}")))
        .await
        .unwrap();
    assert_eq!(moved.expect("connected", T).await["resumed"], true);
    moved.send(json!({"command":"set_speed","speed":10})).await;
    moved.send(json!({"command":"play"})).await;
    // The watcher, asked to reconnect (as a browser's page does at once), sees the session play
    // on: frames for three seconds, from the node it is on.
    let mut w = match w.expect_close(T).await {
        1012 => Ws::connect(&watch_url).await.unwrap(),
        other => panic!("the watcher was closed with {other}"),
    };
    w.expect("connected", T).await;
    let (frames, closed) = frames_for(&mut w, 3.0).await;
    assert_eq!(closed, None);
    assert!(
        frames.len() >= 200,
        "{} frames in 3 s at speed 10",
        frames.len()
    );
}

/// Two resumes of one session on one node at once (a duplicated tab — sessionStorage is copied —
/// or a double reconnect): both claim it in Redis, one task keeps it with the newest claim, the
/// later connection takes over (4001 to the earlier) and keeps playing; the session is never
/// evicted.
#[tokio::test(flavor = "multi_thread")]
async fn two_resumes_at_once_on_one_node_keep_the_session() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let mut owner = Ws::connect(&nodes[0].url("/ws")).await.unwrap();
    let token = owner.expect("connected", T).await["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();
    owner.ws.close(None).await.ok();
    nodes[0].wait_for("the session detached", T, |s| {
        s.get_json("/api/status")["sessions"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    for round in 0..3 {
        let url = nodes[1].url(&format!("/ws?resume={token}"));
        let (a, b) = tokio::join!(Ws::connect(&url), Ws::connect(&url));
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        // Both asked; whichever the task took last owns the session now. (The one taken over may
        // be told so before its `connected`.)
        let (ra, rb) = tokio::join!(frames_for(&mut a, 3.0), frames_for(&mut b, 3.0));
        let closed: Vec<Option<u16>> = vec![ra.1, rb.1];
        assert_eq!(
            closed.iter().filter(|c| **c == Some(4001)).count(),
            1,
            "round {round}: exactly one connection is taken over: {closed:?}"
        );
        let mut keeper = if ra.1.is_none() { a } else { b };
        assert!(
            keeper.connected_seen,
            "round {round}: the keeper got its connected"
        );
        keeper.send(json!({"command":"step"})).await;
        let u = keeper.expect("state_update", T).await;
        assert!(
            u["step"].as_u64().is_some(),
            "round {round}: the keeper steps: {u}"
        );
        let ids = nodes[1].get_json("/api/status")["sessions"].clone();
        assert_eq!(ids.as_array().unwrap().len(), 1, "one task: {ids}");
        keeper.ws.close(None).await.ok();
        nodes[1].wait_for("put away again", T, |s| {
            s.get_json("/api/status")["sessions"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        });
    }
}

/// A session put away while Redis is down is not lost: its node keeps it and retries, and once
/// Redis is back (empty) the session is written and resumes on another node at its step.
#[tokio::test(flavor = "multi_thread")]
async fn a_detach_while_redis_is_down_is_written_when_it_returns() {
    let mut redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let pending = |s: &Server| s.metric("hamlet_store_writes_pending");
    let mut owner = Ws::connect(&nodes[0].url("/ws")).await.unwrap();
    let token = owner.expect("connected", T).await["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..7 {
        owner.send(json!({"command":"step"})).await;
        owner.expect("state_update", T).await;
    }
    redis.kill9();
    owner.ws.close(None).await.ok();
    nodes[0].wait_for("a pending write", T, |s| pending(s) == 1.0);
    redis.restart();
    nodes[0].wait_for("the write retried", LONG, |s| pending(s) == 0.0);
    let mut back = Ws::connect(&nodes[1].url(&format!("/ws?resume={token}")))
        .await
        .unwrap();
    let c = back.expect("connected", T).await;
    assert_eq!(c["resumed"], true, "{c}");
    assert_eq!(back.expect("state_update", T).await["step"], 7);
}

fn training_started_here(v: &mut Ws) -> impl std::future::Future<Output = Value> + '_ {
    v.expect("training_started", T)
}

const RUN: &str = r#"{"command":"start_training","num_episodes":100000,"max_steps":40,
    "batch_size":8,"step_delay":0,"show_every":1000,"checkpoint_every":2,"seed":9}"#;

/// The training holder is cut off from Redis; its lease expires and another node continues the
/// run, which is stopped and forgotten there. When the cut-off node is back in touch it can write
/// nothing of the run — its checkpoint, record, control hash and status are all fenced by the
/// lease — so the finished run is not recreated, and it lets its worker go.
#[tokio::test(flavor = "multi_thread")]
async fn a_healed_stale_holder_cannot_recreate_a_finished_run() {
    let redis = Redis::start();
    let link = CutLink::to(redis.port);
    let holder = Server::start_with(node_opts(&link.url(), 1, &[]));
    let other = Server::start_with(node_opts(&redis.url(), 2, &[]));
    let mut a = Ws::connect(&holder.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send_text(RUN).await;
    training_started_here(&mut a).await;
    a.expect_where("episode 4", LONG, |f| {
        f["type"] == "episode_complete" && f["episode"] == 4
    })
    .await;
    let mut b = Ws::connect(&other.url("/ws/training")).await.unwrap();
    b.expect("training_status", T).await;
    link.cut();
    // The lease expires (5 s); node2 takes the run over from its checkpoint and stops it.
    b.expect("training_restarted", LONG).await;
    b.send(json!({"command":"stop"})).await;
    b.expect("training_complete", LONG).await;
    other.wait_for("the run forgotten in redis", T, |_| {
        redis.cmd(&["EXISTS", "hamlet:training:run"]) == "0"
    });
    link.heal();
    // Back in touch: its lease renewal fails and it stops its worker; nothing it had queued is
    // written.
    holder.wait_for("the stale holder's worker stopped", LONG, |s| {
        s.get_json("/api/status")["training"]["worker_pid"].is_null()
    });
    for _ in 0..3 {
        // Time for any queued write to be tried (the sharer writes as soon as Redis answers).
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            redis.cmd(&["EXISTS", "hamlet:training:run"]),
            "0",
            "the finished run came back"
        );
        assert_eq!(redis.cmd(&["EXISTS", "hamlet:training:lease"]), "0");
    }
    // A new run starts normally.
    b.send_text(RUN).await;
    training_started_here(&mut b).await;
}

/// The run's user pauses it; the holder then loses Redis for a moment (its lease cannot be
/// renewed, so it would pause the run itself) and gets it back: the run stays paused, because the
/// pause was the user's.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_pause_survives_a_lease_flap() {
    let redis = Redis::start();
    let link = CutLink::to(redis.port);
    let holder = Server::start_with(node_opts(&link.url(), 1, &[]));
    let mut a = Ws::connect(&holder.url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    a.send_text(RUN).await;
    training_started_here(&mut a).await;
    a.expect("episode_complete", LONG).await;
    a.send(json!({"command":"pause"})).await;
    a.expect("paused", T).await;
    link.cut();
    // Less than the lease's 5 s: the lease is still ours when Redis answers again.
    std::thread::sleep(Duration::from_secs(3));
    link.heal();
    holder.wait_for("redis reachable again", T, |s| {
        s.get_json("/api/status")["cluster"]["redis_reachable"] == true
    });
    // Two renewals later the run is still paused, and no `resumed` was broadcast.
    std::thread::sleep(Duration::from_secs(2));
    let st = holder.get_json("/api/status")["training"].clone();
    assert_eq!(st["paused"], true, "{st}");
    a.send(json!({"command":"status"})).await;
    assert_eq!(a.expect("training_status", T).await["paused"], true);
    assert!(
        a.seen.iter().all(|m| m["type"] != "resumed"),
        "the user's pause was undone"
    );
    a.send(json!({"command":"resume"})).await;
    a.expect("resumed", T).await;
}

/// Redis restarts empty under a running run: the holder finds neither its lease nor the run, ends
/// the run on its side and tells its viewers; a new run then starts, also from another node.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_empty_ends_the_run_and_a_new_one_starts() {
    let mut redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let mut a = Ws::connect(&nodes[0].url("/ws/training")).await.unwrap();
    let mut b = Ws::connect(&nodes[1].url("/ws/training")).await.unwrap();
    a.expect("training_status", T).await;
    b.expect("training_status", T).await;
    a.send_text(RUN).await;
    training_started_here(&mut a).await;
    training_started_here(&mut b).await;
    a.expect("episode_complete", LONG).await;
    redis.restart();
    let e = a.expect("error", LONG).await;
    assert_eq!(e["code"], "training_failed", "{e}");
    let st = a.expect("training_status", T).await;
    assert_eq!(st["is_training"], false, "{st}");
    // The other node's viewer starts a new run (its mirror said one was running: it learns the
    // run is gone, and is not told one is in progress).
    b.send_text(RUN).await;
    let started = b
        .expect_where("a new run", LONG, |m| {
            m["type"] == "training_started" || m["code"] == "training_in_progress"
        })
        .await;
    assert_eq!(started["type"], "training_started", "{started}");
}

/// The fence itself, against a real Redis: a holder whose lease has passed to another node (or
/// expired) can write nothing of the run — not its record, even after the record was deleted
/// (a finished run), nor the control hash or status — while the lease's holder can.
#[tokio::test(flavor = "multi_thread")]
async fn every_write_of_the_run_is_fenced_by_the_lease() {
    use metaserver::cluster::training::ClusterTraining;
    use metaserver::cluster::Cluster;
    use metaserver::resumable::ResumableRun;
    let redis = Redis::start();
    let stale = ClusterTraining::new(Cluster::new(&redis.url(), "stale".into()).unwrap(), None);
    let fresh = ClusterTraining::new(Cluster::new(&redis.url(), "fresh".into()).unwrap(), None);
    let run = ResumableRun {
        config: ipc_proto::training::TrainingConfig::default(),
        paused: false,
        episodes_completed: 0,
        control_hash: Some(metaserver::tokens::TokenHash::of("secret")),
        handed_over: false,
    };
    let old = stale.lease.acquire().await.unwrap().expect("the lease");
    assert!(stale.save_run(&run).await, "the holder writes");
    assert_eq!(
        redis.cmd(&["HGET", "hamlet:training:run", "fence"]),
        old.to_string()
    );
    // The stale holder's lease expires (it was cut off); another node takes it, finishes the run.
    redis.cmd(&["DEL", "hamlet:training:lease"]);
    let new = fresh.lease.acquire().await.unwrap().expect("the lease");
    assert!(new > old);
    fresh.finish_run().await;
    assert_eq!(redis.cmd(&["EXISTS", "hamlet:training:run"]), "0");
    // The stale holder, back in touch and not yet aware, tries every write it makes.
    assert!(
        !stale.save_run(&run).await,
        "a record written without the lease"
    );
    stale.set_status("{\"is_training\":true}".into()).await;
    assert_eq!(
        redis.cmd(&["EXISTS", "hamlet:training:run"]),
        "0",
        "the finished run came back"
    );
    assert_eq!(redis.cmd(&["EXISTS", "hamlet:training:status"]), "0");
    assert_eq!(redis.cmd(&["EXISTS", "hamlet:training:control"]), "0");
    // Even with nobody holding the lease, nothing is written.
    redis.cmd(&["DEL", "hamlet:training:lease"]);
    assert!(!stale.save_run(&run).await);
    assert_eq!(redis.cmd(&["EXISTS", "hamlet:training:run"]), "0");
}

/// Redis as a guarded part: a node reaches a password-protected `redis-server` with the password
/// in its URL, and the password appears in no log line and no answer; a wrong password is a clear
/// refusal, never a crash.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_protected_redis_is_used_and_its_password_never_shown() {
    let redis = Redis::start_with_password(Some("pw-Z9x-never-shown"));
    let log = temp_dir("pw-log").join("node1.log");
    let mut opts = node_opts(&redis.url(), 1, &[]);
    opts.log_file = Some(log.clone());
    let node = Server::start_with(opts);
    let mut ws = Ws::connect(&node.url("/ws")).await.unwrap();
    let id = ws.expect("connected", T).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ws.expect("state_update", T).await;
    node.wait_for("the session in redis", T, |_| {
        redis.cmd(&["EXISTS", &format!("hamlet:sess:{id}")]) == "1"
    });
    let status = node.get("/api/status").1;
    assert!(status.contains("\"redis_reachable\":true"), "{status}");
    for text in [
        status,
        std::fs::read_to_string(&log).unwrap(),
        node.get("/metrics").1,
    ] {
        assert!(
            !text.contains("pw-Z9x-never-shown"),
            "the password was shown"
        );
    }
    // Without the password Redis refuses the node; it keeps serving its sessions and says so.
    let wrong = Server::start_with(node_opts(
        &format!("redis://:wrong@127.0.0.1:{}/0", redis.port),
        2,
        &[],
    ));
    wrong.wait_for("redis marked unreachable", T, |s| {
        s.get_json("/api/status")["cluster"]["redis_reachable"] == false
    });
    let mut w = Ws::connect(&wrong.url("/ws")).await.unwrap();
    w.expect("connected", T).await;
}

/// Whatever is written into Redis is checked as browser input is: a forged model never reaches a
/// node's disk or its model list, and a forged training frame never reaches a viewer as it was
/// sent (only a message a viewer may get, encoded again).
#[tokio::test(flavor = "multi_thread")]
async fn forged_models_and_frames_in_redis_are_refused() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 1, &[]);
    redis.cmd(&[
        "HSET",
        "hamlet:models",
        "forged.onnx",
        "this is not an ONNX model",
    ]);
    redis.cmd(&["HSET", "hamlet:models", "../../escape.onnx", "x"]);
    // A good model published after the forged ones: once the node has it, its sync has seen
    // (and judged) every name before it.
    let good = nodes[0].models.join("hamlet-default.onnx");
    redis.hset_file("hamlet:models", "from-elsewhere.onnx", &good);
    let deadline = std::time::Instant::now() + T;
    while !nodes[0].models.join("from-elsewhere.onnx").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the good model never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !nodes[0].models.join("forged.onnx").exists(),
        "a forged model reached the disk"
    );
    let listed = nodes[0].get_json("/api/models")["models"].clone();
    assert!(!listed.to_string().contains("forged"), "{listed}");
    assert!(!nodes[0]
        .models
        .parent()
        .unwrap()
        .join("escape.onnx")
        .exists());
    let mut v = Ws::connect(&nodes[0].url("/ws/training")).await.unwrap();
    v.expect("training_status", T).await;
    for forged in [
        "othernode\n<script>alert(1)</script>",
        "othernode\n{\"type\":\"connected\",\"available_models\":[],\"session_id\":\"x\",\"model\":null,\"playing\":true,\"speed\":1,\"max_steps\":5,\"resume_token\":\"stolen\"}",
        "othernode\n{\"type\":\"paused\",\"injected\":\"<b>extra</b>\"}",
    ] {
        redis.cmd(&["PUBLISH", "hamlet:training:frames", forged]);
    }
    let m = v.expect("paused", T).await;
    assert!(
        m.get("injected").is_none(),
        "re-encoded, not forwarded: {m}"
    );
    assert!(
        v.seen.iter().all(|m| m["type"] != "connected"),
        "{:?}",
        v.seen
    );
}

/// `--max-detached` holds across the cluster: sessions put away on two nodes count together, and
/// the oldest beyond the limit are forgotten first.
#[tokio::test(flavor = "multi_thread")]
async fn max_detached_holds_across_the_cluster() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &["--max-detached", "2"]);
    let mut tokens = Vec::new();
    for n in [0, 0, 1, 1] {
        let mut ws = Ws::connect(&nodes[n].url("/ws")).await.unwrap();
        tokens.push(
            ws.expect("connected", T).await["resume_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        ws.expect("state_update", T).await;
        ws.ws.close(None).await.ok();
        nodes[n].wait_for("put away", T, |s| {
            s.get_json("/api/status")["sessions"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        });
        // Saved-at times in milliseconds: one apart is enough to order them.
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes[0].wait_for("the oldest forgotten", T, |_| {
        redis.cmd(&["ZCARD", "hamlet:detached"]) == "2"
    });
    for (i, want) in [(0, false), (1, false), (2, true), (3, true)] {
        let mut ws = Ws::connect(&nodes[0].url(&format!("/ws?resume={}", tokens[i])))
            .await
            .unwrap();
        assert_eq!(
            ws.expect("connected", T).await["resumed"],
            want,
            "session {i}"
        );
    }
}
