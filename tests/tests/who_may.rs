//! End-to-end: who may reach the server and do what (issue 31) — the Host rule against DNS
//! rebinding, Origins on state-changing requests, undrain, CORS — and the limits that hold
//! whoever connects: worker processes, watchers, a detach the store refuses, a slow store.

use hamlet_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A page that rebinds its own name to this machine sends its own `Host`: refused (421) on every
/// path, the operator's and the public ones; this machine's names and addresses pass.
#[test]
fn a_foreign_host_is_refused_and_this_servers_names_pass() {
    let s = Server::start_with(ServerOpts {
        args: vec!["--public-host".into(), "hamlet.school.example".into()],
        ..Default::default()
    });
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    for path in ["/api/workers", "/api/status", "/", "/ui/"] {
        let (code, body) = http(
            &s.addr,
            "GET",
            path,
            &[("Host", &format!("evil.example:{port}"))],
        );
        assert_eq!(code, 421, "{path}: {body}");
    }
    let (code, _) = http(&s.addr, "POST", "/api/drain", &[("Host", "evil.example")]);
    assert_eq!(code, 421);
    assert_eq!(s.get_json("/api/ready")["ready"], true, "not drained");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("hamlet.school.example:{port}"),
        format!("192.168.7.9:{port}"),
    ] {
        let (code, body) = http(&s.addr, "GET", "/api/status", &[("Host", &host)]);
        assert_eq!(code, 200, "{host}: {body}");
    }
}

/// Any web page can make a browser on the teacher's machine POST to loopback: a state-changing
/// request needs an allowed Origin (or none) as well as operator rights. A drain can be undone.
#[test]
fn a_foreign_origin_cannot_drain_and_a_drain_can_be_undone() {
    let s = Server::start();
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/drain",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(code, 403, "{body}");
    let (code, _) = http(
        &s.addr,
        "POST",
        "/api/workers/whatever/restart",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(code, 403);
    assert_eq!(s.get_json("/api/ready")["ready"], true);
    // This server's own page (its host, another port) may; so may a client with no Origin.
    let (code, _) = http(
        &s.addr,
        "POST",
        "/api/drain",
        &[("Origin", "http://127.0.0.1:5173")],
    );
    assert_eq!(code, 202);
    assert_eq!(http(&s.addr, "GET", "/api/ready", &[]).0, 503);
    let (code, _) = http(
        &s.addr,
        "POST",
        "/api/undrain",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(code, 403, "a foreign page cannot undo it either");
    let (code, _) = http(&s.addr, "POST", "/api/undrain", &[]);
    assert_eq!(code, 200);
    assert_eq!(s.get_json("/api/ready")["ready"], true);
    // New sessions are taken again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        ws.expect("connected", T).await;
    });
}

/// The read-only endpoints answer a page of an allowed origin (a frontend dev server on this
/// host's `:5173`) with CORS headers; another site's page gets none.
#[test]
fn status_and_models_are_readable_by_allowed_origins_only() {
    let s = Server::start();
    for path in ["/api/status", "/api/models"] {
        let (code, h, _) =
            http_with_headers(&s.addr, "GET", path, &[("Origin", "http://localhost:5173")]);
        assert_eq!(code, 200);
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("http://localhost:5173"),
            "{path}"
        );
        assert_eq!(header(&h, "vary"), Some("Origin"));
        let (_, h, _) =
            http_with_headers(&s.addr, "GET", path, &[("Origin", "http://evil.example")]);
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{path}");
    }
}

async fn new_session(s: &Server) -> (String, String) {
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    let c = ws.expect("connected", T).await;
    ws.expect("state_update", T).await;
    ws.ws.close(None).await.ok();
    (
        c["resume_token"].as_str().unwrap().to_owned(),
        c["watch_token"].as_str().unwrap().to_owned(),
    )
}

fn active_workers(s: &Server) -> usize {
    s.workers()
        .iter()
        .filter(|w| w["kind"] == "inference" && w["state"] == "active")
        .count()
}

