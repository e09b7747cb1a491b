//! The time machine (rooms.md): a run keeps its network every `snapshot_period()` episodes, and
//! its first, as ordinary model files (`STEM.snap-eNNNNN.onnx`, written by the training worker);
//! with the run's saved model — its best — they are what `GET /api/rooms/{room}/snapshots` lists
//! for the UI to play side by side. Snapshots are not offered in the models list, and only the
//! newest `--max-snapshot-runs` runs keep theirs.

use crate::model_catalog::Listing;
use ipc_proto::training::SNAPSHOT_INFIX;
use serde::Serialize;

/// One network of a run that can be loaded into a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Episodes trained when it was taken.
    pub episode: u32,
    /// Its model name, for `load_model`.
    pub model: String,
    pub kind: SnapshotKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// The untrained network the run began with.
    First,
    /// Taken every `snapshot_every` episodes.
    Every,
    /// The run's saved model: its best greedy evaluation.
    Best,
}

/// The snapshots of the run whose files have `stem`, in episode order, then its best (when the
/// run saved one: the episode of its evaluation, and the model's name).
pub fn of_run(listing: &Listing, stem: &str, best: Option<(u32, String)>) -> Vec<Snapshot> {
    let prefix = format!("{stem}{SNAPSHOT_INFIX}");
    let mut out: Vec<Snapshot> = listing
        .snapshots
        .iter()
        .filter_map(|name| {
            let episode = name
                .strip_prefix(&prefix)?
                .strip_suffix(".onnx")?
                .parse()
                .ok()?;
            let kind = if episode == 0 {
                SnapshotKind::First
            } else {
                SnapshotKind::Every
            };
            Some(Snapshot {
                episode,
                model: name.clone(),
                kind,
            })
        })
        .collect();
    out.sort_by_key(|s| s.episode);
    if let Some((episode, model)) = best.filter(|(_, m)| listing.names.contains(m)) {
        out.push(Snapshot {
            episode,
            model,
            kind: SnapshotKind::Best,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_snapshots_in_episode_order_then_its_best() {
        let listing = Listing {
            names: vec!["red-run.onnx".into()],
            snapshots: [
                "red-1-s1.snap-e00010.onnx",
                "red-1-s1.snap-e00000.onnx",
                "blue-2-s1.snap-e00010.onnx",
            ]
            .map(String::from)
            .to_vec(),
            ..Listing::default()
        };
        let s = of_run(&listing, "red-1-s1", Some((7, "red-run.onnx".into())));
        let got: Vec<(u32, SnapshotKind)> = s.iter().map(|s| (s.episode, s.kind)).collect();
        assert_eq!(
            got,
            [
                (0, SnapshotKind::First),
                (10, SnapshotKind::Every),
                (7, SnapshotKind::Best)
            ]
        );
        // A best model that is not (or no longer) in the directory is not listed.
        assert_eq!(
            of_run(&listing, "red-1-s1", Some((7, "gone.onnx".into()))).len(),
            2
        );
    }
}
