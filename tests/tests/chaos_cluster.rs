//! The cluster's chaos in short, in a suite of its own (suites run one after another: the
//! one-machine chaos run, which SIGSTOPs workers, does not share the cores with it).

use std::time::Duration;

/// The cluster's chaos in short (`scripts/chaos --cluster` runs it longer): redis-server, three
/// nodes and HAProxy on loopback; nodes killed or drained under load, with watchers and
/// duplicated tabs. The verdict is the binary's (`ClusterChaosReport::failures`).
#[tokio::test(flavor = "multi_thread")]
async fn short_cluster_chaos_loses_nothing() {
    use hamlet_tests::chaos_cluster::{run, ClusterChaosConfig};
    let r = run(ClusterChaosConfig {
        duration: Duration::from_secs(35),
        sessions: 4,
        hit_every: Duration::from_secs(8),
        drain_share: 0.5,
        seed: 7,
    })
    .await;
    eprintln!("{r:#?}");
    let failures = r.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}
