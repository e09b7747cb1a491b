//! The UI in a real headless Chromium (Debian's chromium + chromium-driver), against the real
//! metaserver and workers. Screenshots land in target/test-artifacts/.

use hamlet_tests::webdriver::{Browser, LOWEST_CONTRAST};
use hamlet_tests::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const W: Duration = Duration::from_secs(30);

fn artifacts() -> std::path::PathBuf {
    root().join("target/test-artifacts")
}

/// The check above can fail: a paragraph made faint by its colour's alpha, then one made faint
/// by an ancestor's opacity, each becomes the worst text on the page.
fn contrast_check_sees_faint_text(b: &Browser) {
    for style in ["color: rgba(0, 0, 0, 0.25)", "opacity: 0.25"] {
        let planted = format!(
            "const d = document.createElement('div'); d.id = 'contrast-probe'; d.setAttribute('style', '{style}'); \
             d.innerHTML = '<p id=\"contrast-probe-text\">faint</p>'; document.body.appendChild(d); return true"
        );
        b.eval(&planted).unwrap();
        let worst = b.eval(LOWEST_CONTRAST).unwrap();
        b.eval("document.getElementById('contrast-probe').remove(); return true")
            .unwrap();
        assert!(
            worst["what"]
                .as_str()
                .unwrap()
                .contains("contrast-probe-text")
                && worst["ratio"].as_f64().unwrap() < 4.5,
            "{style}: the faint probe was not the worst text: {worst}"
        );
    }
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
    // Mid-run it names the episode; an unpaced 12-episode run may already be over.
    let progress = b
        .eval("return document.getElementById('t-progress').textContent")
        .unwrap();
    let progress = progress.as_str().unwrap();
    assert!(
        progress.contains("Episode") || progress.contains("after 12 episodes"),
        "{progress}"
    );
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
    let worst = b.eval(LOWEST_CONTRAST).unwrap();
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

/// Nothing wider than the viewport (no horizontal scrolling).
const NO_OVERFLOW: &str = "return document.documentElement.scrollWidth <= window.innerWidth";

/// The element's box within the viewport, as [left, top, right, bottom, width, height].
fn rect(b: &Browser, css: &str) -> Vec<f64> {
    let r = b
        .eval(&format!(
            "const r = document.querySelector('{css}').getBoundingClientRect(); \
             return [r.left, r.top, r.right, r.bottom, r.width, r.height];"
        ))
        .unwrap();
    r.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn viewport(b: &Browser) -> (f64, f64) {
    let v = b
        .eval("return [window.innerWidth, window.innerHeight]")
        .unwrap();
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

fn set_theme(b: &Browser, theme: &str) {
    b.eval(&format!(
        "if (window.hamlet.theme !== '{theme}') document.getElementById('btn-theme').click(); return true"
    ))
    .unwrap();
    b.wait_for(
        "the theme",
        W,
        &format!("window.hamlet.theme === '{theme}'"),
    )
    .unwrap();
}

fn assert_contrast(b: &Browser, theme: &str) {
    contrast_check_sees_faint_text(b);
    let worst = b.eval(LOWEST_CONTRAST).unwrap();
    assert!(
        worst["ratio"].as_f64().unwrap() >= 4.5,
        "{theme} theme, lowest text contrast: {worst}"
    );
}

/// The rooms Hamlet is used in: a laptop, a projector (present mode), a phone; light and dark;
/// keyboard use.
#[test]
fn the_ui_fits_a_laptop_a_projector_and_a_phone_in_both_themes() {
    let s = Server::start_with(ServerOpts::default_model(&[]));
    let b = Browser::start().expect("headless Chromium");
    let shot = |name: &str| {
        b.screenshot(&artifacts().join(format!("{name}.png")))
            .unwrap()
    };
    let frames =
        |n: u64| format!("window.hamlet.inference && window.hamlet.inference.frames >= {n}");

    // Laptop, 1280 × 800: grid, meters, Q-values and the survival chart without scrolling.
    b.set_size(1280, 800).unwrap();
    b.goto(&format!("http://{}/ui/", s.addr)).unwrap();
    b.wait_for("the first frame", W, &frames(1)).unwrap();
    let (vw, vh) = viewport(&b);
    // The overflow check can see overflow: a 3000 px element trips it.
    b.eval("const d = document.createElement('div'); d.id = 'wide'; d.style.width = '3000px'; d.style.height = '1px'; document.body.append(d); return true").unwrap();
    assert_eq!(b.eval(NO_OVERFLOW).unwrap(), false);
    b.eval("document.getElementById('wide').remove(); return true")
        .unwrap();
    assert_eq!(
        b.eval(NO_OVERFLOW).unwrap(),
        true,
        "laptop: horizontal overflow"
    );
    for css in ["#grid", "#meters", "#qvalues", "#survival", "#btn-play"] {
        let r = rect(&b, css);
        assert!(
            r[2] <= vw + 0.5 && r[3] <= vh + 0.5 && r[4] > 0.0,
            "laptop: {css} at {r:?} is outside {vw}×{vh}"
        );
    }
    let grid = rect(&b, "#grid");
    assert!(
        grid[4] >= 0.6 * vh.min(vw),
        "laptop: the grid is {} px in {vw}×{vh}",
        grid[4]
    );
    // An empty chart says what will appear there.
    let label = b
        .eval("return document.getElementById('survival').getAttribute('aria-label')")
        .unwrap();
    assert!(
        label.as_str().unwrap().contains("none finished yet"),
        "{label}"
    );
    for theme in ["light", "dark"] {
        set_theme(&b, theme);
        assert_contrast(&b, theme);
        shot(&format!("laptop-{theme}"));
    }

    // Keyboard: Space on a focused button presses that button (Reset), not play/pause.
    set_theme(&b, "light");
    b.send_keys("#btn-reset", "\u{E00D}").unwrap();
    b.wait_for(
        "the reset",
        W,
        "window.hamlet.inference.lastEnd === 'reset'",
    )
    .unwrap();
    assert_eq!(
        b.eval("return window.hamlet.inference.playing").unwrap(),
        false
    );
    // Space elsewhere toggles playing, and Play says it is pressed.
    b.send_keys("body", " ").unwrap();
    b.wait_for("playing", W, "window.hamlet.inference.playing === true")
        .unwrap();
    assert_eq!(
        b.eval("return document.getElementById('btn-play').getAttribute('aria-pressed')")
            .unwrap(),
        "true"
    );
    // Arrow keys move between tabs.
    b.send_keys("#tab-inference", "\u{E014}").unwrap(); // ArrowRight
    b.wait_for("the training tab", W, "document.getElementById('tab-training').getAttribute('aria-selected') === 'true' && document.activeElement.id === 'tab-training'").unwrap();
    b.click("#tab-inference").unwrap();

    // Projector, 1920 × 1080, present mode: the grid takes the height, figures are large.
    b.set_size(1920, 1080).unwrap();
    b.goto(&format!("http://{}/ui/?present=1", s.addr)).unwrap();
    b.wait_for("the first frame", W, &frames(1)).unwrap();
    let (vw, vh) = viewport(&b);
    let grid = rect(&b, "#grid");
    assert!(
        grid[4] >= 0.6 * vw.min(vh),
        "present: the grid is {} px in {vw}×{vh}",
        grid[4]
    );
    let figure = b
        .eval("return parseFloat(getComputedStyle(document.getElementById('f-step')).fontSize)")
        .unwrap();
    assert!(
        figure.as_f64().unwrap() >= 24.0,
        "present: figures at {figure} px"
    );
    assert_eq!(
        b.eval(NO_OVERFLOW).unwrap(),
        true,
        "present: horizontal overflow"
    );
    for theme in ["dark", "light"] {
        set_theme(&b, theme);
        assert_contrast(&b, &format!("present {theme}"));
        shot(&format!("projector-present-{theme}"));
    }

    // Phone, 375 × 812: one column, no horizontal scroll, playback within thumb's reach.
    b.set_size(375, 812).unwrap();
    b.goto(&format!("http://{}/ui/", s.addr)).unwrap();
    b.wait_for("the first frame", W, &frames(1)).unwrap();
    let (vw, vh) = viewport(&b);
    assert_eq!(
        b.eval(NO_OVERFLOW).unwrap(),
        true,
        "phone: horizontal overflow"
    );
    for css in ["#btn-play", "#btn-step", "#btn-reset"] {
        let r = rect(&b, css);
        assert!(
            r[0] >= 0.0 && r[2] <= vw && r[3] <= vh && r[1] >= vh * 0.75,
            "phone: {css} at {r:?} is not at the bottom of {vw}×{vh}"
        );
    }
    assert_eq!(
        b.eval("return getComputedStyle(document.querySelector('.hint')).display")
            .unwrap(),
        "none"
    );
    for theme in ["light", "dark"] {
        set_theme(&b, theme);
        assert_contrast(&b, &format!("phone {theme}"));
        shot(&format!("phone-{theme}"));
    }
    // The Workers view keeps its buttons on screen.
    b.click("#tab-operator").unwrap();
    b.wait_for(
        "worker rows",
        W,
        "document.querySelectorAll('#workers tbody button').length >= 1",
    )
    .unwrap();
    assert_eq!(
        b.eval(NO_OVERFLOW).unwrap(),
        true,
        "phone workers: horizontal overflow"
    );
    let r = rect(&b, "#workers tbody button");
    assert!(
        r[2] <= vw,
        "phone: the restart button at {r:?} is off screen"
    );
    assert_eq!(
        b.eval("return document.querySelector('#workers tr.mine') !== null")
            .unwrap(),
        true,
        "the viewer's own session is marked"
    );
    shot("phone-workers");
}

/// When a session's restart budget is spent (close 1011), the page says the session ended and
/// offers a new one — it does not quietly start a fresh session on its own.
#[test]
fn a_session_that_ended_says_so_and_offers_a_new_one() {
    let dir = crash_looping_workers_dir();
    let s = Server::start_with(ServerOpts {
        workers_dir: dir.clone(),
        args: ["--warm-workers", "0", "--backoff-max-ms", "100"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let b = Browser::start().expect("headless Chromium");
    b.goto(&format!("http://{}/ui/", s.addr)).unwrap();
    b.wait_for(
        "the ended notice",
        W,
        "!document.getElementById('ended').hidden && window.hamlet.conn.inference === 'ended'",
    )
    .unwrap();
    let text = b
        .eval("return document.getElementById('ended').textContent")
        .unwrap();
    let text = text.as_str().unwrap();
    assert!(
        text.contains("session has ended") && text.contains("Start a new session"),
        "{text}"
    );
    assert!(!text.contains("continues"), "{text}");
    shot_to(&b, "session-ended");
    // It stays ended: no new session is started behind the reader's back.
    let started = s.metric("hamlet_sessions_started_total");
    std::thread::sleep(Duration::from_secs(2)); // an observation window: a reconnect would start one
    assert_eq!(s.metric("hamlet_sessions_started_total"), started);
    assert_eq!(
        b.eval("return window.hamlet.conn.inference").unwrap(),
        "ended"
    );
    // The button starts one.
    b.click("#btn-new-session").unwrap();
    s.wait_for("a new session", W, |s| {
        s.metric("hamlet_sessions_started_total") > started
    });
    let _ = std::fs::remove_dir_all(dir);
}

fn shot_to(b: &Browser, name: &str) {
    b.screenshot(&artifacts().join(format!("{name}.png")))
        .unwrap();
}

/// Teaching views: exploration changes what the agent does on screen, the inside-the-agent panel
/// follows every step (and hides for a model without hidden-layer outputs), the training view
/// draws the agent while it learns, and a reloaded page draws the whole curve at once.
#[test]
fn watching_it_learn_and_looking_inside() {
    let s = Server::start_with(ServerOpts {
        copy_models: vec![root().join("tests/fixtures/hamlet-qnetwork-s1.onnx")],
        ..Default::default()
    });
    let b = Browser::start().expect("headless Chromium");
    b.set_size(1280, 900).unwrap();
    b.goto(&format!("http://{}/ui/?model=test0.onnx", s.addr))
        .unwrap();
    b.wait_for("the first frame", W, "window.hamlet.inference && window.hamlet.inference.frames >= 1 && window.hamlet.inference.model === 'test0.onnx'").unwrap();

    // Inside the agent: appears, and changes with every step.
    b.click("#show-inside").unwrap();
    b.click("#btn-step").unwrap();
    b.wait_for(
        "the inside panel",
        W,
        "!document.getElementById('inside').hidden && window.hamlet.inference.insideFrames >= 1",
    )
    .unwrap();
    let first = b
        .eval("return document.getElementById('inside-canvas').toDataURL()")
        .unwrap();
    b.click("#btn-step").unwrap();
    b.click("#btn-step").unwrap();
    b.wait_for(
        "a later step inside",
        W,
        "Number(document.getElementById('inside-canvas').dataset.frame) >= 3",
    )
    .unwrap();
    let later = b
        .eval("return document.getElementById('inside-canvas').toDataURL()")
        .unwrap();
    assert_ne!(first, later, "the panel changes between steps");
    b.eval("document.getElementById('inside').scrollIntoView(); return true")
        .unwrap();
    b.screenshot(&artifacts().join("inside-the-agent.png"))
        .unwrap();

    // Exploration: ε = 1 makes every action a random one, and the page says so.
    b.eval("const e = document.getElementById('epsilon'); e.value = 1; e.dispatchEvent(new Event('change')); return true").unwrap();
    let step0 = b
        .eval("return window.hamlet.inference.step")
        .unwrap()
        .as_u64()
        .unwrap();
    for _ in 0..3 {
        b.click("#btn-step").unwrap();
    }
    b.wait_for("random actions", W, &format!("window.hamlet.inference.step >= {} && window.hamlet.inference.explored === true && document.getElementById('f-action').textContent.includes('(random)')", step0 + 3)).unwrap();

    // A model without hidden-layer outputs: the panel hides and says why.
    b.eval("const m = document.getElementById('model'); m.value = 'hamlet-qnetwork-s1.onnx'; m.dispatchEvent(new Event('change')); return true").unwrap();
    b.wait_for("the panel to hide", W, "document.getElementById('inside').hidden && window.hamlet.inference.noActivations === true && !document.getElementById('show-inside').checked").unwrap();
    assert_eq!(
        b.eval("return new URLSearchParams(location.search).get('model')")
            .unwrap(),
        "hamlet-qnetwork-s1.onnx",
        "the link names the model"
    );

    // Training: the agent is drawn while it learns.
    b.click("#tab-training").unwrap();
    b.wait_for("the training form", W, "window.hamlet.trainingForm > 0")
        .unwrap();
    // The form starts with the lesson preset; before any run it cannot yet say how long it takes.
    assert_eq!(
        b.eval("return window.hamlet.training.preset").unwrap(),
        "learn"
    );
    assert_eq!(
        b.eval("return document.getElementById('t-num_episodes').value")
            .unwrap(),
        "5000"
    );
    assert_eq!(
        b.eval("return document.getElementById('t-stop_when_competent').checked")
            .unwrap(),
        true
    );
    assert_eq!(
        b.eval("return document.getElementById('preset-demo').textContent.includes('after the first qnetwork run')")
            .unwrap(),
        true
    );
    b.eval(
        "for (const [k, v] of Object.entries({num_episodes: 40, max_steps: 50, step_delay: 0.01, show_every: 2, batch_size: 16, seed: 5})) \
         document.getElementById('t-' + k).value = v; return true;",
    )
    .unwrap();
    b.click("#btn-train").unwrap();
    b.wait_for("shown steps", W, "window.hamlet.training.shownFrames >= 10 && document.getElementById('t-now').textContent.includes('step')").unwrap();
    b.wait_for("some episodes", W, "window.hamlet.training.done >= 6")
        .unwrap();
    b.eval("window.scrollTo(0, 0); return true").unwrap();
    b.screenshot(&artifacts().join("training-live.png"))
        .unwrap();
    // A reload mid-run: the whole curve is there at once (from /api/training/history).
    let done = b
        .eval("return window.hamlet.training.done")
        .unwrap()
        .as_u64()
        .unwrap();
    b.goto(&format!("http://{}/ui/#training", s.addr)).unwrap();
    b.wait_for("the history", W, &format!("window.hamlet.training.historyRows >= {done} && Number(document.getElementById('c-reward').dataset.points) >= {done}")).unwrap();
    // After a run, each preset says how long it takes on this server, from the measured speed.
    b.wait_for(
        "presets with a measured duration",
        W,
        "document.getElementById('preset-full').textContent.includes('steps/s')",
    )
    .unwrap();
    // … but not from another network's speed: the run was a qnetwork's.
    assert_eq!(
        b.eval("return document.getElementById('preset-full-dueling').textContent.includes('after the first dueling run')").unwrap(),
        true
    );
    // Unpaced training is fast: the run may have ended before the reloaded page connected.
    s.wait_for("the run to finish", Duration::from_secs(90), |s| {
        s.get_json("/api/status")["training"]["state"] == "completed"
    });
}

/// Sessions survive (sessions.md): a reloaded tab is the same session at the same step; a
/// restarted server gives it back; the share link shows it read-only to another browser, which
/// follows the owner's steps and has no controls.
#[test]
fn a_session_survives_a_reload_and_a_server_restart_and_can_be_watched() {
    let store = temp_dir("browser-store").join("state");
    let port = free_port().to_string();
    let opts = || ServerOpts::on_store(&store, &["--port", &port]);
    let mut s = Server::start_with(opts());
    let b = Browser::start().expect("headless Chromium");
    let page = format!("http://{}/ui/", s.addr);
    b.goto(&page).unwrap();
    b.wait_for(
        "the first frame",
        W,
        "window.hamlet.inference && window.hamlet.inference.frames >= 1",
    )
    .unwrap();
    for _ in 0..5 {
        b.click("#btn-step").unwrap();
    }
    b.wait_for("five steps", W, "window.hamlet.inference.step === 5")
        .unwrap();
    let id = b.eval("return window.hamlet.inference.sessionId").unwrap();
    // Reload: the same session, where it was, and the page says so.
    b.eval("location.reload(); return true").unwrap();
    b.wait_for("the resumed session", W, "window.hamlet.inference && window.hamlet.inference.resumedAt && window.hamlet.inference.frames >= 1")
        .unwrap();
    assert_eq!(
        b.eval("return window.hamlet.inference.sessionId").unwrap(),
        id
    );
    assert_eq!(b.eval("return window.hamlet.inference.step").unwrap(), 5);
    let note = b.eval("const n = document.getElementById('resumed-note'); return n.hidden ? '' : n.textContent").unwrap();
    assert_eq!(note, "Resumed at episode 1, step 5.");
    // Share: a second browser opens the link, sees the session and no controls.
    b.click("#btn-share").unwrap();
    let link = b
        .eval("return document.getElementById('share-link').value")
        .unwrap();
    let link = link.as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("http://{}/?watch=", s.addr)),
        "{link}"
    );
    let w = Browser::start().expect("a second headless Chromium");
    w.goto(&link).unwrap();
    w.wait_for("the watched session", W, "window.hamlet.inference && window.hamlet.inference.readOnly && window.hamlet.inference.step === 5")
        .unwrap();
    assert_eq!(
        w.eval("return window.hamlet.inference.watching").unwrap(),
        id
    );
    let visible = w.eval("return ['btn-play','btn-step','btn-reset','speed','btn-share'].filter(i => document.getElementById(i).offsetParent !== null)").unwrap();
    assert_eq!(
        visible,
        serde_json::json!([]),
        "no controls on a watch page"
    );
    let banner = w
        .eval("return document.getElementById('watch-banner').textContent")
        .unwrap();
    assert!(banner.as_str().unwrap().contains("view only"), "{banner}");
    b.click("#btn-step").unwrap();
    w.wait_for("the owner's step", W, "window.hamlet.inference.step === 6")
        .unwrap();
    shot_to(&w, "watching");
    // The server restarts: the page reconnects by itself and resumes at the step it had.
    assert_eq!(s.terminate(), Some(0));
    let s2 = Server::start_with(opts());
    b.wait_for("the session after the restart", Duration::from_secs(60), &format!(
        "window.hamlet.inference.connected && window.hamlet.inference.sessionId === {id} && window.hamlet.conn.inference === 'connected' && window.hamlet.inference.resumedAt && window.hamlet.inference.resumedAt.step === 6"
    ))
    .unwrap();
    drop((w, b, s2, s));
    let _ = std::fs::remove_dir_all(store.parent().unwrap());
}

/// A group's page, `/ui/?room=NAME`: its training view joins that room (the server lists the
/// room with this browser as its viewer) and says which room it is; the class's room is not it.
#[test]
fn a_groups_page_trains_in_its_own_room() {
    let s = Server::start();
    let b = Browser::start().expect("headless Chromium");
    b.goto(&format!("http://{}/ui/?room=green", s.addr))
        .unwrap();
    b.click("#tab-training").unwrap();
    b.wait_for(
        "the training view connected",
        W,
        "window.hamlet.training && window.hamlet.training.connected",
    )
    .unwrap();
    assert_eq!(b.eval("return window.hamlet.room").unwrap(), "green");
    let shown = b
        .eval("return document.getElementById('t-room').textContent")
        .unwrap();
    assert!(shown.as_str().unwrap().contains("green"), "{shown}");
    s.wait_for("the room's viewer", W, |s| {
        let rooms = s.get_json("/api/rooms")["rooms"].clone();
        let viewers = |name: &str| {
            let r = rooms.as_array().unwrap().iter().find(|r| r["room"] == name);
            r.map(|r| r["viewers"].as_u64().unwrap_or(0))
        };
        viewers("green") == Some(1) && viewers("class") == Some(0)
    });
}
