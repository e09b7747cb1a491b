//! The lesson in a real headless Chromium (issue 30): charts that show learning honestly, Q bars
//! that tell the truth, "Inside the agent" beside the grid with its legend, "what if" on a paused
//! frame, and present mode covering both views at 1920 × 1080.

use hamlet_tests::webdriver::Browser;
use hamlet_tests::*;
use serde_json::Value;
use std::time::Duration;

const W: Duration = Duration::from_secs(30);

fn shot(b: &Browser, name: &str) {
    b.screenshot(&root().join(format!("target/test-artifacts/{name}.png")))
        .unwrap();
}

fn rect(b: &Browser, css: &str) -> [f64; 4] {
    let r = b
        .eval(&format!(
            "const r = document.querySelector('{css}').getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];"
        ))
        .unwrap();
    let v: Vec<f64> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    [v[0], v[1], v[2], v[3]]
}

/// Every chart's label boxes: none overlaps another, none leaves its canvas. Returns how many
/// labels were checked.
const LABELS_CHECK: &str = r#"
    const bad = []; let n = 0;
    for (const c of document.querySelectorAll('canvas[data-labels]')) {
        if (!c.offsetParent) continue;
        const r = c.getBoundingClientRect(), ls = JSON.parse(c.dataset.labels || '[]');
        ls.forEach((l, i) => {
            n += 1;
            const [x0, y0, x1, y1] = l.box;
            if (x0 < -0.5 || y0 < -0.5 || x1 > r.width + 0.5 || y1 > r.height + 0.5) bad.push(`${c.id}: "${l.text}" leaves the chart ${l.box}`);
            ls.slice(i + 1).forEach((m) => {
                const [a0, b0, a1, b1] = m.box;
                if (x0 < a1 && x1 > a0 && y0 < b1 && y1 > b0) bad.push(`${c.id}: "${l.text}" overlaps "${m.text}"`);
            });
        });
    }
    return { bad, n };"#;

fn assert_labels(b: &Browser, what: &str) {
    let r = b.eval(LABELS_CHECK).unwrap();
    assert!(
        r["n"].as_u64().unwrap() >= 10,
        "{what}: too few labels checked: {r}"
    );
    assert_eq!(r["bad"], serde_json::json!([]), "{what}");
}

