//! A file being written when its process is killed is never left half-written under its name.

use hamlet_tests::*;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

fn check_complete(path: &std::path::Path) {
    let bytes =
        std::fs::read(path).expect("the final name always holds a file once one was written");
    assert!(bytes.len() >= 8);
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(
        bytes.len(),
        8 + len,
        "torn file: {} bytes, header says {}",
        bytes.len(),
        8 + len
    );
    let v = bytes[8];
    assert!(bytes[8..].iter().all(|b| *b == v), "mixed contents");
}

#[test]
fn kill_9_during_atomic_writes_never_tears_the_file() {
    let dir = temp_dir("atomic");
    let path = dir.join("model.onnx");
    for round in 0..25u64 {
        let mut child = Command::new(bin_dir().join("atomic_writer"))
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the first complete version (an event, not a sleep), then kill at a varying
        // moment inside the write loop.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        std::thread::sleep(Duration::from_millis(3 + (round * 7) % 40));
        child.kill().unwrap();
        child.wait().unwrap();
        check_complete(&path);
    }
    // Temp files of interrupted writes are hidden (dot-prefixed), so listings never offer them.
    assert_eq!(
        hamlet_onnx::catalog::list(&dir),
        vec!["model.onnx".to_string()]
    );
    let _ = std::fs::remove_dir_all(dir);
}
