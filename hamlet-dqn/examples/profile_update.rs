//! Runs DQN updates alone, for a profiler: `perf record -g target/release/examples/profile_update
//! qnetwork 32 8000` (network, batch size, updates per round; five rounds, each printing its mean
//! time per update). The replay memory is first filled with 2000 transitions of a seeded run, as
//! `scripts/bench dqn` does.

use hamlet_dqn::dqn::{Flow, Trainer};
use ipc_proto::training::{Network, TrainingConfig};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let network = match arg(0, "qnetwork").as_str() {
        "dueling" => Network::Dueling,
        _ => Network::Qnetwork,
    };
    let batch_size: u32 = arg(1, "32").parse().expect("batch size: a number");
    let updates: u32 = arg(2, "5000").parse().expect("updates: a number");
    let mut trainer = Trainer::new(TrainingConfig {
        network,
        batch_size,
        seed: 1,
        max_steps: 200,
        ..Default::default()
    });
    while trainer.buffer_len() < 2000 {
        trainer.run_episode(|_| Flow::Continue);
    }
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..updates {
            std::hint::black_box(trainer.update());
        }
        let us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(updates);
        println!("{us:.1} µs per update");
    }
}
