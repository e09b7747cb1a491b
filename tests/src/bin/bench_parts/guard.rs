//! The regression guard of `scripts/bench` (issues 19 and 16): the relay ÷ direct round-trip ratio,
//! the metaserver's CPU per relayed frame, the 256-session pace and the DQN update ÷ GEMM ratios
//! of the default batch are compared with the figures committed in `scripts/bench-baseline.json`;
//! the bench exits non-zero when one is worse by more than the noise stated there (measured by
//! repeated runs on the project's machine). Sections not run are not judged.

use hamlet_tests::root;
use serde_json::Value;

pub struct Guard {
    baseline: Value,
    failures: Vec<String>,
    judged: usize,
}

impl Guard {
    pub fn load() -> Guard {
        let path = root().join("scripts/bench-baseline.json");
        let baseline = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Guard {
            baseline,
            failures: Vec::new(),
            judged: 0,
        }
    }

    fn figure(&self, key: &str) -> Option<(f64, f64)> {
        let f = &self.baseline[key];
        Some((f["value"].as_f64()?, f["noise"].as_f64()?))
    }

    /// Lower is better: `now` is worse when above value × (1 + noise). `what` names the figure.
    pub fn at_most(&mut self, key: &str, what: &str, now: f64) {
        if let Some((value, noise)) = self.figure(key) {
            self.judged += 1;
            let limit = value * (1.0 + noise);
            if now > limit {
                self.failures.push(format!(
                    "{what} is {now:.2}, above {limit:.2} (committed {value:.2} + {:.0} % noise)",
                    noise * 100.0
                ));
            }
        }
    }

    /// Higher is better: worse when below value − noise (frames per session per second).
    pub fn pace_256(&mut self, now: f64) {
        if let Some((value, noise)) = self.figure("pace_256_per_session") {
            self.judged += 1;
            let limit = value - noise;
            if now < limit {
                self.failures.push(format!(
                    "256 sessions at speed 10 get {now:.1} frames/s each, below {limit:.1} (committed {value:.1} − {noise:.0})"
                ));
            }
        }
    }

    /// Prints the verdict; exits 1 on a regression.
    pub fn finish(self) {
        if self.judged == 0 {
            return;
        }
        if self.failures.is_empty() {
            println!(
                "regression guard: {} figure(s) within noise of scripts/bench-baseline.json",
                self.judged
            );
            return;
        }
        for f in &self.failures {
            eprintln!("regression: {f}");
        }
        std::process::exit(1);
    }
}
