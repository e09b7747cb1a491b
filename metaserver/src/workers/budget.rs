//! The restart policy of design.md: restart at once, then exponential backoff with jitter; give up
//! after too many restarts in a window; a worker that lived long enough counts as stable and resets
//! the history (as Jupyter and systemd do).

use crate::config::Config;
use rand::Rng;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max_restarts: usize,
    pub window: Duration,
    pub stable_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RestartPolicy {
    /// The policy `--max-restarts`, `--restart-window-secs`, `--stable-after-secs` and the
    /// backoff flags describe.
    pub fn of(cfg: &Config) -> RestartPolicy {
        RestartPolicy {
            max_restarts: cfg.max_restarts,
            window: Duration::from_secs(cfg.restart_window_secs),
            stable_after: Duration::from_secs(cfg.stable_after_secs),
            backoff_min: Duration::from_millis(cfg.backoff_min_ms),
            backoff_max: Duration::from_millis(cfg.backoff_max_ms),
        }
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    pub total: u32,
}

/// What to do about a worker that just died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    RestartAfter(Duration),
    GiveUp,
}

impl RestartBudget {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a death at `now` of a worker that had been up since `started`.
    pub fn record(&mut self, now: Instant, started: Instant) -> Verdict {
        if now.saturating_duration_since(started) >= self.policy.stable_after {
            self.recent.clear();
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.total += 1;
        let n = self.recent.len();
        if n > self.policy.max_restarts {
            return Verdict::GiveUp;
        }
        if n == 1 {
            return Verdict::RestartAfter(Duration::ZERO);
        }
        let base = self.policy.backoff_min.as_secs_f64() * 2f64.powi(n as i32 - 2);
        let capped = base.min(self.policy.backoff_max.as_secs_f64());
        let jitter = rand::rng().random_range(0.75..1.25);
        Verdict::RestartAfter(Duration::from_secs_f64(
            (capped * jitter).min(self.policy.backoff_max.as_secs_f64()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_then_doubling_backoff_then_give_up() {
        let p = RestartPolicy {
            backoff_max: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut b = RestartBudget::new(p);
        let t0 = Instant::now();
        assert_eq!(b.record(t0, t0), Verdict::RestartAfter(Duration::ZERO));
        // The n-th restart in the window waits backoff_min · 2^(n−2), ±25 % jitter.
        for (i, base_ms) in [(1u64, 50.0), (2, 100.0), (3, 200.0), (4, 400.0)] {
            match b.record(t0 + Duration::from_millis(i), t0) {
                Verdict::RestartAfter(d) => {
                    let ms = d.as_secs_f64() * 1e3;
                    assert!(
                        (0.75 * base_ms..=1.25 * base_ms).contains(&ms),
                        "restart {}: {ms} ms, expected {base_ms} ms ± 25 %",
                        i + 1
                    );
                }
                Verdict::GiveUp => panic!("gave up after {} restarts", i + 1),
            }
        }
        assert_eq!(b.record(t0 + Duration::from_millis(9), t0), Verdict::GiveUp);
    }

    #[test]
    fn backoff_is_capped() {
        let p = RestartPolicy {
            max_restarts: 100,
            ..RestartPolicy::default()
        };
        let mut b = RestartBudget::new(p);
        let t0 = Instant::now();
        for i in 0..20 {
            if let Verdict::RestartAfter(d) = b.record(t0 + Duration::from_millis(i), t0) {
                assert!(d <= p.backoff_max, "{d:?}");
            }
        }
    }

    #[test]
    fn stable_worker_resets_and_window_forgets() {
        let p = RestartPolicy::default();
        let mut b = RestartBudget::new(p);
        let t0 = Instant::now();
        for i in 0..5 {
            b.record(t0 + Duration::from_millis(i), t0);
        }
        // A worker that lived 30 s: the history is forgotten, restart at once.
        let later = t0 + Duration::from_secs(40);
        assert_eq!(
            b.record(later, later - Duration::from_secs(31)),
            Verdict::RestartAfter(Duration::ZERO)
        );
        // Restarts older than the window do not count.
        let mut b = RestartBudget::new(p);
        for i in 0..5 {
            b.record(t0 + Duration::from_secs(i), t0 + Duration::from_secs(i));
        }
        let far = t0 + Duration::from_secs(200);
        assert_eq!(b.record(far, far), Verdict::RestartAfter(Duration::ZERO));
    }
}
