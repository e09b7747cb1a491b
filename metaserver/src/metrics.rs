//! Prometheus metrics, rendered by hand (a dozen series do not need a crate). Labels are bounded:
//! worker kind (2 values) and restart reason (5 values, [`RestartReason`]).

use ipc_proto::WorkerKind;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a worker was replaced (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RestartReason {
    Crash,
    Unresponsive,
    ProtocolError,
    Operator,
    StartFailed,
}

impl RestartReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Unresponsive => "unresponsive",
            RestartReason::ProtocolError => "protocol_error",
            RestartReason::Operator => "operator",
            RestartReason::StartFailed => "start_failed",
        }
    }
}

/// Relay latency buckets (seconds): time from a worker's frame reaching its relay (before it is
/// encoded as JSON) to it being written to the browser's socket.
const BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

#[derive(Default)]
pub struct Metrics {
    pub sessions_started: AtomicU64,
    pub sessions_active: AtomicI64,
    pub sessions_refused: AtomicU64,
    pub training_viewers: AtomicI64,
    pub frames_relayed: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub clients_overflowed: AtomicU64,
    pub client_errors: AtomicU64,
    spawned: Mutex<BTreeMap<&'static str, u64>>,
    restarts: Mutex<BTreeMap<(&'static str, RestartReason), u64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl Metrics {
    pub fn worker_spawned(&self, kind: WorkerKind) {
        *self.spawned.lock().entry(kind.as_str()).or_default() += 1;
    }

    pub fn restart(&self, kind: WorkerKind, reason: RestartReason) {
        *self
            .restarts
            .lock()
            .entry((kind.as_str(), reason))
            .or_default() += 1;
    }

    pub fn restarts_total(&self) -> u64 {
        self.restarts
            .lock()
            .iter()
            .filter(|((_, r), _)| *r != RestartReason::StartFailed)
            .map(|(_, v)| v)
            .sum()
    }

    pub fn observe_relay(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    pub fn render(&self, live_workers: &[(&'static str, usize)]) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "hamlet_sessions_started_total",
            "Inference sessions started.",
            self.sessions_started.load(Relaxed),
        );
        counter(
            &mut o,
            "hamlet_sessions_refused_total",
            "Connections refused by --max-sessions.",
            self.sessions_refused.load(Relaxed),
        );
        counter(
            &mut o,
            "hamlet_frames_relayed_total",
            "Frames written to browsers.",
            self.frames_relayed.load(Relaxed),
        );
        counter(
            &mut o,
            "hamlet_frames_dropped_total",
            "state_update frames dropped for slow browsers.",
            self.frames_dropped.load(Relaxed),
        );
        counter(
            &mut o,
            "hamlet_clients_overflowed_total",
            "Browsers disconnected for being hopelessly behind.",
            self.clients_overflowed.load(Relaxed),
        );
        counter(
            &mut o,
            "hamlet_client_errors_total",
            "Browser messages rejected with an error frame.",
            self.client_errors.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP hamlet_sessions_active Inference sessions connected now.\n# TYPE hamlet_sessions_active gauge\nhamlet_sessions_active {}", self.sessions_active.load(Relaxed));
        let _ = writeln!(o, "# HELP hamlet_training_viewers Training viewers connected now.\n# TYPE hamlet_training_viewers gauge\nhamlet_training_viewers {}", self.training_viewers.load(Relaxed));
        let _ = writeln!(
            o,
            "# HELP hamlet_workers Live worker processes.\n# TYPE hamlet_workers gauge"
        );
        for (kind, n) in live_workers {
            let _ = writeln!(o, "hamlet_workers{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP hamlet_workers_spawned_total Worker processes started.\n# TYPE hamlet_workers_spawned_total counter");
        for (kind, n) in self.spawned.lock().iter() {
            let _ = writeln!(o, "hamlet_workers_spawned_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP hamlet_worker_restarts_total Worker replacements, by kind and reason.\n# TYPE hamlet_worker_restarts_total counter");
        for ((kind, reason), n) in self.restarts.lock().iter() {
            let reason = reason.as_str();
            let _ = writeln!(
                o,
                "hamlet_worker_restarts_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP hamlet_relay_latency_seconds Worker frame reaching its relay to browser socket write.\n# TYPE hamlet_relay_latency_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "hamlet_relay_latency_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            o,
            "hamlet_relay_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "hamlet_relay_latency_seconds_sum {}",
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(o, "hamlet_relay_latency_seconds_count {count}");
        o
    }
}
