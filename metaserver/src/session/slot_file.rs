//! A session's file, rewritten in place: two copies, `HASH.a.session` and `HASH.b.session`.
//!
//! Each write goes to the copy that does *not* hold the newest snapshot, numbered one past it, and
//! is made durable before it counts: on its own by `fdatasync` ([`sync`]), or with the rest of its
//! round by one `syncfs` (`dir_store.rs`, `store_writer.rs`). A reader takes the valid copy with
//! the highest number; a copy torn by a kill or a power cut fails its checksum and the other one
//! is used, so a crash leaves the last snapshot written or the one before it, never half of one.
//!
//! Why not a new file and a rename per write (`hamlet_onnx::write_atomic`, still used for models
//! and checkpoints): a playing session is written every `--snapshot-flush-ms`, about 1000 writes a
//! second at 256 sessions. Measured on this project's machine (ext4 mounted with `discard`), a
//! create, fsync, rename and fsync of the directory cost 460–940 µs of CPU per write — allocating
//! the new file's blocks, freeing and discarding the old one's — against 86–126 µs for
//! overwriting blocks the file already has and `fdatasync`, encoding included, and less again in
//! rounds (`scripts/bench sessions`; BENCHMARKS.md, "The session store's writes").
//!
//! A copy is a header and the payload (the session's JSON): magic `HSS1`, the copy's number (u64),
//! the payload's length (u32) and a CRC-32 of those two and the payload, all little-endian. Bytes
//! after the payload are left from a longer earlier copy and ignored: the file is never truncated,
//! so its blocks are never freed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"HSS1";
const HEADER: usize = 4 + 8 + 4 + 4;

/// One of a session's two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// Where one of a session's copies is, and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyAt {
    pub slot: Slot,
    pub seq: u64,
}

impl CopyAt {
    /// A session's first copy.
    pub const FIRST: CopyAt = CopyAt {
        slot: Slot::A,
        seq: 1,
    };

    /// Where the next write goes, and its number.
    pub fn next(self) -> CopyAt {
        CopyAt {
            slot: self.slot.other(),
            seq: self.seq + 1,
        }
    }
}

/// The session's file names in `dir` start with `stem` (the hex of its token's hash).
pub fn path(dir: &Path, stem: &str, slot: Slot) -> PathBuf {
    dir.join(format!("{stem}.{}.session", slot.suffix()))
}

/// The stem of a copy's file name (`HASH` of `HASH.a.session`), if `name` is one.
pub fn stem_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".session")?;
    stem.strip_suffix(".a").or_else(|| stem.strip_suffix(".b"))
}

/// Makes a copy written by [`write_unsynced`] durable on its own: `fdatasync`, and when its file
/// is new, an fsync of the directory too, so its name survives a power cut.
pub fn sync(dir: &Path, file: &File, created: bool) -> io::Result<()> {
    file.sync_data()?;
    if created {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `payload` as copy `at.seq` into `at.slot`, leaving it in the page cache: the caller
/// makes it durable (the directory store's rounds: one `syncfs` for all their copies, file names
/// included). Returns the file, and whether it was created.
pub fn write_unsynced(
    dir: &Path,
    stem: &str,
    at: CopyAt,
    payload: &[u8],
) -> io::Result<(File, bool)> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a session over 4 GiB"))?;
    let path = path(dir, stem, at.slot);
    let (file, created) = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            (f, true)
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&at.seq.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&checksum(at.seq, len, payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    file.write_all_at(&bytes, 0)?;
    Ok((file, created))
}

fn checksum(seq: u64, len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A copy's number and payload; `None` when the file is missing, torn or not a copy at all.
pub fn read(path: &Path) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Ok(None);
    }
    let seq = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let end = HEADER + len as usize;
    if bytes.len() < end || checksum(seq, len, &bytes[HEADER..end]) != crc {
        return Ok(None);
    }
    bytes.truncate(end);
    bytes.drain(..HEADER);
    Ok(Some((seq, bytes)))
}

/// The session's newest valid copy: where it is and its payload.
pub fn newest(dir: &Path, stem: &str) -> io::Result<Option<(CopyAt, Vec<u8>)>> {
    let mut best: Option<(CopyAt, Vec<u8>)> = None;
    for slot in [Slot::A, Slot::B] {
        if let Some((seq, payload)) = read(&path(dir, stem, slot))? {
            if best.as_ref().is_none_or(|(b, _)| seq > b.seq) {
                best = Some((CopyAt { slot, seq }, payload));
            }
        }
    }
    Ok(best)
}

/// Deletes both copies, the older first: a crash between the two leaves the newest, never
/// brings back an older one.
pub fn remove(dir: &Path, stem: &str, newest: Slot) -> io::Result<()> {
    for slot in [newest.other(), newest] {
        match fs::remove_file(path(dir, stem, slot)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, stem: &str, at: CopyAt, payload: &[u8]) -> io::Result<()> {
        let (file, created) = write_unsynced(dir, stem, at, payload)?;
        sync(dir, &file, created)
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("hamlet-slots-{}", crate::tokens::new_token()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_newest_valid_copy_wins_and_a_torn_one_falls_back_to_the_other() {
        let dir = temp();
        let first = CopyAt::FIRST;
        write(&dir, "s", first, &[7u8; 5000]).unwrap();
        write(&dir, "s", first.next(), b"second, shorter").unwrap();
        let (at, payload) = newest(&dir, "s").unwrap().unwrap();
        assert_eq!(
            (at, payload.as_slice()),
            (first.next(), &b"second, shorter"[..])
        );
        // A shorter copy over a longer one (the third over the first, in A): the longer one's
        // leftover bytes stay in the file and are not read.
        write(&dir, "s", first.next().next(), b"third").unwrap();
        assert_eq!(newest(&dir, "s").unwrap().unwrap().1, b"third");

        // The newest copy (third, in A) torn mid-payload, as a kill or power cut during its
        // write leaves it: the one before it is read.
        let a = path(&dir, "s", Slot::A);
        let mut bytes = fs::read(&a).unwrap();
        bytes[HEADER + 2] ^= 0xff;
        fs::write(&a, &bytes).unwrap();
        let (at, payload) = newest(&dir, "s").unwrap().unwrap();
        assert_eq!((at.seq, payload.as_slice()), (2, &b"second, shorter"[..]));
        // Cut short inside its header: the same.
        fs::write(&a, &bytes[..HEADER - 3]).unwrap();
        assert_eq!(newest(&dir, "s").unwrap().unwrap().0.seq, 2);
        // Both torn: nothing to resume.
        fs::write(path(&dir, "s", Slot::B), b"{ not a copy").unwrap();
        assert!(newest(&dir, "s").unwrap().is_none());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn copies_are_private_named_by_their_stem_and_removed_together() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp();
        let at = CopyAt {
            slot: Slot::B,
            seq: 9,
        };
        write(&dir, "abc", at, b"x").unwrap();
        write(&dir, "abc", at.next(), b"y").unwrap();
        let mode = fs::metadata(path(&dir, "abc", Slot::B))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(stem_of("abc.a.session"), Some("abc"));
        assert_eq!(stem_of("abc.b.session"), Some("abc"));
        assert_eq!(stem_of("abc.session"), None);
        assert_eq!(stem_of("abc.c.session"), None);
        remove(&dir, "abc", Slot::A).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let _ = fs::remove_dir_all(dir);
    }
}
