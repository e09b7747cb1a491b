//! The browser UI, embedded in the binary (no Node build, no second server).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// `(path, content type, bytes)` of every embedded file.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "socket.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/socket.js"),
    ),
    (
        "draw.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/draw.js"),
    ),
    (
        "inference.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/inference.js"),
    ),
    (
        "training.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/training.js"),
    ),
    (
        "operator.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/operator.js"),
    ),
    (
        "inside.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/inside.js"),
    ),
    (
        "board.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/board.js"),
    ),
    (
        "boardchart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/boardchart.js"),
    ),
    (
        "timemachine.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/timemachine.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/charts.js"),
    ),
    (
        "meters.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/meters.js"),
    ),
    (
        "qbars.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/qbars.js"),
    ),
    (
        "whatif.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/whatif.js"),
    ),
    (
        "models.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/models.js"),
    ),
    (
        "auth.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/auth.js"),
    ),
    (
        "trainform.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/trainform.js"),
    ),
];

fn serve(path: &str) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, ct, body)) => (
            [
                (header::CONTENT_TYPE, *ct),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn asset(Path(file): Path<String>) -> Response {
    serve(file.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    /// Every file of the UI directory is embedded (a new module left out breaks the page).
    #[test]
    fn every_ui_file_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            assert!(
                super::FILES.iter().any(|(n, _, _)| *n == name),
                "ui/{name} is not in ui.rs's FILES"
            );
        }
    }
}
