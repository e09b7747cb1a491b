//! Test helper: rewrites one file forever with `hamlet_onnx::write_atomic` (the function models and
//! checkpoints are written with). Each version is 4 MiB of one byte value plus an 8-byte header
//! with its length, so a reader can tell a complete file from a torn one.

fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).expect("path"));
    let size: usize = 4 << 20;
    for i in 0u64.. {
        let mut body = (size as u64).to_le_bytes().to_vec();
        body.resize(8 + size, (i % 251) as u8);
        hamlet_onnx::write_atomic(&path, &body).expect("write");
        if i == 0 {
            println!("first version written");
        }
    }
}
