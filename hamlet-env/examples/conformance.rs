//! Replays recorded trajectories against this world and reports the largest deviation.
//!
//! `cargo run --release -p hamlet-env --example conformance -- FILE...`
//! Exit status 1 if any number deviates by more than 1e-4 or any `done` differs.

use hamlet_env::conformance::{check_file, TOLERANCE};

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: conformance FILE...  (trajectory files in the golden format)");
        std::process::exit(2);
    }
    let mut failed = false;
    for f in &files {
        match check_file(std::path::Path::new(f)) {
            Err(e) => {
                eprintln!("{f}: {e}");
                failed = true;
            }
            Ok(reports) => {
                println!("{f}");
                for r in &reports {
                    let ok = r.passes();
                    failed |= !ok;
                    println!(
                        "  {:<4} {:<40} steps {:>4}  max deviation {:.3e}{}",
                        if ok { "ok" } else { "FAIL" },
                        r.label,
                        r.steps,
                        r.max_deviation,
                        r.first_problem
                            .as_ref()
                            .map(|p| format!("  first problem: {p}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    if failed {
        eprintln!("conformance FAILED (tolerance {TOLERANCE:e})");
        std::process::exit(1);
    }
    println!("all trajectories within {TOLERANCE:e}");
}
