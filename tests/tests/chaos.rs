//! The short chaos run in the test suite: nothing lost while workers die at random and browser
//! connections drop.

use hamlet_tests::chaos::{run, ChaosConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn short_chaos_loses_nothing() {
    let r = run(ChaosConfig {
        duration: Duration::from_secs(20),
        sessions: 4,
        viewers: 2,
        kill_every: Duration::from_millis(600),
        stop_share: 0.2,
        drop_share: 0.3,
        seed: 1,
    })
    .await;
    eprintln!("{r:#?}");
    assert_eq!(r.sessions_lost, 0, "{:?}", r.lost_reasons);
    assert_eq!(r.continuity_violations, 0, "{:?}", r.violation_examples);
    assert!(
        r.sigkills + r.sigstops >= 5,
        "the killer hit too little: {r:?}"
    );
    assert!(r.worker_restarted_seen >= 1);
    assert!(r.connections_dropped >= 2, "too few drops: {r:?}");
    assert_eq!(
        r.resumes, r.connections_dropped,
        "every dropped connection came back"
    );
    assert!(
        r.longest_gap_ms <= hamlet_tests::chaos::MAX_GAP.as_secs_f64() * 1e3,
        "{r:?}"
    );
    assert!(
        r.frames as f64 >= 0.8 * r.frames_expected,
        "{} frames, expected at least 80 % of {:.0}",
        r.frames,
        r.frames_expected
    );
    assert!(r.metaserver_rss_after_mib < r.metaserver_rss_before_mib + 200.0);
}
