//! Class experiments in a real headless Chromium (issue 33): the class board comparing the rooms'
//! finished runs at a projector's 1920×1080, and "Try it yourself" from a watch link.

use hamlet_tests::webdriver::{Browser, LOWEST_CONTRAST};
use hamlet_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const W: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(120);

fn artifacts() -> std::path::PathBuf {
    root().join("target/test-artifacts")
}

/// A short run in `room` with this learning rate and seed, waited for to its end.
async fn train(s: &Server, room: &str, learning_rate: f64, seed: u64) {
    let mut v = Ws::connect(&s.url(&format!("/ws/training?room={room}")))
        .await
        .unwrap();
    v.expect("training_status", T).await;
    v.send(
        json!({"command":"start_training","num_episodes":30,"max_steps":150,"batch_size":16,
                  "step_delay":0,"show_every":1000,"seed":seed,"learning_rate":learning_rate,
                  "eval_every":5}),
    )
    .await;
    v.expect("training_complete", LONG).await;
}

/// The three groups' best evaluations, ranked as the board must: competent first, then longer
/// survival, then higher return (computed here from `/api/runs`, not by the page's code).
fn expected_ranking(runs: &Value) -> Vec<String> {
    let mut best: Vec<(String, u64, f64)> = Vec::new();
    for r in runs["runs"].as_array().unwrap() {
        let room = r["room"].as_str().unwrap().to_owned();
        let (steps, ret) = (
            r["best"]["steps"].as_u64().unwrap(),
            r["best"]["return"].as_f64().unwrap(),
        );
        match best.iter_mut().find(|b| b.0 == room) {
            Some(b) if (steps, ret) > (b.1, b.2) => *b = (room, steps, ret),
            Some(_) => {}
            None => best.push((room, steps, ret)),
        }
    }
    best.sort_by(|a, b| (b.1, b.2).partial_cmp(&(a.1, a.2)).unwrap());
    best.into_iter().map(|b| b.0).collect()
}

/// Three rooms, each with one learning rate (one of them run with two seeds): the board overlays
/// their curves, a band for the room with two seeds, labelled by the one setting that changed and
/// coloured by it, ranked as the runs came out; its choices survive a reload through the URL;
/// every label is inside the chart and none overlaps another; text keeps its contrast.
#[test]
fn the_class_board_compares_three_rooms_at_a_projectors_size() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--max-training-runs".into(), "2".into()],
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::join!(train(&s, "slow", 0.0002, 1), train(&s, "medium", 0.001, 2),);
        tokio::join!(train(&s, "fast", 0.005, 3), train(&s, "slow", 0.0002, 4));
    });
    let runs = s.get_json("/api/runs");
    assert_eq!(runs["count"], 4, "{runs}");
    let b = Browser::start().expect("headless Chromium");
    b.set_size(1920, 1080).unwrap();
    b.goto(&format!("http://{}/?present=1#board", s.addr))
        .unwrap();
    b.wait_for(
        "the board's three groups",
        W,
        "document.getElementById('b-chart').dataset.groups === '3'",
    )
    .unwrap();
    let board = b.eval("return window.hamlet.board").unwrap();
    assert_eq!(board["knob"], "learning_rate", "{board}");
    assert!(
        board["shared"]
            .as_str()
            .unwrap()
            .contains("num_episodes 30"),
        "what all runs share is said once: {board}"
    );
    let ranked: Vec<String> = serde_json::from_value(board["ranked"].clone()).unwrap();
    assert_eq!(ranked, expected_ranking(&runs));
    // Each curve's end label names its one change, with its best value beside its last.
    let labels: Vec<Value> = serde_json::from_str(
        b.eval("return document.getElementById('b-chart').dataset.labels")
            .unwrap()
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let ends: Vec<&Value> = labels
        .iter()
        .filter(|l| l["text"].as_str().unwrap().contains("learning_rate"))
        .collect();
    let medium = ends
        .iter()
        .find(|l| l["text"].as_str().unwrap().starts_with("medium"));
    assert!(
        medium.is_some_and(|l| l["text"].as_str().unwrap().contains("0.001 (default)")),
        "the room that kept the default says so: {ends:?}"
    );
    assert_eq!(ends.len(), 3, "{labels:?}");
    for l in &ends {
        let t = l["text"].as_str().unwrap();
        assert!(t.contains("best") && t.contains("last"), "{t}");
    }
    let size = b
        .eval("const r = document.getElementById('b-chart').getBoundingClientRect(); return [r.width, r.height]")
        .unwrap();
    let (cw, ch) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    assert!(cw >= 1600.0, "the chart spans the projector's width: {cw}");
    let boxes: Vec<[f64; 4]> = labels
        .iter()
        .map(|l| serde_json::from_value(l["box"].clone()).unwrap())
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        assert!(
            a[0] >= 0.0 && a[1] >= 0.0 && a[2] <= cw + 0.5 && a[3] <= ch + 0.5,
            "{a:?} leaves the chart"
        );
        assert!(
            a[3] - a[1] >= 20.0,
            "a label too small for a projector: {a:?}"
        );
        for c in &boxes[i + 1..] {
            let overlap = a[0] < c[2] && a[2] > c[0] && a[1] < c[3] && a[3] > c[1];
            assert!(!overlap, "labels overlap: {a:?} {c:?}");
        }
    }
    // The leaderboard: one row per group, in the ranking's order, and the class's empty room —
    // also after the board polled again (it asks only for runs it does not hold).
    b.wait_for("a second poll", W, "window.hamlet.board.polls >= 2")
        .unwrap();
    let rows = b
        .eval("return [...document.querySelectorAll('#b-table tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        .unwrap();
    let rooms: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = ranked.iter().map(String::as_str).collect();
    want.push("class");
    assert_eq!(rooms, want);
    let slow = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[1] == "slow")
        .unwrap();
    assert_eq!(
        slow[7], "2",
        "the two seeds of one room are one group: {slow}"
    );
    let worst = b.eval(LOWEST_CONTRAST).unwrap();
    assert!(worst["ratio"].as_f64().unwrap() >= 4.5, "{worst}");
    assert_eq!(b.eval("return window.hamletErrors").unwrap(), json!([]));
    b.screenshot(&artifacts().join("class-board.png")).unwrap();
    // The board's choices are in its URL: a reload (or a link) shows the same board.
    b.eval("const m = document.getElementById('b-metric'); m.value = 'reward'; m.dispatchEvent(new Event('change')); return true")
        .unwrap();
    let url = b.eval("return location.href").unwrap();
    assert!(url.as_str().unwrap().contains("metric=reward"), "{url}");
    b.goto(url.as_str().unwrap()).unwrap();
    b.wait_for(
        "the reloaded board",
        W,
        "document.getElementById('b-chart').dataset.metric === 'reward' && document.getElementById('b-metric').value === 'reward'",
    )
    .unwrap();
}

