//! Raw world speed: random actions, observation encoded every step, one core.
//! Prints one JSON object per run (used by `scripts/bench`).

use hamlet_env::{World, OBS_DIM};
use std::time::Instant;

fn main() {
    let steps: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let runs = 5;
    let mut rates = Vec::new();
    let mut checksum = 0.0f64;
    for _ in 0..runs {
        let mut w = World::new();
        let mut obs = [0.0f32; OBS_DIM];
        // xorshift: the benchmark must measure the world, not the random generator.
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let t = Instant::now();
        for _ in 0..steps {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let out = w.step_id((s % 5) as i64).unwrap();
            w.write_observation(&mut obs);
            checksum += out.reward + f64::from(obs[2]);
            if out.done || w.steps() >= 500 {
                w.reset();
            }
        }
        rates.push(steps as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{{\"figure\":\"world_steps_per_sec\",\"median\":{:.0},\"min\":{:.0},\"max\":{:.0},\"runs\":{},\"steps_per_run\":{},\"checksum\":{:.3}}}",
        rates[runs / 2], rates[0], rates[runs - 1], runs, steps, checksum
    );
}
