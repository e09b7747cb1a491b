//! The embedded session store: a directory (mode 0700) with two copies per session, named by the
//! SHA-256 of its resume token and rewritten in place, one after the other (`slot_file`).
//!
//! Live sessions write in rounds (`put_round`, from the `store-writer` thread of
//! `store_writer.rs`): every copy of the round, then one `syncfs`. Each session has a lock of its
//! own, held by whoever writes or removes it; the index (for lookups by watch token, listings and
//! expiry) is locked only around memory, never across disk I/O, so `/api/status` never waits on a
//! write.

use super::slot_file::{self, CopyAt, Slot};
use super::store::{one_per_session, Put, SessionStore, StoreError, StoredRow, StoredSession};
use crate::tokens::TokenHash;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the directory store remembers of each file, so lookups by watch token, listings and
/// expiry need no directory scan.
#[derive(Debug, Clone)]
struct IndexEntry {
    id: String,
    watch: TokenHash,
    epoch: u64,
    episode: u32,
    step: u32,
    saved_at_ms: u64,
    /// The session's newest copy on disk: the next write goes to the other one.
    newest: CopyAt,
}

/// The embedded store: `DIR/<sha256 of token>.{a,b}.session`, JSON in two copies rewritten in
/// place by turns, each with a number and a checksum (`slot_file`: a crash or power cut leaves the
/// newest copy or the one before it, never half of one). The directory is 0700, the files 0600.
///
/// Each session has its own lock, held from its epoch check until the index names its durable
/// copy, so two writers of one session are ordered and a removal never deletes a newer owner's
/// file; the index (for lookups, listings and expiry) is locked only for map operations, never
/// across I/O, so a slow disk delays writes and nothing else (frames never wait for a write, and
/// `/api/status` reads the index).
pub struct DirStore {
    dir: PathBuf,
    index: Mutex<HashMap<TokenHash, IndexEntry>>,
    /// One lock per session, created on its first write.
    writers: Mutex<HashMap<TokenHash, Arc<Mutex<()>>>>,
    /// Test-only: every write first waits this long (`HAMLET_FAULT_SLOW_STORE_MS`).
    slow: Option<std::time::Duration>,
}

/// Test-only fault switch: the directory store's writes take this many milliseconds longer
/// (a slow disk). Unset in production.
pub const ENV_FAULT_SLOW_STORE_MS: &str = "HAMLET_FAULT_SLOW_STORE_MS";

