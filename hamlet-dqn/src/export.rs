//! Writes a trained network as an ONNX model with Hamlet's metadata, atomically.

use crate::dqn::TrainerState;
use crate::nn::QNet;
use std::collections::BTreeMap;
use std::path::Path;

/// Facts about how a model was trained, stored in `metadata_props`.
#[derive(Debug, Clone, Default)]
pub struct TrainingFacts {
    pub episodes_trained: u32,
    pub final_avg_reward: f64,
    pub final_avg_length: f64,
    pub seed: u64,
    /// Greedy survival in the deterministic world, if evaluated…
    pub greedy_steps: Option<u32>,
    /// …the return of that greedy episode…
    pub greedy_return: Option<f64>,
    /// …and after how many training episodes the network was taken.
    pub best_episode: Option<u32>,
    pub command: Option<String>,
}

impl TrainingFacts {
    pub fn from_state(s: &TrainerState) -> Self {
        let tail = &s.history[s.history.len().saturating_sub(10)..];
        let k = tail.len().max(1) as f64;
        TrainingFacts {
            episodes_trained: s.episodes_done,
            final_avg_reward: tail.iter().map(|e| e.reward).sum::<f64>() / k,
            final_avg_length: tail.iter().map(|e| f64::from(e.length)).sum::<f64>() / k,
            seed: s.config.seed,
            greedy_steps: None,
            greedy_return: None,
            best_episode: None,
            command: None,
        }
    }

    /// The facts of a run whose saved network is `best` (its evaluation travels with it).
    pub fn of_best(s: &TrainerState, best: &crate::dqn::BestNetwork) -> Self {
        let e = best.evaluation;
        TrainingFacts {
            greedy_steps: Some(e.steps),
            greedy_return: Some(e.reward),
            best_episode: Some(e.episode),
            ..TrainingFacts::from_state(s)
        }
    }
}

pub fn metadata(net: &QNet, f: &TrainingFacts) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(format!("hamlet.{k}"), v);
    };
    put("arch", net.arch().as_str().into());
    put("obs_dim", hamlet_env::OBS_DIM.to_string());
    put("n_actions", hamlet_env::N_ACTIONS.to_string());
    put("action_names", hamlet_env::ACTION_NAMES.join(","));
    put("episodes_trained", f.episodes_trained.to_string());
    put("final_avg_reward", format!("{:.4}", f.final_avg_reward));
    put("final_avg_length", format!("{:.2}", f.final_avg_length));
    put("seed", f.seed.to_string());
    put("created", now_rfc3339());
    if let Some(g) = f.greedy_steps {
        put("greedy_steps", g.to_string());
    }
    if let Some(r) = f.greedy_return {
        put("greedy_return", format!("{r:.2}"));
    }
    if let Some(e) = f.best_episode {
        put("best_episode", e.to_string());
    }
    if let Some(c) = &f.command {
        put("command", c.clone());
    }
    m
}

/// Exports `net` to `path` (atomically: temp file + rename).
pub fn write_model(
    net: &QNet,
    facts: &TrainingFacts,
    path: &Path,
) -> Result<(), hamlet_onnx::OnnxError> {
    let bytes = hamlet_onnx::export(&net.to_onnx_desc(), &metadata(net, facts))?;
    hamlet_onnx::write_atomic(path, &bytes)?;
    Ok(())
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed for one format).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
