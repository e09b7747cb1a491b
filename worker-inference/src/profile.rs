//! Where a worker's CPU goes per step computed for a playing session — waking, inference,
//! sending — for `scripts/bench scale` (issue 34). Off unless the environment names a directory
//! in [`ENV_PROFILE_DIR`]; then the worker reads its thread's CPU clock four times per batch of
//! steps (four more system calls, so a profiled worker costs a little more than an unprofiled
//! one) and rewrites `DIR/PID.json` at most every quarter second with its running totals:
//! `{"steps":N,"wake_ns":…,"inference_ns":…,"send_ns":…}`.
//!
//! - wake: from the end of the previous loop iteration to the start of the batch — the kernel's
//!   wake, tokio's driver, reading the metaserver's `Produce`.
//! - inference: computing the batch — the network, the world, the checkpoints.
//! - send: encoding the batch and writing it to the socket.

use nix::time::{clock_gettime, ClockId};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const ENV_PROFILE_DIR: &str = "HAMLET_WORKER_PROFILE";

const WRITE_EVERY: Duration = Duration::from_millis(250);

pub struct StepProfile {
    /// Where to write; `None`: profiling is off and every method returns at once.
    file: Option<PathBuf>,
    mark: Duration,
    wake: Duration,
    inference: Duration,
    send: Duration,
    steps: u64,
    /// Steps computed in this iteration, counted once they are sent.
    pending: u64,
    written: Instant,
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

impl StepProfile {
    pub fn from_env() -> StepProfile {
        let file = std::env::var_os(ENV_PROFILE_DIR)
            .map(|d| PathBuf::from(d).join(format!("{}.json", std::process::id())));
        StepProfile {
            file,
            mark: Duration::ZERO,
            wake: Duration::ZERO,
            inference: Duration::ZERO,
            send: Duration::ZERO,
            steps: 0,
            pending: 0,
            written: Instant::now(),
        }
    }

    /// Time since the last mark, and a new mark.
    fn lap(&mut self) -> Duration {
        let now = thread_cpu();
        let d = now.saturating_sub(self.mark);
        self.mark = now;
        d
    }

    /// The loop is about to wait.
    pub fn waiting(&mut self) {
        if self.file.is_some() {
            self.mark = thread_cpu();
        }
    }

    /// A `Produce` woke the loop.
    pub fn woke(&mut self) {
        if self.file.is_some() {
            let d = self.lap();
            self.wake += d;
        }
    }

    /// The batch of `steps` is computed.
    pub fn computed(&mut self, steps: usize) {
        if self.file.is_some() {
            let d = self.lap();
            self.inference += d;
            self.pending = steps as u64;
        }
    }

    /// The iteration's messages are on the socket.
    pub fn sent(&mut self) {
        let Some(file) = &self.file else { return };
        if self.pending == 0 {
            return;
        }
        self.send += thread_cpu().saturating_sub(self.mark);
        self.steps += std::mem::take(&mut self.pending);
        if self.written.elapsed() >= WRITE_EVERY {
            self.written = Instant::now();
            let json = format!(
                r#"{{"steps":{},"wake_ns":{},"inference_ns":{},"send_ns":{}}}"#,
                self.steps,
                self.wake.as_nanos(),
                self.inference.as_nanos(),
                self.send.as_nanos()
            );
            // Written whole, then renamed: a reader never sees half a file. A failure only
            // costs the measurement.
            let tmp = file.with_extension("tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, file);
            }
        }
    }
}