impl DirStore {
    /// Opens (creating it 0700) `dir` and indexes the sessions already there; unreadable files are
    /// logged and removed (they could never be resumed).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let slow = std::env::var(ENV_FAULT_SLOW_STORE_MS)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        let store = DirStore {
            dir: dir.to_path_buf(),
            index: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            slow,
        };
        // A set: each session has two copies, and is indexed once.
        let (mut stems, mut legacy) = (std::collections::BTreeSet::new(), Vec::new());
        for entry in fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Interrupted writes of the store before copies (`hamlet_onnx::write_atomic`'s
            // temporary files) are litter.
            if name.starts_with(".tmp-") {
                let _ = fs::remove_file(&path);
            } else if let Some(stem) = slot_file::stem_of(&name) {
                stems.insert(stem.to_string());
            } else if path.extension().is_some_and(|e| e == "session") {
                legacy.push(path);
            }
        }
        for stem in stems {
            store.index_copies(&stem);
        }
        for path in legacy {
            store.migrate(&path);
        }
        Ok(store)
    }

    /// Indexes the session whose copies are named `stem`; one with no valid copy is logged and
    /// removed (it could never be resumed).
    fn index_copies(&self, stem: &str) {
        let read = slot_file::newest(&self.dir, stem).map_err(StoreError::from);
        let parsed = read.and_then(|copy| match copy {
            Some((at, bytes)) => parse(&bytes).map(|s| Some((at, s))),
            None => Ok(None),
        });
        match parsed {
            Ok(Some((at, s))) => {
                self.index
                    .lock()
                    .insert(s.token.clone(), index_entry(&s, at));
                return;
            }
            Ok(None) => {
                tracing::warn!(session_file = %stem, "dropping a session with no valid copy")
            }
            Err(e) => {
                tracing::warn!(session_file = %stem, error = %e, "dropping a session whose copy cannot be read")
            }
        }
        let _ = slot_file::remove(&self.dir, stem, Slot::A);
    }

    /// A session file written before the store kept two copies (`HASH.session`, whole JSON):
    /// rewritten as the first copy, so sessions survive an upgrade of the server. Copies already
    /// there (a crash after the copy was written, before this file was removed) are kept. A file
    /// whose copy cannot be written (a full disk) stays for the next start.
    fn migrate(&self, path: &Path) {
        match fs::read(path)
            .map_err(StoreError::from)
            .and_then(|b| parse(&b))
        {
            Ok(s) if self.index.lock().contains_key(&s.token) => {}
            Ok(s) => {
                if let Err(e) = self.put(&s) {
                    tracing::warn!(file = %path.display(), error = %e, "could not rewrite a session file of the old store; kept for the next start");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "dropping an unreadable session file")
            }
        }
        let _ = fs::remove_file(path);
    }

    /// Writes `s` into the copy after its newest, not yet durable, unless the stored entry's
    /// epoch is newer (`None`). The caller holds the session's lock, and makes the copy durable
    /// before the index names it.
    fn write_copy(
        &self,
        s: &StoredSession,
    ) -> Result<Option<(CopyAt, fs::File, bool)>, StoreError> {
        let newest = self.index.lock().get(&s.token).map(|e| (e.epoch, e.newest));
        if newest.is_some_and(|(epoch, _)| epoch > s.epoch) {
            return Ok(None);
        }
        let at = newest.map_or(CopyAt::FIRST, |(_, n)| n.next());
        let bytes = serde_json::to_vec(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (file, created) = slot_file::write_unsynced(&self.dir, s.token.hex(), at, &bytes)?;
        Ok(Some((at, file, created)))
    }

    /// The lock of one session's file.
    fn writer(&self, token: &TokenHash) -> Arc<Mutex<()>> {
        self.writers
            .lock()
            .entry(token.clone())
            .or_default()
            .clone()
    }
}

fn index_entry(s: &StoredSession, newest: CopyAt) -> IndexEntry {
    let (episode, step) = s
        .snapshot
        .as_ref()
        .map_or((1, 0), |s| (s.episode, s.world.step));
    IndexEntry {
        id: s.id.clone(),
        watch: s.watch.clone(),
        epoch: s.epoch,
        episode,
        step,
        saved_at_ms: s.saved_at_ms,
        newest,
    }
}

/// One error for each of a round's entries (`io::Error` is not `Clone`).
fn io_error(e: &std::io::Error) -> StoreError {
    StoreError::Io(std::io::Error::new(e.kind(), e.to_string()))
}

