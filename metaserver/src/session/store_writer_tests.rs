//! The store writer's unit tests (`store_writer.rs`): how writes are gathered into rounds. The
//! directory store's own rounds are tested in `dir_store_tests.rs`, and every session test of
//! `tests/` writes through a real `StoreWriter`.

use super::*;
use crate::session::store::{StoreError, StoredRow};
use crate::tokens::TokenHash;
use parking_lot::Mutex;

/// A store that records, in memory, the writes of each round it is given (a write of its own
/// is a round of one).
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<Vec<String>>>,
    one_by_one: bool,
}

impl SessionStore for Recording {
    fn put(&self, s: &StoredSession) -> Result<Put, StoreError> {
        self.seen.lock().push(vec![s.id.clone()]);
        Ok(Put::Written)
    }
    fn put_round(&self, entries: &[StoredSession]) -> Vec<Result<Put, StoreError>> {
        self.seen
            .lock()
            .push(entries.iter().map(|s| s.id.clone()).collect());
        entries.iter().map(|_| Ok(Put::Written)).collect()
    }
    fn writes_in_rounds(&self) -> bool {
        !self.one_by_one
    }
    fn get(&self, _: &TokenHash) -> Result<Option<StoredSession>, StoreError> {
        Ok(None)
    }
    fn get_by_watch(&self, _: &TokenHash) -> Result<Option<StoredSession>, StoreError> {
        Ok(None)
    }
    fn remove(&self, _: &TokenHash, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn expire(&self, _: u64, _: usize, _: &dyn Fn(&str) -> bool) -> Result<usize, StoreError> {
        Ok(0)
    }
    fn list(&self) -> Vec<StoredRow> {
        Vec::new()
    }
}

/// A session's write: `id` names the write, `token` the session.
fn entry(id: &str, token: &str) -> StoredSession {
    StoredSession {
        id: id.into(),
        token: TokenHash::of(token),
        watch: TokenHash::of("w"),
        seed: 1,
        snapshot: None,
        epoch: 1,
        saved_at_ms: 0,
        running: true,
        recent: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_together_make_one_round_and_each_gets_its_outcome() {
    let store = Arc::new(Recording::default());
    let writer = Arc::new(StoreWriter::new(store.clone()).unwrap());
    let writes = (0..64).map(|i| {
        let writer = writer.clone();
        tokio::spawn(async move { writer.write(entry(&i.to_string(), &i.to_string())).await })
    });
    for w in futures_util::future::join_all(writes).await {
        assert_eq!(w.unwrap().unwrap(), Put::Written);
    }
    let seen = store.seen.lock().clone();
    assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), 64);
    // Usually one; a busy machine may split them, never into many.
    assert!(
        seen.len() < 8,
        "64 writes sent at once took {} rounds",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_write_of_a_session_waits_for_the_next_round() {
    let store = Arc::new(Recording::default());
    let writer = StoreWriter::new(store.clone()).unwrap();
    let (a, b, c) = tokio::join!(
        writer.write(entry("first", "s")),
        writer.write(entry("second", "s")),
        writer.write(entry("other", "o")),
    );
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    let seen = store.seen.lock().clone();
    assert_eq!(seen, [vec!["first", "other"], vec!["second"]]);
}

#[tokio::test(start_paused = true)]
async fn every_sessions_periodic_writes_fall_on_the_same_instants() {
    let period = Duration::from_millis(250);
    let rounds = StoreWriter::new(Arc::new(Recording::default())).unwrap();
    let mut first = rounds.flush_ticks(period);
    tokio::time::sleep(Duration::from_millis(37)).await;
    let mut second = rounds.flush_ticks(period);
    let (a, b) = (first.tick().await, second.tick().await);
    assert_eq!(a, b, "ticks of sessions started 37 ms apart");
    assert_eq!(first.tick().await, a + period);

    // A store written one by one: each session ticks from its own start, and each write is
    // a `put` of its own.
    let store = Arc::new(Recording {
        one_by_one: true,
        ..Default::default()
    });
    let one_by_one = StoreWriter::new(store.clone()).unwrap();
    let started = Instant::now();
    let mut first = one_by_one.flush_ticks(period);
    tokio::time::sleep(Duration::from_millis(37)).await;
    let mut second = one_by_one.flush_ticks(period);
    assert_eq!(first.tick().await, started);
    assert_eq!(second.tick().await, started + Duration::from_millis(37));
    one_by_one.write(entry("w", "s")).await.unwrap();
    assert_eq!(*store.seen.lock(), [vec!["w"]]);
}
