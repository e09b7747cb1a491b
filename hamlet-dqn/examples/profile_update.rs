//! Runs DQN updates alone, for a profiler: `perf record -g target/release/examples/profile_update
//! qnetwork 32 8000 [FILL]` (network, batch size, updates per round; five rounds, each printing its
//! mean time per update). As `scripts/bench dqn` does, it uses the settings a real run of the
//! network uses (`train`'s defaults) and first fills the replay memory, learning off, to their
//! capacity (50 000 or 200 000 transitions) or to FILL transitions.

use hamlet_dqn::dqn::Trainer;
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
    let config = TrainingConfig {
        batch_size,
        seed: 1,
        max_steps: 200,
        ..TrainingConfig::full_run_for(network)
    };
    let fill: usize = arg(3, &config.buffer_capacity.to_string())
        .parse()
        .expect("fill: a number");
    let mut trainer = Trainer::new(TrainingConfig {
        buffer_capacity: config.buffer_capacity.max(fill as u32),
        ..config.clone()
    });
    trainer.fill_replay(fill);
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..updates {
            std::hint::black_box(trainer.update());
        }
        let us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(updates);
        println!("{us:.1} µs per update");
    }
}
