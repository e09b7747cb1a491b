//! The models this server offers, kept in memory so that nothing on the async runtime touches
//! the models directory: the listing is rescanned on tokio's blocking pool every few seconds,
//! when `/api/models` is asked (which waits for a fresh scan), and when a model has just been
//! written here (a training run, the cluster's model sync — [`ModelCatalog::note_new`] lists it
//! at once). Parsing an ONNX file's metadata is done once per file version (size and mtime).

use hamlet_onnx::catalog;
use ipc_proto::browser::ModelDetails;
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
    /// Plain file names, sorted.
    pub names: Vec<String>,
    pub details: Vec<ModelDetails>,
    /// What a new session loads: `--default-model` if listed, else `catalog::pick_default`.
    pub default: Option<String>,
}

pub struct ModelCatalog {
    dir: PathBuf,
    configured_default: Option<String>,
    listing: RwLock<Arc<Listing>>,
    /// Parsed metadata by name, valid while the file's size and mtime are unchanged (used by
    /// scans only, on the blocking pool).
    parsed: Mutex<BTreeMap<String, (u64, u64, ModelDetails)>>,
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

    /// Lists the directory and reads each new or changed file's metadata. Blocking.
    fn scan(&self) -> Listing {
        let names = catalog::list(&self.dir);
        let mut parsed = self.parsed.lock();
        parsed.retain(|n, _| names.contains(n));
        let details: Vec<ModelDetails> = names
            .iter()
            .filter_map(|n| {
                let meta = std::fs::metadata(self.dir.join(n)).ok()?;
                let mtime = meta
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_nanos() as u64;
                match parsed.get(n) {
                    Some((len, t, d)) if *len == meta.len() && *t == mtime => Some(d.clone()),
                    _ => {
                        let d = catalog::details(&self.dir, n).ok()?;
                        parsed.insert(n.clone(), (meta.len(), mtime, d.clone()));
                        Some(d)
                    }
                }
            })
            .collect();
        let default = self
            .configured_default
            .clone()
            .filter(|m| names.contains(m))
            .or_else(|| catalog::pick_default(&details));
        Listing {
            names,
            details,
            default,
        }
    }
}