/// "Try it yourself" on a watch link's page: the tab gets a session of its own at the watched
/// step, paused, with every control; its steps do not move the original; a reload keeps the fork
/// (not a second one).
#[test]
fn try_it_yourself_from_a_watch_link_forks_the_session_at_the_watched_step() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut owner, watch) = rt.block_on(async {
        let mut owner = Ws::connect(&s.url("/ws")).await.unwrap();
        let c = owner.expect("connected", T).await;
        owner.expect("state_update", T).await;
        for _ in 0..5 {
            owner.send(json!({"command":"step"})).await;
            owner.expect("state_update", T).await;
        }
        (owner, c["watch_token"].as_str().unwrap().to_owned())
    });
    let b = Browser::start().expect("headless Chromium");
    b.goto(&format!("http://{}/?watch={watch}", s.addr))
        .unwrap();
    b.wait_for(
        "the watched session's frame",
        W,
        "window.hamlet.inference.readOnly && window.hamlet.inference.step === 5",
    )
    .unwrap();
    b.click("#btn-fork").unwrap();
    b.wait_for(
        "the tab's own copy at step 5",
        W,
        "window.hamlet.inference.connected && !window.hamlet.inference.readOnly && window.hamlet.inference.forkedAt \
         && window.hamlet.inference.forkedAt.step === 5 && !location.search.includes('fork') \
         && !document.body.classList.contains('watching')",
    )
    .unwrap();
    let note = b
        .eval("return document.getElementById('resumed-note').textContent")
        .unwrap();
    assert!(note.as_str().unwrap().contains("step 5"), "{note}");
    b.screenshot(&artifacts().join("try-it-yourself.png"))
        .unwrap();
    b.click("#btn-step").unwrap();
    b.wait_for(
        "the fork's own step",
        W,
        "window.hamlet.inference.step === 6",
    )
    .unwrap();
    rt.block_on(async {
        owner.send(json!({"command":"status"})).await;
        assert_eq!(owner.expect("session_status", T).await["step"], 5);
    });
    // A reload comes back to the fork where it was (its token is the tab's now).
    b.goto(&format!("http://{}/", s.addr)).unwrap();
    b.wait_for(
        "the fork resumed at step 6",
        W,
        "window.hamlet.inference.connected && window.hamlet.inference.resumedAt && window.hamlet.inference.resumedAt.step === 6",
    )
    .unwrap();
    assert_eq!(b.eval("return window.hamletErrors").unwrap(), json!([]));
}

