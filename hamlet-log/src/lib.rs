//! Logging set-up shared by every process: `RUST_LOG` filter (default `info`), text or JSON lines on
//! stderr. The metaserver passes its format to workers through the environment
//! (`ipc_proto::ENV_LOG_FORMAT`), and reads their stderr into its own log.

use tracing_subscriber::EnvFilter;

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
