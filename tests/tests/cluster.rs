//! The cluster of cluster.md, for real: a `redis-server` on a free loopback port, metaserver
//! nodes on their own loopback addresses, and HAProxy with the shipped configuration where the
//! test is about routing. Each test is one of cluster.md's failure cases.

use hamlet_tests::cluster::*;
use hamlet_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const FLUSH_MS: u64 = 250;
/// Speed 5: a step every 20 ms.
const SPEED: u64 = 5;
const STEP_MS: u64 = 20;

/// A browser's session as the test follows it.
struct Student {
    ws: Ws,
    token: String,
    id: Value,
}

async fn open(url: &str) -> Student {
    let mut ws = Ws::connect(url).await.unwrap();
    let c = ws.expect("connected", T).await;
    ws.expect("state_update", T).await;
    Student {
        token: c["resume_token"]
            .as_str()
            .expect("a resume token")
            .to_owned(),
        id: c["session_id"].clone(),
        ws,
    }
}

/// (episode, step) of every `state_update` seen.
fn positions(ws: &Ws) -> Vec<(u64, u64)> {
    ws.seen
        .iter()
        .filter(|v| v["type"] == "state_update")
        .map(|v| (v["episode"].as_u64().unwrap(), v["step"].as_u64().unwrap()))
        .collect()
}

/// The next `n` frames continue one step at a time (or start the next episode).
async fn continues(ws: &mut Ws, from: (u64, u64), n: usize) {
    let mut at = from;
    for _ in 0..n {
        let f = ws.expect("state_update", T).await;
        let now = (f["episode"].as_u64().unwrap(), f["step"].as_u64().unwrap());
        assert!(follows(at, now), "{at:?} then {now:?}");
        at = now;
    }
}

