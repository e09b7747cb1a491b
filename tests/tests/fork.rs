//! End-to-end: `/ws?fork=WATCH_TOKEN` (rooms.md, "Fork") — a session of one's own from where a
//! watched session is, which never moves the original. Real metaserver, real workers.

use hamlet_tests::play::{essence, open_session, step};
use hamlet_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_starts_at_the_watched_step_and_never_moves_the_original() {
    let s = Server::start();
    let (mut owner, c) = open_session(&s, "").await;
    let watch = c["watch_token"].as_str().unwrap().to_owned();
    owner.expect("state_update", T).await;
    // Exploration on, so the fork must carry the session's random numbers too to stay on its path.
    owner
        .send(json!({"command":"set_epsilon","epsilon":0.3}))
        .await;
    let seen = step(&mut owner, 7).await;
    let mut watcher = Ws::connect(&s.url(&format!("/ws?watch={watch}")))
        .await
        .unwrap();
    assert_eq!(watcher.expect("state_update", T).await["step"], 7);
    // The fork: a new session of its own, at the watched frame, paused.
    let (mut fork, fc) = open_session(&s, &format!("?fork={watch}")).await;
    assert_ne!(fc["session_id"], c["session_id"]);
    assert_ne!(fc["resume_token"], c["resume_token"]);
    assert_ne!(fc["watch_token"], c["watch_token"]);
    assert!(fc.get("read_only").is_none(), "the fork is its own: {fc}");
    assert_eq!(fc["playing"], false);
    assert_eq!(fc["epsilon"], 0.3, "the session's settings come along");
    let first = fork.expect("state_update", T).await;
    assert_eq!(essence(&first), essence(&seen[6]));
    // The fork's steps are its own: the original stays at step 7 and its watcher sees nothing.
    let forked = step(&mut fork, 3).await;
    let steps: Vec<_> = forked.iter().map(|f| f["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [8, 9, 10]);
    owner.send(json!({"command":"status"})).await;
    assert_eq!(owner.expect("session_status", T).await["step"], 7);
    assert!(
        watcher.next(Duration::from_millis(300)).await.is_err(),
        "the original's watcher saw a frame: {:?}",
        watcher.seen
    );
    // From the same state, the original goes the same way (world and random numbers alike).
    let original = step(&mut owner, 3).await;
    assert_eq!(
        original.iter().map(essence).collect::<Vec<_>>(),
        forked.iter().map(essence).collect::<Vec<_>>()
    );
    // The fork is a session like any other: a reload resumes it where it was.
    let token = fc["resume_token"].as_str().unwrap().to_owned();
    drop(fork);
    let (mut back, bc) = open_session(&s, &format!("?resume={token}")).await;
    assert_eq!(bc["session_id"], fc["session_id"]);
    assert_eq!(back.expect("state_update", T).await["step"], 10);
    // A session put away (its owner gone) is forked from its stored copy.
    drop((owner, watcher));
    s.wait_for("the original put away", T, |s| {
        s.get_json("/api/status")["detached_total"] == 1
    });
    let (mut second, _) = open_session(&s, &format!("?fork={watch}")).await;
    let again = second.expect("state_update", T).await;
    assert_eq!(essence(&again), essence(&original[2]));
    // A link that leads nowhere says so, and starts nothing.
    let mut bad = Ws::connect(&s.url("/ws?fork=AAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .unwrap();
    assert_eq!(bad.expect("error", T).await["code"], "unknown_watch_link");
    assert_eq!(bad.expect_close(T).await, 1008);
}
