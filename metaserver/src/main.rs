//! `metaserver --workers-dir target/release`: see `--help`.

use clap::Parser;
use metaserver::config::Config;

fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    hamlet_log::init(cfg.log_format == "json");
    // TLS to Redis (`rediss://`) uses rustls; its one crypto provider, chosen here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.runtime_threads())
        .enable_all()
        .build()?
        .block_on(metaserver::server::run(cfg))
}
