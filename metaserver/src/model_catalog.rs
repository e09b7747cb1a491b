//! The models this server offers, kept in memory so that nothing on the async runtime touches
//! the models directory: the listing is rescanned on tokio's blocking pool every few seconds,
//! when `/api/models` is asked (which waits for a fresh scan), and when a model has just been
//! written here (a training run, the cluster's model sync — [`ModelCatalog::note_new`] lists it
//! at once). Parsing an ONNX file's metadata is done once per file version (size and mtime).

use hamlet_onnx::catalog;
use ipc_proto::browser::ModelDetails;
use ipc_proto::training::SNAPSHOT_INFIX;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the directory is rescanned without being asked.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// The models as of the last scan.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The models offered: plain file names of usable models, sorted.
    pub names: Vec<String>,
    pub details: Vec<ModelDetails>,
    /// Files in the directory that are not models this world can use, with why (for operators:
    /// `/api/models` lists them apart; sessions are never offered them).
    pub refused: Vec<RefusedModel>,
    /// What a new session loads: `--default-model` if listed, else `catalog::pick_default`.
    pub default: Option<String>,
    /// The time machine's snapshots of training runs (`STEM.snap-eNNNNN.onnx`), sorted: usable
    /// models, loaded by name like any other, but not offered in the models list.
    pub snapshots: Vec<String>,
}

/// A `.onnx` file that is not a usable model, and why (naming the file, never a path).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RefusedModel {
    pub name: String,
    pub reason: String,
}

/// What the catalog knows of a name a browser asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelLookup {
    Offered,
    /// In the directory, but not a usable model: the reason, naming the model.
    Refused(String),
    /// Not seen by the last scan (perhaps written since): the worker, which reads the directory
    /// itself, has the last word.
    Unknown,
}

/// One version of a file (size, mtime) and what reading it found: its details, or why it is
/// not a usable model.
type Parsed = (u64, u64, Result<ModelDetails, String>);

pub struct ModelCatalog {
    dir: PathBuf,
    configured_default: Option<String>,
    listing: RwLock<Arc<Listing>>,
    /// Parsed metadata by name, valid while the file's size and mtime are unchanged (used by
    /// scans only, on the blocking pool).
    parsed: Mutex<BTreeMap<String, Parsed>>,
    wake: Notify,
}

impl ModelCatalog {
    /// Scans `dir` once (at start-up, before serving) and returns the catalog.
    pub fn open(dir: PathBuf, configured_default: Option<String>) -> Arc<Self> {
        let c = Arc::new(ModelCatalog {
            dir,
            configured_default,
            listing: RwLock::new(Arc::default()),
            parsed: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
        });
        let first = c.scan();
        *c.listing.write() = Arc::new(first);
        c
    }

    pub fn listing(&self) -> Arc<Listing> {
        self.listing.read().clone()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.listing.read().names.iter().any(|n| n == name)
    }

    /// Is `name` offered, refused, or unknown (then a rescan is started)?
    pub fn lookup(&self, name: &str) -> ModelLookup {
        let l = self.listing.read();
        if l.names.iter().any(|n| n == name)
            || l.snapshots
                .binary_search_by(|n| n.as_str().cmp(name))
                .is_ok()
        {
            return ModelLookup::Offered;
        }
        if let Some(r) = l.refused.iter().find(|r| r.name == name) {
            return ModelLookup::Refused(format!("model `{name}` cannot be used: {}", r.reason));
        }
        drop(l);
        self.wake.notify_one();
        ModelLookup::Unknown
    }

    pub fn default_model(&self) -> Option<String> {
        self.listing.read().default.clone()
    }

    /// A model was just written to the directory by this server: listed at once (its details
    /// come with the next scan, which this starts).
    pub fn note_new(&self, name: &str) {
        if catalog::is_plain_name(name) && !self.contains(name) {
            let mut l = (*self.listing()).clone();
            l.names.push(name.to_owned());
            l.names.sort();
            *self.listing.write() = Arc::new(l);
        }
        self.wake.notify_one();
    }

    /// Rescans on the blocking pool and waits for it.
    pub async fn rescan(self: &Arc<Self>) -> Arc<Listing> {
        let me = self.clone();
        if let Ok(l) = tokio::task::spawn_blocking(move || me.scan()).await {
            *self.listing.write() = Arc::new(l);
        }
        self.listing()
    }

    /// Keeps the listing fresh until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RESCAN_EVERY) => {}
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
            self.rescan().await;
        }
    }

    /// Lists the directory and reads each new or changed file's metadata (once per version of a
    /// file: usable or not, it is not read again until it changes). Blocking.
    fn scan(&self) -> Listing {
        let all = catalog::list(&self.dir);
        let mut parsed = self.parsed.lock();
        parsed.retain(|n, _| all.contains(n));
        let (mut details, mut refused) = (Vec::new(), Vec::new());
        for n in &all {
            let Some((len, mtime)) = file_version(&self.dir.join(n)) else {
                continue;
            };
            let fresh = parsed
                .get(n)
                .is_some_and(|(l, t, _)| *l == len && *t == mtime);
            if !fresh {
                let d = catalog::details(&self.dir, n).map_err(|e| match e {
                    catalog::CatalogError::Unusable { reason, .. } => reason,
                    other => other.to_string(),
                });
                parsed.insert(n.clone(), (len, mtime, d));
            }
            match &parsed[n].2 {
                Ok(d) => details.push(d.clone()),
                Err(reason) => refused.push(RefusedModel {
                    name: n.clone(),
                    reason: reason.clone(),
                }),
            }
        }
        let (snapshots, details): (Vec<ModelDetails>, Vec<ModelDetails>) = details
            .into_iter()
            .partition(|d| d.name.contains(SNAPSHOT_INFIX));
        let snapshots = snapshots.into_iter().map(|d| d.name).collect();
        let names: Vec<String> = details.iter().map(|d| d.name.clone()).collect();
        let default = self
            .configured_default
            .clone()
            .filter(|m| names.contains(m))
            .or_else(|| catalog::pick_default(&details));
        Listing {
            names,
            details,
            refused,
            default,
            snapshots,
        }
    }

    /// Deletes the snapshots of all but the newest `keep` runs (a run's age: its newest
    /// snapshot's). Blocking: run it on the blocking pool.
    pub fn prune_snapshots(&self, keep: usize) {
        let mut runs: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
        for name in catalog::list(&self.dir) {
            let Some((stem, _)) = name.split_once(SNAPSHOT_INFIX) else {
                continue;
            };
            let mtime = file_version(&self.dir.join(&name)).map_or(0, |v| v.1);
            let run = runs.entry(stem.to_owned()).or_default();
            run.0 = run.0.max(mtime);
            run.1.push(name);
        }
        let mut by_age: Vec<(u64, Vec<String>)> = runs.into_values().collect();
        by_age.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, files) in by_age.into_iter().skip(keep) {
            for f in files {
                let _ = std::fs::remove_file(self.dir.join(&f));
            }
        }
        self.wake.notify_one();
    }
}

/// A file's size and modification time (ns), which change when it is rewritten.
fn file_version(path: &std::path::Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    Some((meta.len(), mtime))
}
