//! `metaserver --workers-dir target/release`: see `--help`.

use clap::Parser;
use metaserver::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    hamlet_log::init(cfg.log_format == "json");
    metaserver::app::run(cfg).await
}
