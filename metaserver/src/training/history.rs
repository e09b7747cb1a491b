//! The training run's history for `GET /api/training/history`: every episode's figures and every
//! greedy evaluation, so a late joiner (or a reloaded page) draws the whole curve at once; the
//! previous run is kept for comparison. Answers are bounded: a long run is downsampled to at
//! most [`MAX_ROWS`] rows, keeping each bucket's lowest and highest reward.

use hamlet_env::rng::SessionRng;
use hamlet_env::{World, N_ACTIONS};
use ipc_proto::browser::{EndReason, EpisodeComplete};
use ipc_proto::training::TrainingConfig;
use serde::Serialize;
use std::time::Instant;

/// Most episode rows in one answer.
pub const MAX_ROWS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpisodeRow {
    pub episode: u32,
    pub reward: f64,
    pub length: u32,
    pub loss: f64,
    pub epsilon: f64,
    /// Why it ended: the meter that ran out, or the step cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
}

/// Why a training episode ended, for the "why episodes ended" chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Energy,
    Hygiene,
    Satiation,
    MaxSteps,
}

impl Ending {
    fn of(e: &EpisodeComplete) -> Option<Ending> {
        match (e.reason?, e.meter.as_deref()) {
            (EndReason::MaxSteps, _) => Some(Ending::MaxSteps),
            (EndReason::MeterDepleted, Some("energy")) => Some(Ending::Energy),
            (EndReason::MeterDepleted, Some("hygiene")) => Some(Ending::Hygiene),
            (EndReason::MeterDepleted, Some("satiation")) => Some(Ending::Satiation),
            _ => None,
        }
    }
}

/// How the episodes of one window of the run ended (counts), over every episode — not the
/// downsampled rows.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct EndingsWindow {
    pub from: u32,
    pub to: u32,
    pub energy: u32,
    pub hygiene: u32,
    pub satiation: u32,
    pub max_steps: u32,
}

/// Windows of the endings chart in one answer.
pub const ENDING_WINDOWS: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EvaluationRow {
    pub episode: u32,
    pub steps: u32,
    pub reward: f64,
}

/// One run's figures, in episode order.
#[derive(Debug, Clone, Default)]
pub struct RunHistory {
    pub config: Option<TrainingConfig>,
    episodes: Vec<EpisodeRow>,
    evaluations: Vec<EvaluationRow>,
    /// When this server saw the run start (for its time to competence).
    started: Option<Instant>,
    /// The first greedy evaluation that was competent, and when.
    competent: Option<Competence>,
}

/// When a run first became competent (rooms.md: a greedy evaluation that survives `max_steps`
/// with return ≥ 1000): after how many episodes, and how many seconds after it started here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Competence {
    pub episode: u32,
    pub seconds: f64,
}

/// What the endpoint answers for one run.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    pub config: Option<TrainingConfig>,
    pub episodes: Vec<EpisodeRow>,
    pub evaluations: Vec<EvaluationRow>,
    pub downsampled: bool,
    /// How episodes ended, window by window (at most [`ENDING_WINDOWS`]).
    pub endings: Vec<EndingsWindow>,
}

impl RunHistory {
    pub fn new(config: TrainingConfig) -> Self {
        RunHistory {
            config: Some(config),
            started: Some(Instant::now()),
            ..RunHistory::default()
        }
    }

    pub fn evaluations(&self) -> &[EvaluationRow] {
        &self.evaluations
    }

    /// Episodes recorded (the last one's number).
    pub fn episodes_done(&self) -> u32 {
        self.episodes.last().map_or(0, |r| r.episode)
    }

    pub fn competence(&self) -> Option<Competence> {
        self.competent
    }

    /// Seconds since the run started here.
    pub fn seconds(&self) -> f64 {
        self.started.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    pub fn is_empty(&self) -> bool {
        self.episodes.is_empty()
    }

    /// Records an episode. A run resumed from a checkpoint runs some episodes again: the newer
    /// figures replace the older ones from that episode on.
    pub fn episode(&mut self, e: &EpisodeComplete) {
        while self.episodes.last().is_some_and(|r| r.episode >= e.episode) {
            self.episodes.pop();
        }
        self.episodes.push(EpisodeRow {
            episode: e.episode,
            reward: e.reward,
            length: e.length,
            loss: e.loss,
            epsilon: e.epsilon,
            ended: Ending::of(e),
        });
    }

    pub fn evaluation(&mut self, episode: u32, steps: u32, reward: f64) {
        while self
            .evaluations
            .last()
            .is_some_and(|r| r.episode >= episode)
        {
            self.evaluations.pop();
        }
        self.evaluations.push(EvaluationRow {
            episode,
            steps,
            reward,
        });
        let competent = self
            .config
            .as_ref()
            .is_some_and(|c| c.is_competent(steps, reward));
        if competent && self.competent.is_none() {
            self.competent = Some(Competence {
                episode,
                seconds: self.seconds(),
            });
        }
    }

    pub fn view(&self) -> HistoryView {
        let (episodes, downsampled) = downsample(&self.episodes, MAX_ROWS);
        HistoryView {
            config: self.config.clone(),
            episodes,
            evaluations: self.evaluations.clone(),
            downsampled,
            endings: endings(&self.episodes, ENDING_WINDOWS),
        }
    }
}

/// The episodes cut into at most `windows` windows of equal size, each with its endings counted.
fn endings(rows: &[EpisodeRow], windows: usize) -> Vec<EndingsWindow> {
    let size = rows.len().div_ceil(windows.max(1)).max(1);
    rows.chunks(size)
        .map(|chunk| {
            let mut w = EndingsWindow {
                from: chunk[0].episode,
                to: chunk[chunk.len() - 1].episode,
                ..EndingsWindow::default()
            };
            for r in chunk {
                match r.ended {
                    Some(Ending::Energy) => w.energy += 1,
                    Some(Ending::Hygiene) => w.hygiene += 1,
                    Some(Ending::Satiation) => w.satiation += 1,
                    Some(Ending::MaxSteps) => w.max_steps += 1,
                    None => {}
                }
            }
            w
        })
        .collect()
}

/// At most `max` rows: the rows cut into `max / 2` buckets, each giving its lowest- and
/// highest-reward row (in episode order), so spikes and dips survive.
fn downsample(rows: &[EpisodeRow], max: usize) -> (Vec<EpisodeRow>, bool) {
    if rows.len() <= max {
        return (rows.to_vec(), false);
    }
    let size = rows.len().div_ceil((max / 2).max(1));
    let mut out = Vec::with_capacity(max);
    for bucket in rows.chunks(size) {
        let lo = bucket.iter().min_by(|a, b| a.reward.total_cmp(&b.reward));
        let hi = bucket.iter().max_by(|a, b| a.reward.total_cmp(&b.reward));
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        let (first, second) = if lo.episode <= hi.episode {
            (lo, hi)
        } else {
            (hi, lo)
        };
        out.push(*first);
        if second.episode != first.episode {
            out.push(*second);
        }
    }
    (out, true)
}

/// How the uniformly random policy does in this world: the reference line "random" on the
/// learning curves, measured once at start (not remembered from elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RandomReference {
    pub steps: f64,
    pub reward: f64,
    pub episodes: u32,
}

