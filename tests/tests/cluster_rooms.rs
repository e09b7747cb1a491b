//! Rooms across a cluster (rooms.md, "Beyond one machine"), for real: a `redis-server` on a free
//! loopback port and two metaserver nodes, each allowed one training run at a time.

use hamlet_tests::cluster::*;
use hamlet_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

async fn viewer(node: &Server, room: &str) -> (Ws, Value) {
    let mut v = Ws::connect(&node.url(&format!("/ws/training?room={room}")))
        .await
        .unwrap();
    let st = v.expect("training_status", T).await;
    (v, st)
}

/// A viewer of `room` on `node` that starts a run there (seed `seed`) and sees it start.
async fn running(node: &Server, room: &str, seed: u64) -> Ws {
    let (mut v, _) = viewer(node, room).await;
    v.send(start(seed)).await;
    v.expect("training_started", T).await;
    v
}

fn start(seed: u64) -> Value {
    start_of(seed, 100_000)
}

/// A start of `episodes` episodes (students — not operators — may start at most 5000).
fn start_of(seed: u64, episodes: u32) -> Value {
    json!({"command":"start_training","num_episodes":episodes,"max_steps":40,"batch_size":8,
           "step_delay":0,"show_every":1000,"checkpoint_every":2,"seed":seed})
}

fn worker_pid(node: &Server, room: &str) -> Option<u64> {
    let rooms = node.get_json("/api/rooms")["rooms"].clone();
    let r = rooms
        .as_array()?
        .iter()
        .find(|r| r["room"] == room)?
        .clone();
    r["worker_pid"].as_u64()
}

/// Two rooms train on two nodes with one slot each, every room's frames reaching its viewers on
/// both nodes under its own lease. The node running room red dies: red's lease expires and its
/// run waits — node 2's one slot is blue's — until blue's run ends; then node 2 takes red over
/// from its checkpoint, and red's viewer on node 2 goes on watching it.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_nodes_room_moves_to_the_other_node_when_it_has_a_slot() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis, 2, &["--max-training-runs", "1"]);
    let _red1 = running(&nodes[0], "red", 1).await;
    let mut blue2 = running(&nodes[1], "blue", 2).await;
    // Red's viewer on node 2 is served red's run, from node 1.
    let (mut red2, st) = viewer(&nodes[1], "red").await;
    assert_eq!(st["is_training"], true, "{st}");
    red2.expect_where("red's episode 6", LONG, |m| {
        m["type"] == "episode_complete" && m["episode"].as_u64() >= Some(6)
    })
    .await;
    let stray: Vec<&Value> = red2.seen.iter().filter(|m| m["room"] != "red").collect();
    assert!(
        stray.is_empty(),
        "red's viewer got another room's: {stray:?}"
    );
    // Each room under its own lease, each run on its own node.
    for (room, holder) in [("red", "node1"), ("blue", "node2")] {
        let lease = redis.cmd(&["GET", &format!("hamlet:room:{room}:lease")]);
        assert!(lease.starts_with(&format!("{holder} ")), "{room}: {lease}");
    }
    assert!(worker_pid(&nodes[0], "red").is_some() && worker_pid(&nodes[1], "red").is_none());
    assert_eq!(
        redis.cmd(&["SMEMBERS", "hamlet:rooms"]).lines().count(),
        2,
        "both rooms are listed with a run"
    );
    let seen_before = red2
        .seen
        .iter()
        .filter(|m| m["type"] == "episode_complete")
        .filter_map(|m| m["episode"].as_u64())
        .max()
        .unwrap();
    nodes[0].kill9();
    // Red's lease expires (5 s) and nobody takes it: node 2's only slot is blue's. Watched for
    // four of node 2's lease checks (one a second) after it expired.
    let lease_gone = |r: &Redis| r.cmd(&["EXISTS", "hamlet:room:red:lease"]).trim() == "0";
    let t0 = Instant::now();
    while !lease_gone(&redis) {
        assert!(t0.elapsed() < LONG, "red's lease never expired");
        blue2.expect("episode_complete", LONG).await;
    }
    let gone_at = Instant::now();
    while gone_at.elapsed() < Duration::from_secs(4) {
        blue2.expect("episode_complete", LONG).await;
        assert!(lease_gone(&redis), "red was taken over without a free slot");
    }
    assert!(
        !red2.seen.iter().any(|m| m["type"] == "training_restarted"),
        "red restarted while node 2 had no slot"
    );
    // Blue's run ends: node 2's slot is free, and red resumes there from its checkpoint.
    blue2.send(json!({"command":"stop"})).await;
    blue2.expect("training_complete", LONG).await;
    let r = red2.expect("training_restarted", LONG).await;
    assert_eq!(r["reason"], "node lost", "{r}");
    let from = r["resumed_from_episode"].as_u64().unwrap();
    assert!(
        from >= 4 && from + 3 >= seen_before,
        "resumed from {from}, had seen {seen_before}"
    );
    let next = red2.expect("episode_complete", LONG).await;
    assert_eq!(next["episode"].as_u64(), Some(from + 1));
    assert!(worker_pid(&nodes[1], "red").is_some());
    let lease = redis.cmd(&["GET", "hamlet:room:red:lease"]);
    assert!(lease.starts_with("node2 "), "{lease}");
    red2.send(json!({"command":"stop"})).await;
    red2.expect("training_complete", LONG).await;
    nodes[1].wait_for("the finished rooms unlisted", T, |_| {
        redis.cmd(&["SMEMBERS", "hamlet:rooms"]).trim().is_empty()
    });
}

