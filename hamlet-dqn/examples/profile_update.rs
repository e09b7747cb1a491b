//! Runs DQN updates alone, for a profiler: `perf record -g target/release/examples/profile_update
//! qnetwork 32 8000 [FILL]` (network, batch size, updates per round; five rounds, each printing its
//! mean time per update). The replay memory is first filled with FILL transitions of a seeded run
//! (default 2000, as `scripts/bench dqn` does; a real run's memory holds 50 000 or more, which
//! makes sampling a batch slower: its rows are no longer in the caches).

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
    let fill: usize = arg(3, "2000").parse().expect("fill: a number");
    let defaults = TrainingConfig::default();
    let mut trainer = Trainer::new(TrainingConfig {
        network,
        batch_size,
        seed: 1,
        max_steps: 200,
        buffer_capacity: defaults.buffer_capacity.max(fill as u32),
        ..defaults
    });
    while trainer.buffer_len() < fill {
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