/// The time machine on a room's page: its snapshots listed, three played side by side from the
/// same start (the untrained network and the trained ones go different ways), one step slider
/// and Play moving every view.
#[test]
fn the_time_machine_plays_snapshots_side_by_side_on_one_slider() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut v = Ws::connect(&s.url("/ws/training?room=tm")).await.unwrap();
        v.expect("training_status", T).await;
        v.send(
            json!({"command":"start_training","num_episodes":40,"max_steps":120,"batch_size":16,
                      "step_delay":0,"show_every":1000,"seed":5,"eval_every":10}),
        )
        .await;
        v.expect("training_complete", LONG).await;
    });
    let b = Browser::start().expect("headless Chromium");
    b.set_size(1600, 1000).unwrap();
    b.goto(&format!("http://{}/?room=tm#training", s.addr))
        .unwrap();
    b.wait_for(
        "the training view",
        W,
        "window.hamlet.training && window.hamlet.training.connected",
    )
    .unwrap();
    b.click("#btn-tm").unwrap();
    b.wait_for(
        "the run's ten snapshots",
        W,
        "document.querySelectorAll('#tm-list input').length === 10",
    )
    .unwrap();
    let ticked = b
        .eval("return document.querySelectorAll('#tm-list input:checked').length")
        .unwrap();
    assert_eq!(ticked, 3, "the first, the middle and the best are offered");
    b.click("#tm-play").unwrap();
    b.wait_for(
        "three recorded episodes",
        Duration::from_secs(60),
        "window.hamlet.timeMachine.views.length === 3 && window.hamlet.timeMachine.views.every(x => x.ended !== null)",
    )
    .unwrap();
    let views = b.eval("return window.hamlet.timeMachine.views").unwrap();
    let paths: Vec<&Value> = views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["path"])
        .collect();
    assert_eq!(paths[0][0], paths[2][0], "the same start");
    assert_ne!(
        paths[0], paths[2],
        "the untrained and the best network went the same way"
    );
    // One slider moves every view.
    b.eval("const s = document.getElementById('tm-step'); s.value = '12'; s.dispatchEvent(new Event('input')); return true")
        .unwrap();
    let captions = b
        .eval(
            "return [...document.querySelectorAll('.tm-view figcaption')].map(c => c.textContent)",
        )
        .unwrap();
    for (c, v) in captions
        .as_array()
        .unwrap()
        .iter()
        .zip(views.as_array().unwrap())
    {
        let c = c.as_str().unwrap();
        let ended = v["ended"].as_u64().unwrap();
        if ended > 12 {
            assert!(c.contains("step 12,"), "{c}");
        } else {
            assert!(c.contains(&format!("at step {ended}")), "{c}");
        }
    }
    b.click("#tm-run").unwrap();
    b.wait_for(
        "Play moving the slider",
        W,
        "window.hamlet.timeMachine.k >= 20",
    )
    .unwrap();
    b.screenshot(&artifacts().join("time-machine.png")).unwrap();
    // Closing lets its sessions go.
    b.click("#tm-close").unwrap();
    s.wait_for("the time machine's sessions let go", W, |s| {
        s.get_json("/api/status")["sessions_attached"] == 0
    });
    assert_eq!(b.eval("return window.hamletErrors").unwrap(), json!([]));
}

/// The teacher's view of every room: on the server's own machine (an operator) the board has a
/// Stop button on a room that trains, and it stops that room's run with its model saved.
#[test]
fn a_teacher_stops_a_rooms_run_from_the_board() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut v = rt.block_on(async {
        let mut v = Ws::connect(&s.url("/ws/training?room=long")).await.unwrap();
        v.expect("training_status", T).await;
        v.send(
            json!({"command":"start_training","num_episodes":100000,"max_steps":60,
                      "batch_size":8,"step_delay":0,"show_every":1000,"seed":2,"eval_every":2}),
        )
        .await;
        v.expect("evaluation", LONG).await;
        v
    });
    let b = Browser::start().expect("headless Chromium");
    b.goto(&format!("http://{}/#board", s.addr)).unwrap();
    b.wait_for(
        "the training room's Stop button",
        W,
        "[...document.querySelectorAll('#b-table tbody tr')].some(r => r.cells[1].textContent === 'long' && r.querySelector('button'))",
    )
    .unwrap();
    b.eval("[...document.querySelectorAll('#b-table tbody tr')].find(r => r.cells[1].textContent === 'long').querySelector('button').click(); return true")
        .unwrap();
    rt.block_on(async {
        let done = v.expect("training_complete", LONG).await;
        assert_eq!(done["stopped"], true, "{done}");
        assert!(done["model_saved"].as_str().is_some(), "{done}");
    });
    b.wait_for(
        "the stopped run on the board",
        W,
        "[...document.querySelectorAll('#b-table tbody tr')].some(r => r.cells[1].textContent === 'long' && r.cells[3].textContent === 'finished' && !r.querySelector('button'))",
    )
    .unwrap();
}