/// Chart honesty: one −575 episode among rewards rising from −60 to +40 does not flatten the
/// curve (the scale follows the bulk, the chart says it clipped one); labels stay apart and inside
/// their charts, on a laptop and in present mode, where they are at least 20 px.
#[test]
fn charts_scale_robustly_and_keep_their_labels_apart() {
    let s = Server::start();
    let b = Browser::start().expect("headless Chromium");
    b.set_size(1280, 800).unwrap();
    b.goto(&format!("http://{}/ui/#training", s.addr)).unwrap();
    b.wait_for("the training view", W, "window.hamlet.training && window.hamlet.training.connected && window.hamlet.trainingForm > 0").unwrap();
    // A run's figures as the charts get them: 300 episodes, one catastrophic.
    b.eval(
        r#"const v = window.hamlet.views.training;
           v.state.total = 300;
           for (let e = 1; e <= 300; e++) {
             const reward = e === 150 ? -575 : -60 + e / 3 + 8 * Math.sin(e);
             v.addEpisode({ episode: e, reward, length: 80 + e, loss: 1 / e, epsilon: 0.995 ** e,
                            reason: e % 4 ? 'meter_depleted' : 'max_steps', meter: ['energy', 'hygiene', 'satiation'][e % 3] });
             if (e % 10 === 0) v.addEvaluation({ episode: e, steps: Math.min(500, 100 + e), return: -100 + e });
           }
           v.reference = { random: { steps: 92, reward: -109 }, max_steps: 500 };
           v.draw(); return true;"#,
    )
    .unwrap();
    let c = b
        .eval("const c = document.getElementById('c-reward'); return { range: c.dataset.range, clipped: c.dataset.clipped }")
        .unwrap();
    let range: Vec<f64> = c["range"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(range[0] > -200.0, "the scale follows the outlier: {c}");
    assert!(range[1] > 30.0, "the rise is on the scale: {c}");
    assert_eq!(c["clipped"], "1", "{c}");
    let label: Value = b
        .eval("return document.getElementById('c-reward').dataset.labels")
        .unwrap();
    assert!(
        label.as_str().unwrap().contains("outlier"),
        "the chart says it clipped: {label}"
    );
    assert_eq!(
        b.eval("return Number(document.getElementById('c-endings').dataset.points) > 20")
            .unwrap(),
        true
    );
    assert_labels(&b, "laptop");
    shot(&b, "charts-laptop");
    b.eval("document.getElementById('btn-present').click(); return true")
        .unwrap();
    b.set_size(1920, 1080).unwrap();
    b.wait_for(
        "present mode",
        W,
        "document.body.classList.contains('present')",
    )
    .unwrap();
    b.eval("window.dispatchEvent(new Event('resize')); window.hamlet.views.training.draw(); return true")
        .unwrap();
    assert_labels(&b, "present");
    // Axis labels at least 20 px on the projector: a label box is 1.3 × the text size.
    let smallest = b
        .eval("let m = 1e9; for (const c of document.querySelectorAll('#view-training canvas[data-labels]')) for (const l of JSON.parse(c.dataset.labels)) m = Math.min(m, (l.box[3] - l.box[1]) / 1.3); return m")
        .unwrap();
    assert!(
        smallest.as_f64().unwrap() >= 19.5,
        "present: labels {smallest} px"
    );
}

/// The best action has the longest Q bar: for all-negative values and for large, close ones.
#[test]
fn the_best_action_has_the_longest_q_bar() {
    let s = Server::start();
    let b = Browser::start().expect("headless Chromium");
    b.goto(&format!("http://{}/ui/", s.addr)).unwrap();
    b.wait_for(
        "the first frame",
        W,
        "window.hamlet.inference && window.hamlet.inference.frames >= 1",
    )
    .unwrap();
    for q in [
        "[-5.2, -3.1, -9.7, -4.4, -8.0]",
        "[1000.1, 1000.3, 1000.2, 1000.0, 999.9]",
    ] {
        let r = b
            .eval(&format!(
                "const v = window.hamlet.views.inference; v.paint({{ ...v.last, q_values: {q}, action: 1 }});
                 const w = [0,1,2,3,4].map(i => document.getElementById('q-' + i).getBoundingClientRect().width);
                 const shown = [0,1,2,3,4].map(i => document.getElementById('qv-' + i).textContent);
                 return {{ w, shown }};"
            ))
            .unwrap();
        let w: Vec<f64> = r["w"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let longest = w
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(longest, 1, "{q}: widths {w:?}");
        assert!(w.iter().all(|x| *x > 0.0), "every bar is seen: {w:?}");
        assert!(
            w[1] > 2.0 * w[4],
            "{q}: close values still ranked visibly: {w:?}"
        );
        let shown = &r["shown"];
        assert_eq!(
            shown[1],
            if q.starts_with("[-") {
                "-3.10"
            } else {
                "1000.30"
            }
        );
    }
}

/// "Inside the agent" sits beside the grid with its caption and legend, at 1280 × 800 and in
/// present mode; on a paused frame, dragging a meter or clicking a cell changes the Q bars at once
/// while the session stays where it was.
#[test]
fn inside_beside_the_grid_and_what_if_on_a_paused_frame() {
    let s = Server::start();
    let b = Browser::start().expect("headless Chromium");
    b.set_size(1280, 800).unwrap();
    b.goto(&format!("http://{}/ui/", s.addr)).unwrap();
    b.wait_for(
        "the first frame",
        W,
        "window.hamlet.inference && window.hamlet.inference.frames >= 1",
    )
    .unwrap();
    assert_eq!(
        b.eval("return !document.getElementById('start-hint').hidden")
            .unwrap(),
        true,
        "the first screen says how to start"
    );
    b.click("#show-inside").unwrap();
    b.click("#btn-step").unwrap();
    b.wait_for(
        "the inside view",
        W,
        "window.hamlet.inference.insideFrames >= 1",
    )
    .unwrap();
    for (mode, url) in [("laptop", "/ui/"), ("present", "/ui/?present=1")] {
        if mode == "present" {
            b.set_size(1920, 1080).unwrap();
            b.goto(&format!("http://{}{url}", s.addr)).unwrap();
            b.wait_for("the inside view again", W, "window.hamlet.inference && window.hamlet.inference.inside && window.hamlet.inference.insideFrames >= 1").unwrap();
        }
        let grid = rect(&b, "#grid");
        let inside = rect(&b, "#inside-canvas");
        let (vw, vh) = {
            let v = b.eval("return [innerWidth, innerHeight]").unwrap();
            (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
        };
        assert!(
            inside[0] >= grid[2] && inside[1] < grid[3] && inside[3] > grid[1],
            "{mode}: the inside view {inside:?} is not beside the grid {grid:?}"
        );
        assert!(
            inside[2] <= vw + 0.5 && inside[3] <= vh + 0.5,
            "{mode}: the inside view {inside:?} is off the {vw}×{vh} screen"
        );
        let legend = b
            .eval("return document.getElementById('inside-legend').textContent")
            .unwrap();
        assert!(
            legend.as_str().unwrap().contains("green") && legend.as_str().unwrap().contains("red"),
            "{legend}"
        );
        let caption = b
            .eval("return document.getElementById('inside-what').textContent")
            .unwrap();
        assert!(
            caption.as_str().unwrap().contains("step"),
            "{mode}: caption {caption}"
        );
        let px = b
            .eval("return Number(document.getElementById('inside-canvas').dataset.px)")
            .unwrap();
        let want = if mode == "present" { 20.0 } else { 14.0 };
        assert!(
            px.as_f64().unwrap() >= want,
            "{mode}: inside labels at {px} px"
        );
        let legend_px = b
            .eval("return parseFloat(getComputedStyle(document.getElementById('inside-legend')).fontSize)")
            .unwrap();
        assert!(
            legend_px.as_f64().unwrap() >= want,
            "{mode}: legend at {legend_px} px"
        );
        shot(&b, &format!("inside-{mode}"));
    }
    b.set_size(1280, 800).unwrap();
    b.goto(&format!("http://{}/ui/", s.addr)).unwrap();
    b.wait_for("the session again", W, "window.hamlet.inference && window.hamlet.inference.frames >= 1 && window.hamlet.inference.inside").unwrap();
    let before = b
        .eval("return [window.hamlet.inference.step, [0,1,2,3,4].map(i => document.getElementById('qv-' + i).textContent)]")
        .unwrap();
    b.click("#btn-whatif").unwrap();
    b.wait_for("the what-if sliders", W, "!document.getElementById('whatif-meters').hidden && window.hamlet.inference.probeResults >= 1").unwrap();
    // Drag energy down to nearly empty.
    b.eval("const e = document.getElementById('wi-energy'); e.value = 0.03; e.dispatchEvent(new Event('input')); return true").unwrap();
    b.wait_for(
        "the probe's answer",
        W,
        "window.hamlet.inference.probeResults >= 2",
    )
    .unwrap();
    let after = b
        .eval("return [window.hamlet.inference.step, [0,1,2,3,4].map(i => document.getElementById('qv-' + i).textContent), document.getElementById('whatif-note').textContent]")
        .unwrap();
    assert_ne!(after[1], before[1], "the Q bars follow the dragged meter");
    assert_eq!(after[0], before[0], "the session did not step");
    assert!(
        after[2].as_str().unwrap().contains("would choose"),
        "{after}"
    );
    shot(&b, "what-if");
    // Back to the session: its own Q-values again.
    b.click("#btn-whatif").unwrap();
    let back = b
        .eval("return [0,1,2,3,4].map(i => document.getElementById('qv-' + i).textContent)")
        .unwrap();
    assert_eq!(back, before[1]);
}

/// Present mode covers the whole lesson at 1920 × 1080: both tabs (large), every control of both
/// views on screen, the training grid at least half the screen's height.
#[test]
fn present_mode_fits_both_views_on_a_projector() {
    let s = Server::start();
    let b = Browser::start().expect("headless Chromium");
    b.set_size(1920, 1080).unwrap();
    b.goto(&format!("http://{}/ui/?present=1", s.addr)).unwrap();
    b.wait_for(
        "the first frame",
        W,
        "window.hamlet.inference && window.hamlet.inference.frames >= 1",
    )
    .unwrap();
    const OFF_SCREEN: &str = r#"
        const bad = [];
        for (const el of document.querySelectorAll('#VIEW button, #VIEW input, #VIEW select, #VIEW summary, nav button')) {
            if (!el.offsetParent || el.closest('details:not([open]) > :not(summary)')) continue;
            const r = el.getBoundingClientRect();
            if (r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5 || r.width === 0) bad.push(`${el.id || el.textContent.trim().slice(0, 20)} ${r.right}×${r.bottom}`);
        }
        return bad;"#;
    let tabs = b
        .eval("return [...document.querySelectorAll('nav button')].map(t => t.offsetParent !== null && parseFloat(getComputedStyle(t).fontSize))")
        .unwrap();
    assert!(
        tabs.as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_f64().is_some_and(|px| px >= 20.0)),
        "present: the tabs are there and large: {tabs}"
    );
    let off = b
        .eval(&OFF_SCREEN.replace("VIEW", "view-inference"))
        .unwrap();
    assert_eq!(
        off,
        serde_json::json!([]),
        "present, inference: controls off screen"
    );
    shot(&b, "present-inference");
    b.click("#tab-training").unwrap();
    b.wait_for(
        "the training view",
        W,
        "window.hamlet.training.connected && window.hamlet.trainingForm > 0",
    )
    .unwrap();
    let off = b
        .eval(&OFF_SCREEN.replace("VIEW", "view-training"))
        .unwrap();
    assert_eq!(
        off,
        serde_json::json!([]),
        "present, training: controls off screen"
    );
    let grid = rect(&b, "#t-grid");
    assert!(
        grid[3] - grid[1] >= 0.5 * 1080.0 - 1.0,
        "present: the training grid is {} px high",
        grid[3] - grid[1]
    );
    shot(&b, "present-training");
}
