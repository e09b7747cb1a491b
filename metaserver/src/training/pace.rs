//! How fast this machine trains, measured from the runs it has done, so the training form can say
//! how long each lesson preset will take. Kept beside the session store (`training-pace.json`), so
//! a restarted server still knows.

use ipc_proto::training::{Network, Pacing, TrainingConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::warn;

/// The measured training speed, per network (a dueling update costs several times a qnetwork's,
/// so one network's speed says nothing about the other's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pace {
    /// Env steps per second while learning, by network name.
    pub env_steps_per_sec: std::collections::BTreeMap<String, f64>,
    /// Mean episode length of recent runs.
    pub mean_episode_length: Option<f64>,
    #[serde(skip)]
    current: Option<Measuring>,
}

/// The run being measured.
#[derive(Debug, Clone)]
struct Measuring {
    network: Network,
    /// Shown episodes of a `pacing: run` run wait for their viewers: not the machine's speed.
    waits_for_viewers: (u32, bool),
    last_complete: Instant,
    /// The run was paused since the last completed episode.
    interrupted: bool,
}

impl Pace {
    /// Reads the speeds an earlier server measured (none if the file is missing or unreadable).
    pub fn load(path: Option<&Path>) -> Pace {
        let Some(path) = path else {
            return Pace::default();
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Pace>(&bytes)
                .ok()
                .filter(Pace::is_sane)
                .unwrap_or_else(|| {
                    warn!(file = %path.display(), "unreadable training pace ignored");
                    Pace::default()
                }),
            Err(_) => Pace::default(),
        }
    }

    fn is_sane(&self) -> bool {
        let ok = |v: f64| v.is_finite() && v > 0.0 && v < 1e9;
        self.env_steps_per_sec.len() <= 4
            && self.env_steps_per_sec.values().all(|v| ok(*v))
            && self.mean_episode_length.is_none_or(ok)
    }

    /// Writes the speeds for the next server (atomically).
    pub fn save(&self, path: Option<&PathBuf>) {
        let Some(path) = path else { return };
        let bytes = serde_json::to_vec_pretty(self).expect("a pace serialises");
        if let Err(e) = hamlet_onnx::write_atomic(path, &bytes) {
            warn!(error = %e, "could not save the measured training pace");
        }
    }

    /// A run starts: its episodes are measured from now.
    pub fn start(&mut self, c: &TrainingConfig) {
        let paced = c.pacing == Pacing::Run && c.step_delay > 0.0;
        self.current = Some(Measuring {
            network: c.network,
            waits_for_viewers: (c.show_every.max(1), paced),
            last_complete: Instant::now(),
            interrupted: false,
        });
    }

    /// The run was paused: the time until the next episode completes is not the machine's speed.
    pub fn interrupt(&mut self) {
        if let Some(m) = &mut self.current {
            m.interrupted = true;
        }
    }

    /// Episode `episode` of `length` steps completed.
    pub fn record(&mut self, episode: u32, length: u32) {
        let Some(m) = &mut self.current else { return };
        let now = Instant::now();
        let secs = now.duration_since(m.last_complete).as_secs_f64();
        m.last_complete = now;
        let (show_every, paced) = m.waits_for_viewers;
        let shown = (episode.saturating_sub(1)).is_multiple_of(show_every);
        let waited = std::mem::take(&mut m.interrupted) || (paced && shown);
        if !waited && secs > 0.0 && length > 0 {
            let rate = f64::from(length) / secs;
            let key = m.network.as_str().to_owned();
            let r = self.env_steps_per_sec.entry(key).or_insert(rate);
            *r = 0.95 * *r + 0.05 * rate;
        }
        let l = f64::from(length);
        self.mean_episode_length =
            Some(self.mean_episode_length.map_or(l, |v| 0.98 * v + 0.02 * l));
    }

    /// The run is over.
    pub fn stop(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_episodes_of_a_paced_run_and_pauses_are_not_the_machines_speed() {
        let mut p = Pace::default();
        let c = TrainingConfig {
            show_every: 2,
            step_delay: 0.1,
            ..TrainingConfig::default()
        };
        p.start(&c);
        std::thread::sleep(std::time::Duration::from_millis(20));
        p.record(1, 100); // shown and paced: skipped
        assert!(p.env_steps_per_sec.is_empty());
        std::thread::sleep(std::time::Duration::from_millis(20));
        p.record(2, 100);
        let r = p.env_steps_per_sec["qnetwork"];
        assert!(r > 1000.0 && r < 10_000.0, "{r}");
        p.interrupt();
        std::thread::sleep(std::time::Duration::from_millis(50));
        p.record(4, 100);
        assert_eq!(
            p.env_steps_per_sec["qnetwork"], r,
            "a paused interval counted"
        );
    }

    #[test]
    fn a_saved_pace_is_read_back_and_a_bad_one_ignored() {
        let dir = std::env::temp_dir().join(format!("hamlet-pace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("training-pace.json");
        let mut p = Pace::default();
        p.env_steps_per_sec.insert("qnetwork".into(), 4321.0);
        p.save(Some(&path));
        assert_eq!(
            Pace::load(Some(&path)).env_steps_per_sec["qnetwork"],
            4321.0
        );
        std::fs::write(&path, br#"{"env_steps_per_sec":{"qnetwork":-1}}"#).unwrap();
        assert!(Pace::load(Some(&path)).env_steps_per_sec.is_empty());
        std::fs::remove_dir_all(dir).ok();
    }
}
