//! The step clock: a periodic `timerfd` the kernel re-arms itself, read through tokio's `AsyncFd`.
//!
//! Why not `tokio::time`: a new `sleep_until` per step registers a timer with tokio's driver every
//! iteration, and the driver, finding it earlier than the wake it had planned (none), unparks
//! itself by writing its own eventfd — a system call and a wake per step, measured in issue 34.
//! Here the period is set once when play starts (or the speed changes) and a step costs one
//! `epoll_wait` and one 8-byte `read`.
//!
//! Like the clock it replaced, it keeps a steady cadence without catching up in bursts: after a
//! late wake the expirations missed are read in one go and make one step.

use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, TimerSetTimeFlags};
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// nix's timer as tokio's `AsyncFd` wants it: by its raw descriptor.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct StepClock {
    timer: AsyncFd<Timer>,
    /// The period it is armed with; `None` while disarmed.
    period: Option<Duration>,
}

impl StepClock {
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the descriptor belongs to the `TimerFd`, which the `AsyncFd` owns until both are
        // dropped together; it is never closed or replaced before.
        let timer = unsafe { AsyncFd::register_with_interest(Timer(fd), Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(StepClock {
            timer,
            period: None,
        })
    }

    pub fn is_armed(&self) -> bool {
        self.period.is_some()
    }

    /// Ticks every `period`, the first one `period` from now; already ticking at this period, it
    /// goes on undisturbed.
    pub fn arm(&mut self, period: Duration) -> io::Result<()> {
        if self.period == Some(period) {
            return Ok(());
        }
        let every = TimeSpec::from_duration(period);
        self.timer.get_ref().0.set(
            Expiration::IntervalDelayed(every, every),
            TimerSetTimeFlags::empty(),
        )?;
        self.period = Some(period);
        Ok(())
    }

    pub fn disarm(&mut self) -> io::Result<()> {
        if self.period.take().is_some() {
            self.timer.get_ref().0.unset()?;
        }
        Ok(())
    }

    /// Waits for the next tick (cancel-safe: a tick not yet read stays pending).
    pub async fn tick(&self) -> io::Result<()> {
        loop {
            let mut ready = self.timer.readable().await?;
            // A read with nothing due fails with `WouldBlock`, which makes `try_io` forget the
            // readiness, and we wait again (after a disarm, or a tick taken already).
            match ready.try_io(|t| t.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(result) => {
                    // Read: nothing is due until the next expiry, whose edge epoll reports anew.
                    // Forgetting the readiness now saves the read that would only say so.
                    ready.clear_ready();
                    return result;
                }
                Err(_would_block) => continue,
            }
        }
    }
}