/// Every worker process counts against `--max-sessions`, whoever caused it: five sessions left
/// and then watched run at most two workers; the rest are refused (1013). A session run for its
/// watchers ends with its owner's resume window. Watchers have a cap of their own.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_start_workers_only_within_max_sessions_and_the_resume_window() {
    let s = Server::start_with(ServerOpts {
        args: [
            "--max-sessions",
            "2",
            "--resume-window-secs",
            "6",
            "--max-watchers-total",
            "3",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let mut links = Vec::new();
    for _ in 0..5 {
        links.push(new_session(&s).await.1);
        // Each left its browser: its task ends and its worker is released.
        s.wait_for("the session put away", T, |s| active_workers(s) == 0);
    }
    let left = Instant::now();
    let mut watching = Vec::new();
    let mut refused = 0;
    for link in &links {
        let mut w = Ws::connect(&s.url(&format!("/ws?watch={link}")))
            .await
            .unwrap();
        let first = w.next(T).await.unwrap();
        if first["type"] == "connected" {
            watching.push(w);
        } else {
            assert_eq!(first["code"], "too_many_sessions", "{first}");
            assert_eq!(w.expect_close(T).await, 1013);
            refused += 1;
        }
    }
    assert_eq!((watching.len(), refused), (2, 3));
    assert_eq!(active_workers(&s), 2, "{:?}", s.workers());
    // The watcher cap: two watch already, a third watcher of one of them may, a fourth not.
    let mut third = Ws::connect(&s.url(&format!("/ws?watch={}", links[0])))
        .await
        .unwrap();
    third.expect("connected", T).await;
    let mut fourth = Ws::connect(&s.url(&format!("/ws?watch={}", links[0])))
        .await
        .unwrap();
    assert_eq!(fourth.expect("error", T).await["code"], "too_many_watchers");
    drop((third, fourth));
    // The owners left 6 s ago at most: their sessions end with the window, watchers let go.
    for w in &mut watching {
        assert_eq!(w.expect_close(Duration::from_secs(20)).await, 1001);
    }
    let waited = left.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "ended {waited:?} after the owners left"
    );
    s.wait_for("workers released", T, |s| active_workers(s) == 0);
}

/// A detach the store cannot take is not lost: the session stays in memory, the write is retried
/// (`/metrics` counts it), and when the store is back the session is written and resumes — or,
/// if its browser comes back first, it resumes from memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_detach_the_store_refuses_is_kept_and_retried() {
    let store = temp_dir("failing-store").join("state");
    let s = Server::start_with(ServerOpts::on_store(&store, &[]));
    let pending = |s: &Server| s.metric("hamlet_store_writes_pending");
    let break_store = || {
        // Root ignores permissions: the store's path is made a plain file instead, so every
        // write there fails as on a broken disk.
        std::fs::rename(&store, store.with_extension("away")).unwrap();
        std::fs::write(&store, b"not a directory").unwrap();
    };
    let mend_store = || {
        std::fs::remove_file(&store).unwrap();
        std::fs::rename(store.with_extension("away"), &store).unwrap();
    };
    for comes_back_first in [false, true] {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        let token = ws.expect("connected", T).await["resume_token"]
            .as_str()
            .unwrap()
            .to_owned();
        for _ in 0..7 {
            ws.send(json!({"command":"step"})).await;
            ws.expect("state_update", T).await;
        }
        break_store();
        ws.ws.close(None).await.ok();
        s.wait_for("a pending write", T, |s| pending(s) == 1.0);
        if !comes_back_first {
            mend_store();
            s.wait_for("the write retried", Duration::from_secs(30), |s| {
                pending(s) == 0.0
            });
        }
        let mut back = Ws::connect(&s.url(&format!("/ws?resume={token}")))
            .await
            .unwrap();
        let c = back.expect("connected", T).await;
        assert_eq!(
            c["resumed"], true,
            "comes back first: {comes_back_first}: {c}"
        );
        let u = back.expect("state_update", T).await;
        assert_eq!(u["step"], 7, "{u}");
        if comes_back_first {
            assert_eq!(pending(&s), 0.0, "no longer pending once resumed");
            mend_store();
        }
        // Put the resumed session away (in a mended store) before the next round breaks the
        // store again: its detach must not become a second pending write there.
        back.ws.close(None).await.ok();
        s.wait_for("the resumed session put away", T, |s| {
            let live = s.get_json("/api/status")["sessions"]
                .as_array()
                .map(Vec::len);
            live == Some(0) && pending(s) == 0.0
        });
    }
    drop(s);
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}

/// p99 of the gaps between one session's frames while it plays at speed 10 for `secs`.
async fn frame_gaps_p99(ws: &mut Ws, secs: f64) -> f64 {
    let (mut gaps, mut last) = (Vec::new(), None::<Instant>);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        let v = ws.next(T).await.unwrap();
        if v["type"] == "state_update" {
            let now = Instant::now();
            if let Some(l) = last {
                gaps.push(now.duration_since(l).as_secs_f64() * 1e3);
            }
            last = Some(now);
        }
        ws.seen.clear();
    }
    pct(&mut gaps, 0.99)
}

/// Nothing the store does slowly reaches the relay or the status page: with every store write
/// taking 500 ms longer (a test-only fault), playing sessions' frame gaps move by at most 50 ms
/// at the 99th percentile, and `/api/status`, polled meanwhile, never waits on a write.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_store_does_not_slow_other_sessions() {
    let mut p99 = Vec::new();
    for slow in [None, Some("500")] {
        let s = Server::start_with(ServerOpts {
            env: slow
                .map(|ms| vec![("HAMLET_FAULT_SLOW_STORE_MS".into(), ms.into())])
                .unwrap_or_default(),
            ..Default::default()
        });
        let mut sessions = Vec::new();
        s.open_playing(&mut sessions, 4).await;
        let addr = s.addr.clone();
        let poller = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut worst = 0.0f64;
            while t0.elapsed() < Duration::from_secs(5) {
                let t = Instant::now();
                assert_eq!(http(&addr, "GET", "/api/status", &[]).0, 200);
                worst = worst.max(t.elapsed().as_secs_f64());
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("figures: slowest /api/status {:.0} ms", worst * 1e3);
            worst
        });
        let gaps: Vec<f64> =
            futures_util::future::join_all(sessions.iter_mut().map(|ws| frame_gaps_p99(ws, 4.0)))
                .await;
        let slowest_status = poller.join().unwrap();
        assert!(
            slowest_status < 0.25,
            "/api/status took {:.0} ms while the store was slow",
            slowest_status * 1e3
        );
        let worst = gaps.into_iter().fold(0.0, f64::max);
        eprintln!("figures: slow store {slow:?}: worst session's p99 frame gap {worst:.1} ms");
        p99.push(worst);
        if slow.is_some() {
            assert!(
                s.metric("hamlet_store_flush_seconds_max") >= 0.5,
                "the fault was in effect"
            );
        }
    }
    assert!(
        p99[1] - p99[0] <= 50.0,
        "a slow store moved the p99 frame gap from {:.1} to {:.1} ms",
        p99[0],
        p99[1]
    );
}
