//! The regression guard of `scripts/bench` (issues 19, 16 and 32): figures of the relay, the
//! 256-session pace and the DQN update are compared with those committed in
//! `scripts/bench-baseline.json`; the bench exits non-zero when one is worse by more than the
//! noise stated there (measured by repeated runs on the project's machine). Each ratio is guarded
//! beside an absolute figure of the same run (a ratio alone would pass if both its sides slowed).
//!
//! A figure may also carry a `target` (a goal an issue set, e.g. issue 34's 60 µs per paced step):
//! then it fails when it misses the target too, however close it is to its committed value.
//!
//! It fails closed: a guarded section that ran is judged, and a missing or unreadable baseline, a
//! missing key or a figure that is not a finite number is a failure, never a pass. Every figure
//! judged is printed, with its limit.

use serde_json::Value;
use std::path::Path;

/// Which way a figure is better.
#[derive(Clone, Copy)]
pub enum Better {
    /// Worse when above value × (1 + noise): times, ratios, CPU.
    Lower,
    /// Worse when below value − noise (noise in the figure's own unit): rates.
    Higher,
}

pub struct Guard {
    baseline: Result<Value, String>,
    lines: Vec<String>,
    failures: usize,
}

impl Guard {
    /// Reads the committed figures; an unreadable file is remembered and fails the first judgement.
    pub fn load(path: &Path) -> Guard {
        let baseline = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|t| {
                serde_json::from_str(&t).map_err(|e| format!("{} is not JSON: {e}", path.display()))
            });
        Guard {
            baseline,
            lines: Vec::new(),
            failures: 0,
        }
    }

    /// The committed value, its noise and its target, if it has one.
    fn committed(&self, key: &str) -> Result<(f64, f64, Option<f64>), String> {
        let b = self.baseline.as_ref().map_err(Clone::clone)?;
        let f = &b[key];
        let number = |field: &str| {
            f[field]
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("the baseline has no finite `{key}.{field}`"))
        };
        let target = match f.get("target") {
            None => None,
            Some(_) => Some(number("target")?),
        };
        Ok((number("value")?, number("noise")?, target))
    }

    /// Judges one figure: `what` names it, `now` is this run's value.
    pub fn judge(&mut self, key: &str, what: &str, better: Better, now: f64) {
        let verdict = self.committed(key).and_then(|(value, noise, target)| {
            let (committed, why) = match better {
                Better::Lower => (
                    value * (1.0 + noise),
                    format!("{value} + {:.0} %", noise * 100.0),
                ),
                Better::Higher => (value - noise, format!("{value} − {noise}")),
            };
            // The stricter of the committed limit and the target.
            let (limit, why) = match (better, target) {
                (Better::Lower, Some(t)) if t < committed => {
                    (t, format!("the target; {why} is {committed:.3}"))
                }
                (Better::Higher, Some(t)) if t > committed => {
                    (t, format!("the target; {why} is {committed:.3}"))
                }
                (_, Some(t)) => (committed, format!("{why}; target {t}")),
                (_, None) => (committed, why),
            };
            let (ok, rule) = match better {
                Better::Lower => (now <= limit, format!("≤ {limit:.3} ({why})")),
                Better::Higher => (now >= limit, format!("≥ {limit:.3} ({why})")),
            };
            // A NaN compares false with everything: it fails both ways.
            if now.is_finite() && ok {
                Ok(rule)
            } else {
                Err(format!("{now:.3} is not {rule}"))
            }
        });
        match verdict {
            Ok(rule) => self
                .lines
                .push(format!("  ok          {what}: {now:.3} {rule}")),
            Err(why) => {
                self.failures += 1;
                self.lines.push(format!("  REGRESSION  {what}: {why}"));
            }
        }
    }

    /// Prints every judgement; the process's exit code: 1 on any failure, or when a guarded
    /// section ran and nothing was judged.
    pub fn finish(self, guarded_sections_ran: bool) -> i32 {
        if !guarded_sections_ran {
            println!(
                "regression guard: no guarded section (dqn, relay, scale) ran; nothing judged"
            );
            return 0;
        }
        println!("\nregression guard (scripts/bench-baseline.json):");
        for l in &self.lines {
            println!("{l}");
        }
        if self.lines.is_empty() {
            eprintln!("regression guard: a guarded section ran but judged nothing");
            return 1;
        }
        if self.failures > 0 {
            eprintln!("regression guard: {} figure(s) failed", self.failures);
            return 1;
        }
        println!(
            "regression guard: {} figure(s) within noise",
            self.lines.len()
        );
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(json: &str) -> Guard {
        let dir = hamlet_tests::temp_dir("bench-guard");
        let path = dir.join("baseline.json");
        std::fs::write(&path, json).unwrap();
        Guard::load(&path)
    }

    const BASE: &str =
        r#"{"ratio": {"value": 2.0, "noise": 0.5}, "pace": {"value": 60, "noise": 10}}"#;

    #[test]
    fn figures_within_noise_pass() {
        let mut g = guard(BASE);
        g.judge("ratio", "ratio", Better::Lower, 2.9);
        g.judge("pace", "pace", Better::Higher, 51.0);
        assert_eq!(g.finish(true), 0);
    }

    #[test]
    fn a_worse_figure_fails_each_way() {
        let mut g = guard(BASE);
        g.judge("ratio", "ratio", Better::Lower, 3.1);
        assert_eq!(g.finish(true), 1);
        let mut g = guard(BASE);
        g.judge("pace", "pace", Better::Higher, 49.0);
        assert_eq!(g.finish(true), 1);
    }

    #[test]
    fn a_figure_within_noise_that_misses_its_target_fails() {
        let base = r#"{"us": {"value": 50, "noise": 0.3, "target": 60}, "pace": {"value": 95, "noise": 10, "target": 90}}"#;
        let mut g = guard(base);
        g.judge("us", "us", Better::Lower, 59.0);
        g.judge("pace", "pace", Better::Higher, 91.0);
        assert_eq!(g.finish(true), 0);
        let mut g = guard(base);
        g.judge("us", "us", Better::Lower, 61.0);
        assert_eq!(g.finish(true), 1, "within 30 % of 50 but over 60");
        let mut g = guard(base);
        g.judge("pace", "pace", Better::Higher, 89.0);
        assert_eq!(g.finish(true), 1, "within 10 of 95 but under 90");
        let mut g = guard(r#"{"us": {"value": 50, "noise": 0.3, "target": "60"}}"#);
        g.judge("us", "a target that is not a number", Better::Lower, 1.0);
        assert_eq!(g.finish(true), 1);
    }

    #[test]
    fn nan_fails_both_ways() {
        for better in [Better::Lower, Better::Higher] {
            let mut g = guard(BASE);
            g.judge("ratio", "ratio", better, f64::NAN);
            assert_eq!(g.finish(true), 1);
        }
    }

    #[test]
    fn a_missing_key_or_baseline_fails() {
        let mut g = guard(BASE);
        g.judge(
            "not_there",
            "a figure the baseline lacks",
            Better::Lower,
            1.0,
        );
        assert_eq!(g.finish(true), 1);
        let mut g = guard(r#"{"ratio": {"value": "2", "noise": 0.5}}"#);
        g.judge("ratio", "a value that is not a number", Better::Lower, 1.0);
        assert_eq!(g.finish(true), 1);
        let mut g = Guard::load(Path::new("/nonexistent/baseline.json"));
        g.judge("ratio", "ratio", Better::Lower, 1.0);
        assert_eq!(g.finish(true), 1);
    }

    #[test]
    fn a_guarded_section_that_judged_nothing_fails() {
        assert_eq!(guard(BASE).finish(true), 1);
        assert_eq!(guard(BASE).finish(false), 0);
    }
}
