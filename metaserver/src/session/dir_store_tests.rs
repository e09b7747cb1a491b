//! The directory store's unit tests (`dir_store.rs`).

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

#[test]
fn a_round_writes_each_session_once_and_its_copies_still_take_turns() {
    let dir = temp();
    let store = DirStore::open(&dir).unwrap();
    assert!(store.writes_in_rounds());
    assert_eq!(store.put(&entry("old", 5, 1)).unwrap(), Put::Written);
    let round = [entry("x", 1, 10), entry("y", 1, 10), entry("old", 4, 10)];
    let outcomes: Vec<Put> = store
        .put_round(&round)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes, [Put::Written, Put::Written, Put::Superseded]);
    // A second round: each session's next copy goes to its other file.
    let again = [entry("x", 1, 20), entry("y", 1, 20)];
    assert!(store.put_round(&again).iter().all(|o| o.is_ok()));
    for t in ["x", "y"] {
        for copy in ["a", "b"] {
            let name = format!("{}.{copy}.session", TokenHash::of(t).hex());
            assert!(dir.join(&name).exists(), "{t}: copy {copy}");
        }
    }
    // The same session twice in one round: written one after the other, the later one last.
    let twice = [entry("x", 1, 30), entry("x", 1, 31)];
    assert!(store.put_round(&twice).iter().all(|o| o.is_ok()));
    drop(store);
    let store = DirStore::open(&dir).unwrap();
    let saved = |t: &str| store.get(&TokenHash::of(t)).unwrap().unwrap().saved_at_ms;
    assert_eq!((saved("x"), saved("y"), saved("old")), (31, 20, 1));
}
