//! The models directory as clients see it: plain file names only, never paths.
//!
//! **Invariant:** a name from a client reaches the filesystem only through [`resolve`], which
//! accepts plain `*.onnx` names and checks the result really lies inside the models directory.

use ipc_proto::browser::ModelDetails;
use std::path::{Path, PathBuf};

pub use ipc_proto::names::MAX_NAME_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("`{0}` is not a plain model file name (letters, digits, `._-`, ending in .onnx)")]
    NotPlain(String),
    #[error("no model named `{0}`")]
    NotFound(String),
    /// The file is not a model this world can use (truncated, not ONNX, the wrong shapes, too
    /// large). The message names the file, never a path on the server.
    #[error("model `{name}` cannot be used: {reason}")]
    Unusable { name: String, reason: String },
}

/// Models are about 100 KB to 1 MB; a file far larger is not one of ours (and is not read).
pub const MAX_MODEL_BYTES: u64 = 16 << 20;

/// Checks that `bytes` are a model this world can use: an ONNX graph with one input
/// `[batch, 72]` and the Q-values `[batch, 5]` as its first output. The reason, if not.
pub fn check_model(bytes: &[u8]) -> Result<crate::ModelInfo, String> {
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(format!(
            "{} bytes, more than a model's {MAX_MODEL_BYTES}",
            bytes.len()
        ));
    }
    let info = crate::inspect(bytes)
        .map_err(|_| "not an ONNX model (truncated or another kind of file)".to_owned())?;
    info.check_shapes(hamlet_env::OBS_DIM as i64, hamlet_env::N_ACTIONS as i64)?;
    Ok(info)
}

/// A plain model file name (the one rule: [`ipc_proto::names::is_plain_model_name`]).
pub fn is_plain_name(name: &str) -> bool {
    ipc_proto::names::is_plain_model_name(name)
}

/// Sorted plain names of the `.onnx` files in `dir` (temp files of atomic writes are hidden by
/// their leading dot).
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        // Only what a client could load: plain names that resolve inside the directory.
        .filter(|n| resolve(dir, n).is_ok())
        .collect();
    names.sort();
    names
}

/// The model shipped for new sessions, preferred when present.
pub const DEFAULT_MODEL: &str = "hamlet-default.onnx";

/// The model new sessions get when the operator named none: [`DEFAULT_MODEL`] if listed, else the
/// most recently *trained* model (its `hamlet.created` metadata; RFC 3339 in UTC, so it sorts as
/// text), else — for models without that fact — the newest file. File times alone are not used
/// first: a fresh clone gives every file the time of the checkout.
pub fn pick_default(models: &[ModelDetails]) -> Option<String> {
    if models.iter().any(|m| m.name == DEFAULT_MODEL) {
        return Some(DEFAULT_MODEL.to_owned());
    }
    models
        .iter()
        .max_by(|a, b| {
            (a.created.is_some(), &a.created, a.modified, &a.name).cmp(&(
                b.created.is_some(),
                &b.created,
                b.modified,
                &b.name,
            ))
        })
        .map(|m| m.name.clone())
}

/// Maps a client-supplied name to a file inside `dir`, or says why not.
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf, CatalogError> {
    if !is_plain_name(name) {
        return Err(CatalogError::NotPlain(name.chars().take(80).collect()));
    }
    let p = dir.join(name);
    let inside = match (p.canonicalize(), dir.canonicalize()) {
        (Ok(f), Ok(d)) => f.parent() == Some(d.as_path()) && f.is_file(),
        _ => false,
    };
    if inside {
        Ok(p)
    } else {
        Err(CatalogError::NotFound(name.to_owned()))
    }
}