/// Which node runs each session now (index into `nodes`).
fn homes(nodes: &[&Server], ids: &[Value]) -> Vec<Option<usize>> {
    let listed: Vec<Vec<Value>> = nodes
        .iter()
        .map(|n| {
            n.get_json("/api/status")["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].clone())
                .collect()
        })
        .collect();
    ids.iter()
        .map(|id| listed.iter().position(|l| l.contains(id)))
        .collect()
}

async fn play(s: &mut Student) {
    s.ws.send(json!({"command":"set_speed","speed":SPEED}))
        .await;
    s.ws.send(json!({"command":"play"})).await;
}

/// Waits until the browser's connection ends (its node died or closed it).
async fn until_closed(ws: &mut Ws) {
    while ws.next(T).await.is_ok() {}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_sessions_resume_on_the_others_through_haproxy() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis, 3, &["--snapshot-flush-ms", "250"]);
    let lb = Haproxy::start(&nodes.iter().collect::<Vec<_>>());
    let mut students = Vec::new();
    for _ in 0..24 {
        students.push(open(&lb.url("/ws")).await);
    }
    for s in &mut students {
        play(s).await;
    }
    let ids: Vec<Value> = students.iter().map(|s| s.id.clone()).collect();
    let home = homes(&nodes.iter().collect::<Vec<_>>(), &ids);
    let per_node: Vec<usize> = (0..3)
        .map(|n| home.iter().filter(|h| **h == Some(n)).count())
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 24, "{home:?}");
    assert!(
        per_node.iter().all(|n| *n >= 4),
        "leastconn spreads them: {per_node:?}"
    );
    for s in &mut students {
        s.ws.expect_where("a second of play", T, |v| {
            v["type"] == "state_update" && (v["step"].as_u64() >= Some(40) || v["episode"] != 1)
        })
        .await;
    }
    let victim = (0..3).max_by_key(|n| per_node[*n]).unwrap();
    nodes[victim].kill9();
    let bound = ((FLUSH_MS + 150) / STEP_MS) as usize;
    let mut rewinds = Vec::new();
    for (s, h) in students.iter_mut().zip(&home) {
        if *h != Some(victim) {
            continue;
        }
        until_closed(&mut s.ws).await;
        let seen = positions(&s.ws);
        let mut ws = Ws::connect(&lb.url(&format!("/ws?resume={}", s.token)))
            .await
            .unwrap();
        let c = ws.expect("connected", T).await;
        assert_eq!(c["resumed"], true, "{c}");
        assert_eq!(c["session_id"], s.id);
        let f = ws.expect("state_update", T).await;
        let at = (f["episode"].as_u64().unwrap(), f["step"].as_u64().unwrap());
        let r = rewind(&seen, at).unwrap();
        assert!(r <= bound, "rewound {r} frames (bound {bound})");
        rewinds.push(r);
        continues(&mut ws, at, 10).await;
        s.ws = ws;
    }
    assert_eq!(rewinds.len(), per_node[victim]);
    // The others never noticed: still connected, still playing (frames read late may have been
    // dropped for them while the test attended to the others, so only progress is checked).
    for (s, h) in students.iter_mut().zip(&home) {
        if *h != Some(victim) {
            let (e, st) = *positions(&s.ws).last().unwrap();
            s.ws.expect_where("more play", T, |v| {
                v["type"] == "state_update"
                    && (v["episode"].as_u64() > Some(e) || v["step"].as_u64() > Some(st))
            })
            .await;
        }
    }
    let survivors: Vec<&Server> = (0..3).filter(|n| *n != victim).map(|n| &nodes[n]).collect();
    let now = homes(&survivors, &ids);
    assert!(
        now.iter().all(Option::is_some),
        "every session runs on a survivor: {now:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_nodes_browsers_resume_elsewhere_at_the_exact_step() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis, 3, &[]);
    let lb = Haproxy::start(&nodes.iter().collect::<Vec<_>>());
    let mut students = Vec::new();
    for _ in 0..9 {
        students.push(open(&lb.url("/ws")).await);
    }
    for s in &mut students {
        play(s).await;
        s.ws.expect_where("play", T, |v| {
            v["type"] == "state_update" && v["step"].as_u64() >= Some(5)
        })
        .await;
    }
    let ids: Vec<Value> = students.iter().map(|s| s.id.clone()).collect();
    let home = homes(&nodes.iter().collect::<Vec<_>>(), &ids);
    let victim = home[0].unwrap();
    assert_eq!(nodes[victim].terminate(), Some(0));
    let mut moved = 0;
    for (s, h) in students.iter_mut().zip(&home) {
        if *h != Some(victim) {
            continue;
        }
        assert_eq!(s.ws.expect_close(T).await, 1012);
        let last = *positions(&s.ws).last().unwrap();
        let mut ws = Ws::connect(&lb.url(&format!("/ws?resume={}", s.token)))
            .await
            .unwrap();
        let c = ws.expect("connected", T).await;
        assert_eq!(
            (c["resumed"].clone(), c["session_id"].clone()),
            (json!(true), s.id.clone())
        );
        assert_eq!(c["playing"], true, "still playing");
        let f = ws.expect("state_update", T).await;
        let at = (f["episode"].as_u64().unwrap(), f["step"].as_u64().unwrap());
        assert_eq!(at, last, "resumed at exactly the step it had");
        continues(&mut ws, at, 5).await;
        s.ws = ws;
        moved += 1;
    }
    assert!(moved >= 1);
    let survivors: Vec<&Server> = (0..3).filter(|n| *n != victim).map(|n| &nodes[n]).collect();
    assert!(homes(&survivors, &ids).iter().all(Option::is_some));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_training_holder_dies_and_another_node_continues_the_run_for_every_viewer() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis, 3, &[]);
    let mut viewers = Vec::new();
    for n in &nodes {
        let mut v = Ws::connect(&n.url("/ws/training")).await.unwrap();
        v.expect("training_status", T).await;
        viewers.push(v);
    }
    viewers[0]
        .send(
            json!({"command":"start_training","num_episodes":100000,"max_steps":40,"batch_size":8,
                     "step_delay":0,"show_every":1000,"checkpoint_every":2,"seed":9}),
        )
        .await;
    for v in &mut viewers {
        v.expect("training_started", T).await;
        v.expect_where("episode 6", LONG, |f| {
            f["type"] == "episode_complete" && f["episode"] == 6
        })
        .await;
    }
    // Heartbeats carry who holds the lease (every second).
    nodes[1].wait_for("node1 to be shown as the holder", T, |n| {
        n.get_json("/api/status")["cluster"]["training_holder"] == "node1"
    });
    // A viewer on another node is served the holder's status.
    let mut late = Ws::connect(&nodes[2].url("/ws/training")).await.unwrap();
    let st = late.expect("training_status", T).await;
    assert_eq!(st["is_training"], true, "{st}");
    let episodes = |v: &Ws| -> Vec<u64> {
        v.seen
            .iter()
            .filter(|f| f["type"] == "episode_complete")
            .map(|f| f["episode"].as_u64().unwrap())
            .collect()
    };
    nodes[0].kill9();
    let mut restarts = Vec::new();
    for v in viewers.iter_mut().skip(1) {
        let r = v.expect("training_restarted", LONG).await;
        assert_eq!(r["reason"], "node lost", "{r}");
        restarts.push(r["resumed_from_episode"].as_u64().unwrap());
    }
    assert_eq!(restarts[0], restarts[1]);
    let from = restarts[0];
    let seen_before = *episodes(&viewers[1]).iter().max().unwrap();
    // Checkpoints every 2 episodes: at most one interval and the episode in flight are lost.
    assert!(
        from >= 4 && from + 3 >= seen_before,
        "resumed from {from}, had seen {seen_before}"
    );
    let mark: Vec<usize> = viewers.iter().map(|v| episodes(v).len()).collect();
    for v in viewers.iter_mut().skip(1) {
        v.expect_where("three more episodes", LONG, |f| {
            f["type"] == "episode_complete" && f["episode"].as_u64() == Some(from + 3)
        })
        .await;
    }
    let after = |i: usize| episodes(&viewers[i])[mark[i]..].to_vec();
    assert_eq!(
        after(1),
        after(2),
        "both nodes' viewers saw the same episodes"
    );
    assert_eq!(after(1), vec![from + 1, from + 2, from + 3]);
    nodes[1].wait_for("a survivor shown as the holder", T, |n| {
        let h = n.get_json("/api/status")["cluster"]["training_holder"].clone();
        h == "node2" || h == "node3"
    });
    // Commands from the viewer on the node that does not hold the run are checked there and
    // forwarded: pause, resume and stop reach the run, and both nodes' viewers hear of them.
    let holder = nodes[1].get_json("/api/status")["cluster"]["training_holder"].clone();
    let follower = if holder == "node2" { 2 } else { 1 };
    viewers[follower].send(json!({"command":"pause"})).await;
    for v in viewers.iter_mut().skip(1) {
        v.expect("paused", T).await;
    }
    viewers[follower].send(json!({"command":"resume"})).await;
    for v in viewers.iter_mut().skip(1) {
        v.expect("resumed", T).await;
    }
    viewers[follower].send(json!({"command":"stop"})).await;
    for v in viewers.iter_mut().skip(1) {
        v.expect("training_complete", LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_trained_on_one_node_are_offered_and_loadable_on_every_node() {
    let redis = Redis::start();
    let dir = temp_dir("cluster-models");
    let (mine, theirs) = (
        make_model(&dir, "shared.onnx", 1),
        make_model(&temp_dir("cluster-models-b"), "shared.onnx", 2),
    );
    let mut a = node_opts(&redis.url(), 1, &[]);
    a.copy_models.push(mine.clone());
    let a = Server::start_with(a);
    a.wait_for("node1 to publish its models", T, |_| {
        redis.cmd(&["HEXISTS", "hamlet:models", "shared.onnx"]) == "1"
    });
    // node2 ships a different file of the same name: it keeps it and does not overwrite.
    let mut b = node_opts(&redis.url(), 2, &[]);
    b.copy_models.push(theirs.clone());
    let b_log = dir.join("node2.log");
    b.log_file = Some(b_log.clone());
    let b = Server::start_with(b);
    let c = Server::start_with(node_opts(&redis.url(), 3, &[]));
    // Each node's worker list says whose it is (behind HAProxy requests reach any node).
    assert_eq!(c.get_json("/api/workers")["node_id"], "node3");
    c.wait_for("node3 to fetch the cluster's models", T, |c| {
        c.models.join("shared.onnx").exists()
    });
    let bytes = |p: &std::path::Path| std::fs::read(p).unwrap();
    assert_eq!(bytes(&c.models.join("shared.onnx")), bytes(&mine));
    b.wait_for("node2 to find the name taken", T, |_| {
        !log_lines(&b_log, "different model of this name").is_empty()
    });
    assert_eq!(bytes(&b.models.join("shared.onnx")), bytes(&theirs));
    // A run on node1 saves a model; node3 lists it and a session there loads it.
    let mut v = Ws::connect(&a.url("/ws/training")).await.unwrap();
    v.expect("training_status", T).await;
    v.send(
        json!({"command":"start_training","num_episodes":2,"max_steps":20,"batch_size":8,
                  "step_delay":0,"model_name":"from-node1"}),
    )
    .await;
    assert_eq!(
        v.expect("training_complete", LONG).await["model_saved"],
        "from-node1.onnx"
    );
    c.wait_for("node3 to offer the new model", T, |c| {
        c.get_json("/api/models")["models"]
            .as_array()
            .unwrap()
            .contains(&json!("from-node1.onnx"))
    });
    let mut ws = Ws::connect(&c.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    ws.send(json!({"command":"load_model","model":"from-node1.onnx"}))
        .await;
    assert_eq!(
        ws.expect("model_loaded", T).await["model"],
        "from-node1.onnx"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_and_restarted_nodes_keep_playing_and_resume_works_again() {
    let mut redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let mut s = open(&nodes[0].url("/ws")).await;
    play(&mut s).await;
    s.ws.expect_where("play", T, |v| {
        v["type"] == "state_update" && v["step"].as_u64() >= Some(5)
    })
    .await;
    // A second session stays paused: it has nothing new to write when Redis comes back.
    let mut paused = open(&nodes[0].url("/ws")).await;
    paused.ws.send(json!({"command":"step"})).await;
    paused
        .ws
        .expect_where("step 1", T, |v| v["step"] == 1)
        .await;
    // Another node does not count a session running on node1 as detached.
    nodes[0].wait_for("the sessions in redis's listing", T, |_| {
        redis.cmd(&["ZCARD", "hamlet:sessions"]) == "2"
    });
    let beat = |n: &Server| -> u64 {
        n.get_json("/api/status")["cluster"]["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == "node2"))
            .and_then(|r| r["heartbeat_ms"].as_u64())
            .unwrap_or(0)
    };
    let seen = beat(&nodes[1]);
    // Two heartbeats later its once-a-second listing refresh has run too.
    nodes[1].wait_for("two heartbeats of node2", T, |n| beat(n) > seen + 1000);
    assert_eq!(nodes[1].get_json("/api/status")["detached"], json!([]));
    redis.kill9();
    nodes[0].wait_for("node1 to notice", T, |n| {
        n.get_json("/api/status")["cluster"]["redis_reachable"] == false
    });
    // The session plays on: 50 more steps with Redis gone.
    let from = *positions(&s.ws).last().unwrap();
    continues(&mut s.ws, from, 50).await;
    // Resuming needs the store: the browser is told and asked to come back later (1013).
    let mut other = Ws::connect(&nodes[1].url(&format!("/ws?resume={}", s.token)))
        .await
        .unwrap();
    assert_eq!(other.expect("error", T).await["code"], "store_unavailable");
    assert_eq!(other.expect_close(T).await, 1013);
    redis.restart();
    // Restarted empty: both sessions write themselves again — the playing one at its next flush,
    // the paused one because its node saw Redis come back.
    nodes[0].wait_for("both sessions back in redis", T, |_| {
        redis.cmd(&["ZCARD", "hamlet:sessions"]) == "2"
    });
    paused.ws.drop_connection();
    let mut p2 = Ws::connect(&nodes[1].url(&format!("/ws?resume={}", paused.token)))
        .await
        .unwrap();
    assert_eq!(p2.expect("connected", T).await["resumed"], true);
    assert_eq!(p2.expect("state_update", T).await["step"], 1);
    s.ws.drop_connection();
    // Detached, it is listed by every node (ids and positions only, from Redis).
    nodes[1].wait_for("node2 to list the detached session", T, |n| {
        n.get_json("/api/status")["detached"]
            .as_array()
            .is_some_and(|d| d.iter().any(|r| r["id"] == s.id))
    });
    let mut back = Ws::connect(&nodes[1].url(&format!("/ws?resume={}", s.token)))
        .await
        .unwrap();
    let c = back.expect("connected", T).await;
    assert_eq!(
        (c["resumed"].clone(), c["session_id"].clone()),
        (json!(true), s.id.clone())
    );
    for n in &nodes {
        assert!(alive(n.pid), "no node crashed");
        assert_eq!(
            n.get_json("/api/status")["cluster"]["redis_reachable"],
            true
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_redis_never_overwrites_the_newer_owner() {
    let redis = Redis::start();
    let link = CutLink::to(redis.port);
    let log = temp_dir("cut-log").join("node1.log");
    let mut opts = node_opts(&link.url(), 1, &[]);
    opts.log_file = Some(log.clone());
    let cut_off = Server::start_with(opts);
    let other = Server::start_with(node_opts(&redis.url(), 2, &[]));
    let mut s = open(&cut_off.url("/ws")).await;
    s.ws.send(json!({"command":"step"})).await;
    s.ws.expect_where("step 1", T, |v| v["step"] == 1).await;
    let id = s.id.as_str().unwrap().to_owned();
    cut_off.wait_for("step 1's snapshot in redis", T, |_| {
        redis
            .cmd(&["HGET", "hamlet:sessions:pos", &id])
            .contains(r#""step":1,"#)
    });
    link.cut();
    // The student goes on on the cut-off node; meanwhile the same token opens the session on
    // the other node (from what Redis had: step 1) and plays on there.
    for _ in 0..10 {
        s.ws.send(json!({"command":"step"})).await;
    }
    s.ws.expect_where("step 11", T, |v| v["step"] == 11).await;
    let mut moved = Ws::connect(&other.url(&format!("/ws?resume={}", s.token)))
        .await
        .unwrap();
    assert_eq!(moved.expect("connected", T).await["resumed"], true);
    assert_eq!(moved.expect("state_update", T).await["step"], 1);
    moved.send(json!({"command":"step"})).await;
    moved.expect_where("step 2", T, |v| v["step"] == 2).await;
    let owner_key = redis.cmd(&["KEYS", "hamlet:sess:*:owner"]);
    let epoch = || redis.cmd(&["HGET", &owner_key, "epoch"]);
    let newer = epoch();
    assert_eq!(redis.cmd(&["HGET", &owner_key, "node"]), "node2");
    link.heal();
    // Back in touch, node1 tries to write its step 11 with its old epoch: refused, and it lets
    // the session go (its browser is told the session was taken over).
    assert_eq!(
        s.ws.expect("error", LONG).await["code"],
        "session_taken_over"
    );
    assert_eq!(s.ws.expect_close(T).await, 4001);
    assert_eq!(epoch(), newer);
    assert_eq!(redis.cmd(&["HGET", &owner_key, "node"]), "node2");
    assert!(
        !log_lines(&log, "newer owner").is_empty(),
        "node1 logged the refused write"
    );
    // Redis still has node2's session: resuming it again lands at node2's step, not node1's.
    moved.drop_connection();
    let mut again = Ws::connect(&other.url(&format!("/ws?resume={}", s.token)))
        .await
        .unwrap();
    again.expect("connected", T).await;
    assert_eq!(again.expect("state_update", T).await["step"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_session_keeps_its_keys_in_redis_beyond_the_resume_window() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 1, &["--resume-window-secs", "3"]);
    let s = open(&nodes[0].url("/ws")).await;
    let key = format!("hamlet:sess:{}", s.id.as_str().unwrap());
    nodes[0].wait_for("the session in redis", T, |_| {
        redis.cmd(&["EXISTS", &key]) == "1"
    });
    let ttl = || redis.cmd(&["PTTL", &key]).parse::<i64>().unwrap_or(-2);
    let first = ttl();
    assert!(
        first > 0 && first <= 3000,
        "TTL {first} ms: the resume window"
    );
    // Nothing changes in a paused session, yet its node writes it again before the TTL runs out:
    // the TTL falls, then rises again.
    let lowest = std::cell::Cell::new(first);
    nodes[0].wait_for("the TTL renewed", T, |_| {
        let now = ttl();
        lowest.set(lowest.get().min(now));
        now > lowest.get() + 200
    });
    assert_eq!(
        redis.cmd(&["EXISTS", &format!("hamlet:token:{}", sha256_hex(&s.token))]),
        "1"
    );
}

fn sha256_hex(token: &str) -> String {
    metaserver::tokens::TokenHash::of(token).hex().to_owned()
}
