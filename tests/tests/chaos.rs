//! The short chaos run in the test suite: nothing lost while workers die at random and browser
//! connections drop, and the training run keeps learning. The verdict is the one `scripts/chaos`
//! gives (`ChaosReport::failures`).

use hamlet_tests::chaos::{run, ChaosConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn short_chaos_loses_nothing() {
    let cfg = ChaosConfig {
        duration: Duration::from_secs(20),
        sessions: 4,
        viewers: 2,
        kill_every: Duration::from_millis(600),
        stop_share: 0.2,
        drop_share: 0.3,
        seed: 1,
    };
    let r = run(cfg.clone()).await;
    eprintln!("{r:#?}");
    let failures = r.failures(&cfg);
    assert!(failures.is_empty(), "{failures:#?}");
}