/// File facts plus what the model says about itself; [`CatalogError::Unusable`] for a file that
/// is not a model this world can use ([`check_model`]).
pub fn details(dir: &Path, name: &str) -> Result<ModelDetails, CatalogError> {
    let path = resolve(dir, name)?;
    let meta = std::fs::metadata(&path).map_err(|_| CatalogError::NotFound(name.into()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let unusable = |reason: String| CatalogError::Unusable {
        name: name.to_owned(),
        reason,
    };
    if meta.len() > MAX_MODEL_BYTES {
        return Err(unusable(format!(
            "{} bytes, more than a model's {MAX_MODEL_BYTES}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&path).map_err(|_| CatalogError::NotFound(name.into()))?;
    let info = check_model(&bytes).map_err(unusable)?;
    let get = |k: &str| info.metadata.get(&format!("hamlet.{k}")).cloned();
    let dim = |v: &[(String, Vec<i64>)]| {
        v.first()
            .and_then(|(_, d)| d.get(1))
            .and_then(|d| u32::try_from(*d).ok())
    };
    Ok(ModelDetails {
        name: name.to_owned(),
        arch: get("arch"),
        obs_dim: get("obs_dim")
            .and_then(|s| s.parse().ok())
            .or(dim(&info.inputs)),
        n_actions: get("n_actions")
            .and_then(|s| s.parse().ok())
            .or(dim(&info.outputs)),
        bytes: meta.len(),
        modified,
        episodes_trained: get("episodes_trained").and_then(|s| s.parse().ok()),
        final_avg_reward: get("final_avg_reward").and_then(|s| s.parse().ok()),
        final_avg_length: get("final_avg_length").and_then(|s| s.parse().ok()),
        seed: get("seed").and_then(|s| s.parse().ok()),
        created: get("created"),
        greedy_steps: get("greedy_steps").and_then(|s| s.parse().ok()),
        greedy_return: get("greedy_return")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite()),
        room: get("room"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_is_the_shipped_one_then_the_latest_trained() {
        let m = |name: &str, created: Option<&str>, modified: u64| ModelDetails {
            name: name.into(),
            created: created.map(str::to_owned),
            modified,
            ..Default::default()
        };
        let trained = [
            m("old.onnx", Some("2026-01-01T00:00:00Z"), 900),
            m("new.onnx", Some("2026-06-01T00:00:00Z"), 100),
            m("no-facts.onnx", None, 999),
        ];
        // File times (a checkout's) lose to training times.
        assert_eq!(pick_default(&trained).as_deref(), Some("new.onnx"));
        let mut all = trained.to_vec();
        all.push(m(DEFAULT_MODEL, Some("2020-01-01T00:00:00Z"), 1));
        assert_eq!(pick_default(&all).as_deref(), Some(DEFAULT_MODEL));
        assert_eq!(
            pick_default(&[m("a.onnx", None, 1), m("b.onnx", None, 2)]).as_deref(),
            Some("b.onnx")
        );
        assert_eq!(pick_default(&[]), None);
    }

    #[test]
    fn plain_names() {
        for ok in ["a.onnx", "default.onnx", "dqn_q1-2026.v2.onnx", "X9.onnx"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".onnx",
            "../../etc/passwd",
            "/etc/passwd",
            "a/b.onnx",
            "..onnx",
            "a..b.onnx",
            ".hidden.onnx",
            "a.onnx\0",
            "a\0.onnx",
            "a.ONNX",
            "a.onnx/",
            "model",
            "é.onnx",
            "a b.onnx",
            "a\\b.onnx",
            "-a.onnx",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(!is_plain_name(&format!("{}.onnx", "a".repeat(200))));
    }

    #[test]
    fn resolve_stays_inside_and_symlinks_out_are_refused() {
        let root = std::env::temp_dir().join(format!("catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("models");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.onnx"), b"x").unwrap();
        std::fs::write(root.join("secret.onnx"), b"s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("secret.onnx"), dir.join("escape.onnx")).unwrap();
        assert!(resolve(&dir, "good.onnx").is_ok());
        assert_eq!(
            resolve(&dir, "missing.onnx"),
            Err(CatalogError::NotFound("missing.onnx".into()))
        );
        assert!(matches!(
            resolve(&dir, "../secret.onnx"),
            Err(CatalogError::NotPlain(_))
        ));
        assert!(matches!(
            resolve(&dir, "escape.onnx"),
            Err(CatalogError::NotFound(_))
        ));
        assert_eq!(list(&dir), vec!["good.onnx".to_string()]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