/// A start on a node without a free slot runs on a node that has one (the least loaded); its
/// starter, on the first node, gets the run's control token and controls it from there; with
/// every slot taken, a start waits in its node's queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_without_a_slot_here_runs_where_there_is_one() {
    let redis = Redis::start();
    let args = [
        "--max-training-runs",
        "1",
        "--loopback-is-operator",
        "false",
    ];
    let nodes = start_nodes(&redis, 2, &args);
    let (mut a, _) = viewer(&nodes[0], "a").await;
    a.send(start_of(1, 5000)).await;
    a.expect("training_started", T).await;
    // Node 1's heartbeat says it has no slot left, node 2's that it has one.
    nodes[0].wait_for("the nodes' free slots", T, |n| {
        let rows = n.get_json("/api/status")["cluster"]["nodes"].clone();
        let free = |id: &str| {
            let r = rows
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == id)
                .cloned();
            r.and_then(|r| r["free_training_slots"].as_u64())
        };
        free("node1") == Some(0) && free("node2") == Some(1)
    });
    let (mut b, _) = viewer(&nodes[0], "b").await;
    b.send(start_of(2, 5000)).await;
    let started = b.expect("training_started", T).await;
    let token = started["control_token"]
        .as_str()
        .expect("the starter's control token, from its own node")
        .to_owned();
    assert!(worker_pid(&nodes[1], "b").is_some() && worker_pid(&nodes[0], "b").is_none());
    let lease = redis.cmd(&["GET", "hamlet:room:b:lease"]);
    assert!(lease.starts_with("node2 "), "{lease}");
    // Its token controls the run from node 1 (not an operator there); no token does not.
    b.send(json!({"command":"pause"})).await;
    assert_eq!(b.expect("error", T).await["code"], "not_run_owner");
    b.send(json!({"command":"pause","control_token":token}))
        .await;
    b.expect("paused", T).await;
    // Both slots taken: a third start waits in its node's queue.
    let (mut c, _) = viewer(&nodes[0], "c").await;
    c.send(start_of(3, 5000)).await;
    assert_eq!(c.expect("queued", T).await["position"], 1);
    b.send(json!({"command":"stop","control_token":token}))
        .await;
    b.expect("training_complete", LONG).await;
    let a_token = a
        .seen
        .iter()
        .find(|m| m["type"] == "training_started")
        .unwrap()["control_token"]
        .as_str()
        .unwrap()
        .to_owned();
    a.send(json!({"command":"stop","control_token":a_token}))
        .await;
    a.expect("training_complete", LONG).await;
    c.expect("training_started", LONG).await;
}

/// With every slot taken, a start waits in its node's queue; when a slot frees on another node
/// first, the waiting start moves there and runs, its starter keeping control.
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_start_moves_to_the_node_whose_slot_frees_first() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &["--max-training-runs", "1"]);
    let mut a = running(&nodes[0], "a", 1).await;
    let mut b = running(&nodes[1], "b", 2).await;
    nodes[0].wait_for("no free slot anywhere", T, |n| {
        let rows = n.get_json("/api/status")["cluster"]["nodes"].clone();
        let rows = rows.as_array().unwrap().clone();
        rows.len() == 2 && rows.iter().all(|r| r["free_training_slots"] == 0)
    });
    let (mut c, _) = viewer(&nodes[0], "c").await;
    c.send(start(3)).await;
    assert_eq!(c.expect("queued", T).await["position"], 1);
    // Node 2's run ends first: c moves there (node 1's run goes on).
    b.send(json!({"command":"stop"})).await;
    b.expect("training_complete", LONG).await;
    let started = c.expect("training_started", T).await;
    assert!(started["control_token"].is_string(), "{started}");
    assert!(worker_pid(&nodes[1], "c").is_some() && worker_pid(&nodes[0], "c").is_none());
    assert!(worker_pid(&nodes[0], "a").is_some());
    for v in [&mut a, &mut c] {
        v.send(json!({"command":"stop"})).await;
        v.expect("training_complete", LONG).await;
    }
}