fn parse(bytes: &[u8]) -> Result<StoredSession, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SessionStore for DirStore {
    fn put(&self, s: &StoredSession) -> Result<Put, StoreError> {
        let lock = self.writer(&s.token);
        let _one_writer = lock.lock();
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        let Some((at, file, created)) = self.write_copy(s)? else {
            return Ok(Put::Superseded);
        };
        slot_file::sync(&self.dir, &file, created)?;
        self.index
            .lock()
            .insert(s.token.clone(), index_entry(s, at));
        Ok(Put::Written)
    }

    /// Every copy of the round is written, then one `syncfs` makes them all durable, names of
    /// new files included: in a round of 256, 3.4–4.4 times less of the machine's CPU per write
    /// than an `fdatasync` each (BENCHMARKS.md, "Writes in rounds"). Each session's lock is held from
    /// its epoch check until the index names its new copy, so a removal waits for the round.
    /// `syncfs` writes back everything unwritten on the file system, so another program writing
    /// much to the same disk slows the round (never a frame: nothing waits for a round but the
    /// sessions' writes).
    fn put_round(&self, entries: &[StoredSession]) -> Vec<Result<Put, StoreError>> {
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        // Opened before the writes: `syncfs` reports the errors of writeback since then.
        let dir = match fs::File::open(&self.dir) {
            Ok(d) => d,
            Err(e) => return entries.iter().map(|_| Err(io_error(&e))).collect(),
        };
        // A session twice in one round would write both of its copies before either is durable:
        // the second waits for a round of its own (the store writer never sends one).
        let (round, later) = one_per_session(0..entries.len(), |i| entries[*i].token.clone());
        let locks: Vec<_> = round
            .iter()
            .map(|i| self.writer(&entries[*i].token))
            .collect();
        let held: Vec<_> = locks.iter().map(|l| l.lock()).collect();
        let mut written = Vec::with_capacity(round.len());
        let mut outcomes: Vec<Option<Result<Put, StoreError>>> =
            entries.iter().map(|_| None).collect();
        for &i in &round {
            outcomes[i] = Some(match self.write_copy(&entries[i]) {
                Ok(Some((at, ..))) => {
                    written.push((i, at));
                    Ok(Put::Written)
                }
                Ok(None) => Ok(Put::Superseded),
                Err(e) => Err(e),
            });
        }
        match nix::unistd::syncfs(&dir) {
            Ok(()) => {
                let mut index = self.index.lock();
                for &(i, at) in &written {
                    index.insert(entries[i].token.clone(), index_entry(&entries[i], at));
                }
            }
            // Not durable: the index still names each session's copy before this round, so its
            // next write goes over this round's copy again, never over the durable one.
            Err(e) => {
                let e = std::io::Error::from(e);
                for &(i, _) in &written {
                    outcomes[i] = Some(Err(io_error(&e)));
                }
            }
        }
        drop(held);
        for i in later {
            outcomes[i] = Some(self.put(&entries[i]));
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every entry has an outcome"))
            .collect()
    }

    fn writes_in_rounds(&self) -> bool {
        true
    }

    fn get(&self, token: &TokenHash) -> Result<Option<StoredSession>, StoreError> {
        if !self.index.lock().contains_key(token) {
            return Ok(None);
        }
        // Both copies are read, not just the one the index names: a write in progress goes to
        // the other one, and one finishing meanwhile may have moved the newest.
        match slot_file::newest(&self.dir, token.hex())? {
            Some((_, bytes)) => parse(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn get_by_watch(&self, watch: &TokenHash) -> Result<Option<StoredSession>, StoreError> {
        let token = self
            .index
            .lock()
            .iter()
            .find(|(_, e)| e.watch.matches(watch))
            .map(|(t, _)| t.clone());
        match token {
            Some(t) => self.get(&t),
            None => Ok(None),
        }
    }

    fn remove(&self, token: &TokenHash, epoch: u64) -> Result<(), StoreError> {
        // Under the session's lock: no writer can put a newer copy between the check and the
        // deletion.
        let lock = self.writer(token);
        let _one_writer = lock.lock();
        let newest = self
            .index
            .lock()
            .get(token)
            .map(|e| (e.epoch, e.newest.slot));
        match newest {
            Some((newer, _)) if newer > epoch => return Ok(()),
            Some((_, slot)) => slot_file::remove(&self.dir, token.hex(), slot)?,
            None => {}
        }
        self.index.lock().remove(token);
        self.writers.lock().remove(token);
        Ok(())
    }

    fn expire(
        &self,
        cutoff_ms: u64,
        keep: usize,
        live: &dyn Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let doomed: Vec<TokenHash> = {
            let index = self.index.lock();
            let mut idle: Vec<(&TokenHash, &IndexEntry)> =
                index.iter().filter(|(_, e)| !live(&e.id)).collect();
            // Newest first: beyond `keep`, the oldest go.
            idle.sort_by_key(|e| std::cmp::Reverse(e.1.saved_at_ms));
            idle.iter()
                .enumerate()
                .filter(|(i, (_, e))| *i >= keep || e.saved_at_ms < cutoff_ms)
                .map(|(_, (t, _))| (*t).clone())
                .collect()
        };
        for t in &doomed {
            self.remove(t, u64::MAX)?;
        }
        Ok(doomed.len())
    }

    fn list(&self) -> Vec<StoredRow> {
        let mut rows: Vec<StoredRow> = self
            .index
            .lock()
            .values()
            .map(|e| StoredRow {
                id: e.id.clone(),
                episode: e.episode,
                step: e.step,
                saved_at_ms: e.saved_at_ms,
                running_elsewhere: false,
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }
}

#[cfg(test)]
#[path = "dir_store_tests.rs"]
mod tests;
