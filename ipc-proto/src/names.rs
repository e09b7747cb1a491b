//! What a model file name from a client may look like: plain names, never paths. The one rule,
//! used by the models catalogue (`hamlet_onnx::catalog`) and the `start_training` field table.

/// Longest model file name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A plain model file name: `[A-Za-z0-9][A-Za-z0-9._-]*\.onnx`, at most [`MAX_NAME_LEN`] bytes,
/// no `..`.
pub fn is_plain_model_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        && !name.contains("..")
        && name.ends_with(".onnx")
        && name.len() > ".onnx".len()
}
