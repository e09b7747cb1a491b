//! Logging set-up shared by every process: `RUST_LOG` filter (default `info`), text or JSON lines on
//! stderr. The metaserver passes its format to workers through [`ENV_LOG_FORMAT`], and reads their
//! stderr into its own log.

use tracing_subscriber::EnvFilter;

/// Environment variable with the log format (`text` or `json`) for worker processes.
pub const ENV_LOG_FORMAT: &str = "HAMLET_LOG_FORMAT";

pub fn init(json: bool) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    // ONNX Runtime logs every allocation at info; keep it at warn unless asked for by name.
    let spec = if spec.contains("ort") {
        spec
    } else {
        format!("{spec},ort=warn")
    };
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
}

/// For workers: the format the metaserver asked for.
pub fn init_from_env() {
    init(std::env::var(ENV_LOG_FORMAT).as_deref() == Ok("json"));
}
