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
    /// Steps released so late (`session/pacer.rs`'s `CATCH_UP`) that their session's cadence
    /// started again: the session fell behind the speed its user set.
    pub paced_fell_behind: AtomicU64,
    pub clients_overflowed: AtomicU64,
    pub client_errors: AtomicU64,
    /// Connections that came back to their session with its token.
    pub sessions_resumed: AtomicU64,
    /// Owners replaced by a newer connection with the same token (close 4001).
    pub sessions_taken_over: AtomicU64,
    /// Detached sessions forgotten (resume window over, or beyond `--max-detached`).
    pub sessions_expired: AtomicU64,
    pub sessions_detached: AtomicI64,
    pub watchers: AtomicI64,
    /// Writes of session snapshots to the store: count, total and worst time.
    pub store_flushes: AtomicU64,
    pub store_flush_failures: AtomicU64,
    /// Detached sessions whose final write the store refused, kept in memory and retried.
    pub store_writes_pending: AtomicI64,
    store_flush_ns: AtomicU64,
    store_flush_max_ns: AtomicU64,
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

    pub fn observe_flush(&self, d: Duration) {
        let ns = d.as_nanos() as u64;
        self.store_flushes.fetch_add(1, Relaxed);
        self.store_flush_ns.fetch_add(ns, Relaxed);
        self.store_flush_max_ns.fetch_max(ns, Relaxed);
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

    /// The counters of `/metrics` (a flat table: name, help, value).
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 11] {
        [
            (
                "hamlet_sessions_started_total",
                "Inference sessions started.",
                &self.sessions_started,
            ),
            (
                "hamlet_sessions_refused_total",
                "Connections refused by --max-sessions.",
                &self.sessions_refused,
            ),
            (
                "hamlet_frames_relayed_total",
                "Frames written to browsers.",
                &self.frames_relayed,
            ),
            (
                "hamlet_frames_dropped_total",
                "state_update frames dropped for slow browsers.",
                &self.frames_dropped,
            ),
            (
                "hamlet_paced_steps_fell_behind_total",
                "Steps released more than 50 ms late: the session fell behind its speed.",
                &self.paced_fell_behind,
            ),
            (
                "hamlet_clients_overflowed_total",
                "Browsers disconnected for being hopelessly behind.",
                &self.clients_overflowed,
            ),
            (
                "hamlet_client_errors_total",
                "Browser messages rejected with an error frame.",
                &self.client_errors,
            ),
            (
                "hamlet_sessions_resumed_total",
                "Connections that came back to their session with its resume token.",
                &self.sessions_resumed,
            ),
            (
                "hamlet_sessions_taken_over_total",
                "Session owners replaced by a newer connection with the same token (close 4001).",
                &self.sessions_taken_over,
            ),
            (
                "hamlet_sessions_expired_total",
                "Detached sessions forgotten (resume window over, or beyond --max-detached).",
                &self.sessions_expired,
            ),
            (
                "hamlet_store_flush_failures_total",
                "Session snapshots that could not be written to the store.",
                &self.store_flush_failures,
            ),
        ]
    }

    /// The plain gauges of `/metrics` (a flat table: name, help, value).
    fn gauges(&self) -> [(&'static str, &'static str, &AtomicI64); 5] {
        [
            (
                "hamlet_store_writes_pending",
                "Detached sessions the store refused, kept in memory and retried.",
                &self.store_writes_pending,
            ),
            (
                "hamlet_sessions_detached",
                "Sessions whose browser has gone, kept for resume.",
                &self.sessions_detached,
            ),
            (
                "hamlet_session_watchers",
                "Read-only watchers connected now.",
                &self.watchers,
            ),
            (
                "hamlet_sessions_active",
                "Inference sessions running now (owner attached, or watched).",
                &self.sessions_active,
            ),
            (
                "hamlet_training_viewers",
                "Training viewers connected now.",
                &self.training_viewers,
            ),
        ]
    }

    pub fn render(&self, live_workers: &[(&'static str, usize)]) -> String {
        let mut o = String::new();
        for (name, help, v) in self.counters() {
            let v = v.load(Relaxed);
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        for (name, help, v) in self.gauges() {
            let v = v.load(Relaxed);
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.render_store_flushes(&mut o);
        self.render_workers(&mut o, live_workers);
        self.render_latency(&mut o);
        o
    }

    fn render_store_flushes(&self, o: &mut String) {
        let flushes = self.store_flushes.load(Relaxed);
        let sum = self.store_flush_ns.load(Relaxed) as f64 / 1e9;
        let max = self.store_flush_max_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(o, "# HELP hamlet_store_flush_seconds Writes of session snapshots to the store.\n# TYPE hamlet_store_flush_seconds summary\nhamlet_store_flush_seconds_sum {sum}\nhamlet_store_flush_seconds_count {flushes}");
        let _ = writeln!(o, "# HELP hamlet_store_flush_seconds_max The slowest snapshot write.\n# TYPE hamlet_store_flush_seconds_max gauge\nhamlet_store_flush_seconds_max {max}");
    }

    fn render_workers(&self, o: &mut String, live_workers: &[(&'static str, usize)]) {
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
    }

    fn render_latency(&self, o: &mut String) {
        let _ = writeln!(o, "# HELP hamlet_relay_latency_seconds Worker frame reaching its relay to browser socket write.\n# TYPE hamlet_relay_latency_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(o, "hamlet_relay_latency_seconds_bucket{{le=\"{b}\"}} {n}");
        }
        let count = self.latency_count.load(Relaxed);
        let sum = self.latency_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            o,
            "hamlet_relay_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(o, "hamlet_relay_latency_seconds_sum {sum}");
        let _ = writeln!(o, "hamlet_relay_latency_seconds_count {count}");
    }
}
