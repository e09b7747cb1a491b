//! The platform's floor under the scale bench: what this machine charges a process for waking on a
//! timer and going back to sleep, with nothing done in between. 256 sessions at speed 10 are 256
//! processes waking 100 times a second; this row says what those wake-ups alone cost here.

use super::Report;
use nix::sys::resource::{getrusage, UsageWho};
use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The argument that makes the bench binary a waker child instead of the bench.
const WAKER: &str = "__waker";

/// In a waker child: sleeps 10 ms at a time for the given seconds, prints how often it woke and
/// the CPU seconds the waking took (its own clock read before and after the loop, so that the
/// process's start-up and exit are not counted), and exits. Returns in the bench itself.
pub fn run_if_waker() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(WAKER) {
        return;
    }
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let cpu0 = cpu_secs(UsageWho::RUSAGE_SELF);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut wakes = 0u64;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        wakes += 1;
    }
    println!("{wakes} {}", cpu_secs(UsageWho::RUSAGE_SELF) - cpu0);
    std::process::exit(0);
}

fn cpu_secs(who: UsageWho) -> f64 {
    let u = getrusage(who).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// `n` processes waking every 10 ms for 5 s, doing nothing else: CPU per wake-up.
pub fn wake_floor(r: &mut Report, n: usize) {
    let secs = 5;
    let exe = std::env::current_exe().expect("own path");
    let kids: Vec<_> = (0..n)
        .map(|_| {
            Command::new(&exe)
                .args([WAKER, &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a waker")
        })
        .collect();
    let (mut wakes, mut cpu) = (0u64, 0.0);
    for mut k in kids {
        let mut out = String::new();
        k.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        k.wait().unwrap();
        let (w, c) = out
            .trim()
            .split_once(' ')
            .expect("a waker prints `wakes cpu`");
        wakes += w.parse::<u64>().expect("wakes");
        cpu += c.parse::<f64>().expect("cpu seconds");
    }
    let per_wake_us = cpu / wakes.max(1) as f64 * 1e6;
    r.add(
        &format!("wake_floor_{n}"),
        &format!("{n} processes waking every 10 ms, doing nothing: CPU per wake"),
        format!("{per_wake_us:.1} µs ({:.2} cores)", cpu / secs as f64),
        "the platform's cost of a timer wake-up: each child's own CPU over its waking loop only",
        json!({"processes": n, "wakes": wakes, "cpu_secs": cpu, "per_wake_us": per_wake_us}),
    );
}
