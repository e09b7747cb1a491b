//! The embedded session store: a directory (mode 0700) with two copies per session, named by the
//! SHA-256 of its resume token and rewritten in place, one after the other (`slot_file`).
//!
//! Each session has a lock of its own, so writes of different sessions proceed at once; the index
//! (for lookups by watch token, listings and expiry) is locked only around memory, never across
//! disk I/O, so `/api/status` never waits on a write.

use super::slot_file::{self, CopyAt, Slot};
use super::store::{Put, SessionStore, StoreError, StoredRow, StoredSession};
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
/// Each session has its own lock, held across its epoch check and its file I/O, so two writers
/// of one session are ordered and a removal never deletes a newer owner's file; the index (for
/// lookups, listings and expiry) is locked only for map operations, never across I/O, so a slow
/// disk delays the session being written and nothing else (`/api/status` reads the index).
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
        let (mut stems, mut legacy) = (Vec::new(), Vec::new());
        for entry in fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Interrupted writes of the store before copies (`hamlet_onnx::write_atomic`'s
            // temporary files) are litter.
            if name.starts_with(".tmp-") {
                let _ = fs::remove_file(&path);
            } else if let Some(stem) = slot_file::stem_of(&name) {
                if !stems.iter().any(|s| s == stem) {
                    stems.push(stem.to_string());
                }
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
        let newest = self.index.lock().get(&s.token).map(|e| (e.epoch, e.newest));
        if newest.is_some_and(|(epoch, _)| epoch > s.epoch) {
            return Ok(Put::Superseded);
        }
        let at = newest.map_or(CopyAt::FIRST, |(_, n)| n.next());
        let bytes = serde_json::to_vec(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        slot_file::write(&self.dir, s.token.hex(), at, &bytes)?;
        self.index
            .lock()
            .insert(s.token.clone(), index_entry(s, at));
        Ok(Put::Written)
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
mod tests {
    use super::*;
    use crate::tokens::{new_token, plausible_token};

    fn entry(token: &str, epoch: u64, saved_at_ms: u64) -> StoredSession {
        StoredSession {
            id: format!("id-{token}"),
            token: TokenHash::of(token),
            watch: TokenHash::of(&format!("w{token}")),
            seed: 7,
            snapshot: None,
            epoch,
            saved_at_ms,
            running: false,
            recent: Vec::new(),
        }
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("hamlet-store-{}", new_token()));
        d.join("state")
    }

    #[test]
    fn tokens_are_128_random_bits_and_only_their_hashes_are_stored() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(plausible_token(&a) && plausible_token(&b));
        assert!(!plausible_token("../../etc/passwd") && !plausible_token(""));
        let dir = temp();
        let store = DirStore::open(&dir).unwrap();
        let mut s = entry(&a, 1, 5);
        s.id = "session-1".into();
        store.put(&s).unwrap();
        let files: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| {
                String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned()
                    + &e.file_name().to_string_lossy()
            })
            .collect();
        assert_eq!(files.len(), 1);
        assert!(
            !files[0].contains(&a),
            "the token itself is nowhere on disk"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn an_older_epoch_cannot_overwrite_a_newer_one_and_entries_survive_reopening() {
        let dir = temp();
        let store = DirStore::open(&dir).unwrap();
        assert_eq!(store.put(&entry("t", 2, 10)).unwrap(), Put::Written);
        assert_eq!(store.put(&entry("t", 1, 20)).unwrap(), Put::Superseded);
        assert_eq!(store.put(&entry("t", 3, 30)).unwrap(), Put::Written);
        drop(store);
        let store = DirStore::open(&dir).unwrap();
        let got = store.get(&TokenHash::of("t")).unwrap().unwrap();
        assert_eq!((got.epoch, got.saved_at_ms), (3, 30));
        let by_watch = store.get_by_watch(&TokenHash::of("wt")).unwrap().unwrap();
        assert_eq!(by_watch.id, "id-t");
        assert!(store.get(&TokenHash::of("other")).unwrap().is_none());
    }

    #[test]
    fn expiry_forgets_old_entries_and_the_oldest_beyond_the_limit_but_never_live_ones() {
        let store = DirStore::open(&temp()).unwrap();
        for (i, t) in ["a", "b", "c", "d"].iter().enumerate() {
            store.put(&entry(t, 1, 100 + i as u64)).unwrap();
        }
        // Cut-off 101 forgets "a" (100, too old); keeping 1 of those not live keeps "d" (the
        // newest) and forgets "b"; "c" is live, so neither rule touches it.
        let gone = store.expire(101, 1, &|id| id == "id-c").unwrap();
        assert_eq!(gone, 2);
        let ids: Vec<String> = store.list().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["id-c", "id-d"]);
    }

    #[test]
    fn a_session_with_no_valid_copy_is_dropped_at_open_not_served() {
        let dir = temp();
        let store = DirStore::open(&dir).unwrap();
        store.put(&entry("t", 1, 1)).unwrap();
        store.put(&entry("t", 1, 2)).unwrap();
        drop(store);
        let token = TokenHash::of("t");
        for slot in [Slot::A, Slot::B] {
            fs::write(slot_file::path(&dir, token.hex(), slot), b"{ not json").unwrap();
        }
        let store = DirStore::open(&dir).unwrap();
        assert!(store.get(&TokenHash::of("t")).unwrap().is_none());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn writes_take_turns_between_the_copies_and_a_torn_newest_falls_back_to_the_one_before() {
        let dir = temp();
        let store = DirStore::open(&dir).unwrap();
        for saved_at in 1..=3 {
            store.put(&entry("t", 1, saved_at)).unwrap();
        }
        drop(store);
        // The third write went to A again (A, B, A): tear it, as a kill during it would.
        let token = TokenHash::of("t");
        let a = slot_file::path(&dir, token.hex(), Slot::A);
        let bytes = fs::read(&a).unwrap();
        fs::write(&a, &bytes[..bytes.len() - 5]).unwrap();
        let store = DirStore::open(&dir).unwrap();
        let got = store.get(&TokenHash::of("t")).unwrap().unwrap();
        assert_eq!(got.saved_at_ms, 2);
        // The next write goes to the torn copy's slot, not over the good one.
        store.put(&entry("t", 1, 4)).unwrap();
        assert_eq!(
            store.get(&TokenHash::of("t")).unwrap().unwrap().saved_at_ms,
            4
        );
        let b = slot_file::path(&dir, token.hex(), Slot::B);
        assert_eq!(
            slot_file::read(&b).unwrap().unwrap().0,
            2,
            "B still holds copy 2"
        );
    }

    #[test]
    fn a_file_of_the_store_before_copies_is_resumable_after_an_upgrade() {
        let dir = temp();
        fs::create_dir_all(&dir).unwrap();
        let old = entry("t", 2, 77);
        let legacy = dir.join(format!("{}.session", TokenHash::of("t").hex()));
        fs::write(&legacy, serde_json::to_vec(&old).unwrap()).unwrap();
        let store = DirStore::open(&dir).unwrap();
        let got = store.get(&TokenHash::of("t")).unwrap().unwrap();
        assert_eq!((got.epoch, got.saved_at_ms), (2, 77));
        assert!(!legacy.exists(), "rewritten as a copy, the old file goes");
        drop(store);
        let store = DirStore::open(&dir).unwrap();
        assert_eq!(store.list().len(), 1);
    }
}
