//! The UI in a real headless Chromium (Debian's chromium + chromium-driver), against the real
//! metaserver and workers. Screenshots land in target/test-artifacts/.

use hamlet_tests::webdriver::Browser;
use hamlet_tests::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const W: Duration = Duration::from_secs(30);

fn artifacts() -> std::path::PathBuf {
    root().join("target/test-artifacts")
}

#[test]
fn inference_training_and_a_killed_worker_in_a_real_browser() {
    let s = Server::start();
    let b = Browser::start().expect("headless Chromium");
    // A browser asking for `/` is sent to the UI.
    b.goto(&format!("http://{}/", s.addr)).unwrap();
    b.wait_for(
        "the session's first frame",
        W,
        "window.hamlet.inference && window.hamlet.inference.frames >= 1",
    )
    .unwrap();
    assert_eq!(b.eval("return location.pathname").unwrap(), "/ui/");
    assert_eq!(
        b.eval("return document.getElementById('conn').dataset.state")
            .unwrap(),
        "connected"
    );
    let models = b
        .eval("return [...document.querySelectorAll('#model option')].map(o => o.value)")
        .unwrap();
    assert_eq!(models, serde_json::json!(["test0.onnx"]));

    // Play: the agent moves and the meters change.
    b.click("#btn-play").unwrap();
    b.wait_for("ten steps", W, "window.hamlet.inference.step >= 10")
        .unwrap();
    let energy = b
        .eval("return document.getElementById('mv-energy').textContent")
        .unwrap();
    assert_ne!(energy, "100%", "meters change as the agent lives");
    assert_ne!(
        b.eval("return document.getElementById('f-action').textContent")
            .unwrap(),
        "–"
    );
    let chosen = b
        .eval("return document.querySelectorAll('#qvalues span.chosen').length")
        .unwrap();
    assert_eq!(
        chosen, 2,
        "the chosen action's label and value are highlighted"
    );
    // The bars show the numbers: render() sets both at once, so at any moment the widest bar is
    // the largest Q-value's (a CSS transition once made them lag behind).
    let agree = b
        .eval(
            "const vals = [0,1,2,3,4].map(i => Number(document.getElementById('qv-' + i).textContent)); \
             const widths = [0,1,2,3,4].map(i => parseFloat(document.getElementById('q-' + i).style.width)); \
             const cs = [0,1,2,3,4].map(i => getComputedStyle(document.getElementById('q-' + i)).transitionDuration); \
             return vals[widths.indexOf(Math.max(...widths))] === Math.max(...vals) && cs.every(d => d === '0s');",
        )
        .unwrap();
    assert_eq!(
        agree, true,
        "the widest Q bar belongs to the largest Q-value, with no animation lag"
    );
    b.eval("window.scrollTo(0, 0); return true").unwrap();
    b.screenshot(&artifacts().join("inference.png")).unwrap();

    // Kill the worker behind the page: a visible notice, and the session carries on.
    let pid = s
        .workers()
        .iter()
        .find(|w| w["state"] == "active")
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .expect("an active worker");
    let step_before = b
        .eval("return window.hamlet.inference.step")
        .unwrap()
        .as_u64()
        .unwrap();
    signal(pid, Signal::SIGKILL);
    b.wait_for("the restart notice", W, "!document.getElementById('notice').hidden && document.getElementById('notice').textContent.includes('restarted')").unwrap();
    b.wait_for(
        "steps after the restart",
        W,
        &format!("window.hamlet.inference.step > {}", step_before + 3),
    )
    .unwrap();
    assert_eq!(
        b.eval("return window.hamlet.inference.restarts").unwrap(),
        1
    );
    b.eval("window.scrollTo(0, 0); return true").unwrap();
    b.screenshot(&artifacts().join("inference-after-restart.png"))
        .unwrap();

    // Training: start a short run from the form; episodes arrive in the charts.
    b.click("#tab-training").unwrap();
    b.wait_for("the training socket", W, "window.hamlet.training.connected")
        .unwrap();
    // The form is built from the server's table of fields (GET /api/training/config).
    let table = s.get_json("/api/training/config")["fields"]
        .as_array()
        .unwrap()
        .len();
    b.wait_for(
        "the training form",
        W,
        &format!("window.hamlet.trainingForm === {table}"),
    )
    .unwrap();
    assert_eq!(
        b.eval("return document.getElementById('t-num_episodes').max")
            .unwrap(),
        "100000"
    );
    b.eval(
        "for (const [k, v] of Object.entries({num_episodes: 12, max_steps: 60, step_delay: 0.02, show_every: 1, batch_size: 16})) \
         document.getElementById('t-' + k).value = v; return true;",
    )
    .unwrap();
    b.click("#btn-train").unwrap();
    b.wait_for(
        "episodes in the reward chart",
        W,
        "Number(document.getElementById('c-reward').dataset.points) >= 4",
    )
    .unwrap();
    assert!(b
        .eval("return document.getElementById('t-progress').textContent")
        .unwrap()
        .as_str()
        .unwrap()
        .contains("Episode"));
    b.eval("window.scrollTo(0, 0); return true").unwrap();
    b.screenshot(&artifacts().join("training.png")).unwrap();
    b.wait_for(
        "the run to finish",
        Duration::from_secs(90),
        "window.hamlet.training.lastModel",
    )
    .unwrap();
    // The new model is offered to the inference view at once.
    b.click("#tab-inference").unwrap();
    b.wait_for(
        "the new model in the list",
        W,
        "[...document.querySelectorAll('#model option')].length >= 2",
    )
    .unwrap();

    // Colours: every visible text element meets WCAG AA (4.5:1) against its effective background.
    b.click("#tab-inference").unwrap();
    let worst = b
        .eval(
            r#"
            const lum = (c) => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                                 return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
            const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
            const bg = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
                                  if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3); } return [255, 255, 255]; };
            let worst = { ratio: 99, what: '' };
            for (const el of document.querySelectorAll('body *')) {
                if (!el.offsetParent || el.closest('[hidden]')) continue;
                const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
                if (!own) continue;
                const fg = rgb(getComputedStyle(el).color).slice(0, 3);
                const [a, b] = [lum(fg), lum(bg(el))];
                const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
                if (ratio < worst.ratio) worst = { ratio, what: el.tagName + '#' + el.id + ' ' + el.textContent.trim().slice(0, 30) };
            }
            return worst;"#,
        )
        .unwrap();
    assert!(
        worst["ratio"].as_f64().unwrap() >= 4.5,
        "lowest text contrast: {worst}"
    );

    // Operator panel lists real worker processes.
    b.click("#tab-operator").unwrap();
    b.wait_for(
        "worker rows",
        W,
        "document.querySelectorAll('#workers tbody tr').length >= 1",
    )
    .unwrap();
    b.eval("window.scrollTo(0, 0); return true").unwrap();
    b.screenshot(&artifacts().join("operator.png")).unwrap();
}