pub fn measure_random_policy(episodes: u32, max_steps: u32, seed: u64) -> RandomReference {
    let mut rng = SessionRng::new(seed);
    let (mut steps, mut reward) = (0u64, 0.0);
    for _ in 0..episodes {
        let mut w = World::new();
        loop {
            let a = rng.below(N_ACTIONS) as i64;
            let out = w.step_id(a).expect("an action id below 5");
            reward += out.reward;
            if out.done || w.steps() >= max_steps {
                break;
            }
        }
        steps += u64::from(w.steps());
    }
    let n = f64::from(episodes.max(1));
    RandomReference {
        steps: steps as f64 / n,
        reward: reward / n,
        episodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(episode: u32, reward: f64) -> EpisodeRow {
        EpisodeRow {
            episode,
            reward,
            length: 1,
            loss: 0.0,
            epsilon: 1.0,
            ended: Some(if episode.is_multiple_of(3) {
                Ending::MaxSteps
            } else {
                Ending::Energy
            }),
        }
    }

    #[test]
    fn endings_count_every_episode_in_at_most_the_windows() {
        let rows: Vec<EpisodeRow> = (1..=1000).map(|e| row(e, 0.0)).collect();
        let w = endings(&rows, ENDING_WINDOWS);
        assert!(w.len() <= ENDING_WINDOWS && w.len() > ENDING_WINDOWS / 2);
        let total: u32 = w.iter().map(|x| x.energy + x.max_steps).sum();
        assert_eq!(total, 1000);
        assert_eq!(w.iter().map(|x| x.max_steps).sum::<u32>(), 333);
        assert_eq!((w[0].from, w.last().unwrap().to), (1, 1000));
        assert!(endings(&[], ENDING_WINDOWS).is_empty());
    }

    #[test]
    fn downsampling_keeps_extremes_and_the_bound() {
        let rows: Vec<EpisodeRow> = (1..=5000).map(|e| row(e, (e % 97) as f64)).collect();
        let (out, down) = downsample(&rows, MAX_ROWS);
        assert!(
            down && out.len() <= MAX_ROWS && out.len() > MAX_ROWS / 2,
            "{}",
            out.len()
        );
        assert!(
            out.windows(2).all(|w| w[0].episode < w[1].episode),
            "episode order"
        );
        let mut spiky = rows.clone();
        spiky[3210].reward = 1e6;
        spiky[4321].reward = -1e6;
        let (out, _) = downsample(&spiky, MAX_ROWS);
        assert!(out.iter().any(|r| r.reward == 1e6) && out.iter().any(|r| r.reward == -1e6));
        let (small, down) = downsample(&rows[..30], MAX_ROWS);
        assert!(!down && small.len() == 30);
    }

    #[test]
    fn a_resumed_run_replaces_the_episodes_it_runs_again() {
        let mut h = RunHistory::default();
        let e = |episode: u32, reward: f64| EpisodeComplete {
            episode,
            reward,
            length: 1,
            loss: 0.0,
            epsilon: 1.0,
            avg_reward_5: 0.0,
            avg_length_5: 0.0,
            avg_loss_5: 0.0,
            buffer_size: 0,
            reason: Some(EndReason::MaxSteps),
            meter: None,
        };
        for i in 1..=7 {
            h.episode(&e(i, 1.0));
        }
        h.episode(&e(6, 2.0)); // resumed from the checkpoint after episode 5
        let v = h.view();
        assert_eq!(
            v.episodes.iter().map(|r| r.episode).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(v.episodes[5].reward, 2.0);
    }

    #[test]
    fn the_random_policy_dies_early() {
        let r = measure_random_policy(200, 500, 1);
        assert!(r.steps > 50.0 && r.steps < 200.0, "{r:?}");
    }
}
