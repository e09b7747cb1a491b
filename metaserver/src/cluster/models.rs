//! Models shared through Redis (cluster.md): the hash `hamlet:models`, name → ONNX bytes.
//!
//! Every node keeps its models directory as the cache its workers load from. Four times a
//! second it compares the directory with the hash: a local model the cluster does not have is
//! published (`HSETNX`: never over a different model of the same name), a model the cluster has
//! and the directory does not is written into it atomically. A model trained on any node so
//! appears in every node's `/api/models` within about half a second. Deleting a model is not
//! shared (remove it from Redis and from every node).

use super::{key, Cluster};
use crate::model_catalog::ModelCatalog;
use hamlet_onnx::catalog;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const PERIOD: Duration = Duration::from_millis(250);
use hamlet_onnx::catalog::MAX_MODEL_BYTES;

/// Keeps `dir` and `hamlet:models` in step until `stop`. The directory's listing comes from the
/// catalog (scanned off the runtime), and what it holds is only models that passed its checks.
pub async fn sync(
    cluster: Arc<Cluster>,
    dir: PathBuf,
    models: Arc<ModelCatalog>,
    stop: CancellationToken,
) {
    // Names settled with the cluster: published by us, fetched by us, or found to differ.
    let mut settled: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let remote: Vec<String> = match cluster.cmd(redis::cmd("HKEYS").arg(key("models"))).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let local = models.listing().names.clone();
        let unsettled: Vec<&String> = local.iter().filter(|n| !settled.contains(*n)).collect();
        for name in unsettled {
            if publish(&cluster, &dir, name, remote.contains(name)).await {
                settled.insert(name.clone());
            }
        }
        for name in remote.iter().filter(|n| !local.contains(n)) {
            if fetch(&cluster, &dir, name).await {
                models.note_new(name);
                settled.insert(name.clone());
            }
        }
    }
}

/// The cluster's bytes of model `name` (`None` if it has none, or Redis cannot say).
async fn cluster_model(cluster: &Cluster, name: &str) -> Option<Vec<u8>> {
    cluster
        .cmd(redis::cmd("HGET").arg(key("models")).arg(name))
        .await
        .ok()
        .flatten()
}

async fn read_model(dir: &Path, name: &str) -> Option<Vec<u8>> {
    let bytes = tokio::fs::read(dir.join(name)).await.ok()?;
    (bytes.len() as u64 <= MAX_MODEL_BYTES).then_some(bytes)
}

/// Offers a local model to the cluster; true once settled (published, or the cluster has the
/// name already — if with different bytes, the local file stays and is not shared).
async fn publish(cluster: &Cluster, dir: &Path, name: &str, known: bool) -> bool {
    let Some(bytes) = read_model(dir, name).await else {
        return false;
    };
    if known {
        let theirs = cluster_model(cluster, name).await;
        if theirs.as_ref().is_some_and(|t| *t != bytes) {
            warn!(model = name, "the cluster has a different model of this name; the local file is kept and not shared");
        }
        return true;
    }
    let added: Result<bool, _> = cluster
        .cmd(redis::cmd("HSETNX").arg(key("models")).arg(name).arg(bytes))
        .await;
    match added {
        Ok(true) => {
            info!(model = name, "model published to the cluster");
            true
        }
        // Someone published the name a moment ago: compare on the next round.
        Ok(false) | Err(_) => false,
    }
}

/// Writes a cluster model into the local directory; true once done.
async fn fetch(cluster: &Cluster, dir: &Path, name: &str) -> bool {
    if !catalog::is_plain_name(name) {
        // Not a name a client could load; never a path on this disk.
        return true;
    }
    let Some(bytes) = cluster_model(cluster, name).await else {
        return false;
    };
    // Whatever is in Redis is checked as a browser's input would be: only a model this world
    // can use reaches the disk (and from there every worker).
    if let Err(reason) = catalog::check_model(&bytes) {
        warn!(model = name, %reason, "a model in the cluster's store is not usable; not fetched");
        return true;
    }
    let path = dir.join(name);
    match tokio::task::spawn_blocking(move || hamlet_onnx::write_atomic(&path, &bytes)).await {
        Ok(Ok(())) => {
            info!(model = name, "model fetched from the cluster");
            true
        }
        _ => false,
    }
}
