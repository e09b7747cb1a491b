//! A session's snapshot in the store (through `store_writer.rs`): written in the background while
//! it changes (the relay never waits for the disk or Redis), written at once when the session is
//! put away — and kept and retried if the store refuses it then — or forgotten when the session
//! is over.

use super::sessions::Sessions;
use super::store::{Put, StoredSession};
use super::task::{SessionTask, Stored, WriteOutcome};
use crate::clock::now_ms;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::{info, warn};

impl SessionTask {
    /// Takes what the last background write came to: true when the store refused it because a
    /// newer owner has the session. A failed write, or a store that may have forgotten the
    /// session (a cluster's Redis restarted, or its entry's time to live running out), marks the
    /// snapshot for writing again.
    pub(super) fn superseded(&mut self) -> bool {
        let refused = self.write.superseded.swap(0, Relaxed);
        if refused != 0 {
            if refused >= self.ident.epoch {
                return true;
            }
            // Refused before this task adopted a newer claim (a second resume joined it).
            self.dirty = true;
        }
        if self.write.failed.swap(false, Relaxed) {
            self.dirty = true;
        }
        let store = &self.sessions.store;
        let stale = store
            .refresh_every()
            .is_some_and(|every| self.written.0.elapsed() >= every);
        if stale || store.generation() != self.written.1 {
            self.dirty = true;
        }
        false
    }

    /// The session as the store keeps it.
    fn stored(&self, running: bool) -> StoredSession {
        StoredSession {
            id: self.ident.id.clone(),
            token: self.ident.token_hash.clone(),
            watch: self.ident.watch_hash.clone(),
            seed: self.ident.seed,
            snapshot: self.snapshot.clone(),
            epoch: self.ident.epoch,
            saved_at_ms: now_ms(),
            running,
            recent: self.recent.iter().cloned().collect(),
        }
    }

    /// Starts writing a changed snapshot unless a write is still in progress (the next tick
    /// writes what changed meanwhile): the relay never waits for the disk.
    pub(super) fn flush_in_background(&mut self) {
        if !self.dirty || self.flushing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.dirty = false;
        self.written = (Instant::now(), self.sessions.store.generation());
        let (sessions, entry) = (self.sessions.clone(), self.stored(true));
        let outcome = self.write.clone();
        self.flushing = Some(tokio::spawn(async move {
            write_entry(&sessions, entry, &outcome).await;
        }));
    }

    /// Writes the snapshot now, after any write in progress, as the session is put away; true
    /// if the store has it (or a newer owner's copy).
    pub(super) async fn put_away(&mut self) -> bool {
        if let Some(h) = self.flushing.take() {
            let _ = h.await;
        }
        self.dirty = false;
        write_entry(&self.sessions, self.stored(false), &self.write).await
    }

    /// Puts a detached session away, retrying with backoff while the store refuses the write
    /// (a read-only directory, Redis down), until the owner's resume window ends. Meanwhile the
    /// session stays live here: a browser that attaches resumes it from memory.
    pub(super) async fn put_away_durably(&mut self) -> Stored {
        if self.put_away().await {
            return Stored::Written;
        }
        let window = Duration::from_secs(self.sessions.cfg.resume_window_secs);
        let deadline = tokio::time::Instant::now() + window;
        let metrics = self.sessions.metrics.clone();
        let stop = self.sessions.stop.clone();
        metrics.store_writes_pending.fetch_add(1, Relaxed);
        let mut backoff = Duration::from_millis(250);
        let outcome = loop {
            warn!(session = %self.id(), retry_in_ms = backoff.as_millis() as u64, "the store refused a detached session; keeping it in memory and retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                Some(a) = self.inbox.attach.recv() => {
                    self.attach(a);
                    break Stored::Reattached;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(session = %self.id(), "the resume window ended before the store took the session; it is forgotten");
                    break Stored::Written;
                }
                _ = stop.cancelled() => break Stored::Written,
            }
            if self.put_away().await {
                info!(session = %self.id(), "the store took the detached session after all");
                break Stored::Written;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        metrics.store_writes_pending.fetch_sub(1, Relaxed);
        outcome
    }

    /// The session is over: its stored copy goes too (unless a newer owner's is there).
    pub(super) async fn forget(&mut self) {
        if let Some(h) = self.flushing.take() {
            let _ = h.await;
        }
        let store = self.sessions.store.clone();
        let (token, epoch) = (self.ident.token_hash.clone(), self.ident.epoch);
        let _ = tokio::task::spawn_blocking(move || store.remove(&token, epoch)).await;
    }
}

/// One write to the store, timed from when it was asked for (a round's wait included); its
/// outcome is left in `outcome`. True unless it failed.
async fn write_entry(sessions: &Sessions, entry: StoredSession, outcome: &WriteOutcome) -> bool {
    let t = Instant::now();
    let (id, epoch) = (entry.id.clone(), entry.epoch);
    match sessions.writer.write(entry).await {
        Ok(Put::Written) => {
            sessions.metrics.observe_flush(t.elapsed());
            true
        }
        Ok(Put::Superseded) => {
            outcome.superseded.store(epoch.max(1), Relaxed);
            warn!(session = %id, "the stored session has a newer owner; not overwritten");
            true
        }
        Err(e) => {
            outcome.failed.store(true, Relaxed);
            sessions.metrics.store_flush_failures.fetch_add(1, Relaxed);
            warn!(session = %id, error = %e, "could not write the session to the store");
            false
        }
    }
}
