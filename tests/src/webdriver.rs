//! A minimal W3C WebDriver client for Debian's chromedriver + headless Chromium (no downloads):
//! the seven commands the browser test uses, over `ureq`. (`fantoccini` would do the same; see
//! the closing notes in ARCHITECTURE.md for why it is not used.)

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    profile: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One WebDriver command over HTTP: (status, JSON answer).
fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => agent.delete(&url).call(),
        ("POST", Some(b)) => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        ("POST", None) => agent.post(&url).send_empty(),
        (m, _) => bail!("no {m} in WebDriver"),
    }?;
    let code = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()?;
    Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1280 × 720.
    pub fn start() -> Result<Browser> {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "chromedriver not found: run scripts/setup --tests (Debian chromium-driver)",
            )?;
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        loop {
            if let Ok((200, v)) = request(&addr, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            if t.elapsed() > Duration::from_secs(20) {
                // Not yet a `Browser`, so no Drop: end the driver here.
                let _ = driver.kill();
                let _ = driver.wait();
                bail!("chromedriver did not become ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = crate::temp_dir("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,720", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let session = match request(&addr, "POST", "/session", Some(&caps)) {
            Ok((200, v)) => v["value"]["sessionId"].as_str().map(str::to_owned),
            _ => None,
        };
        let Some(session) = session else {
            // Not yet a `Browser`, so no Drop: end the driver and its profile here.
            let _ = driver.kill();
            let _ = driver.wait();
            let _ = std::fs::remove_dir_all(&profile);
            bail!("cannot start headless Chromium through chromedriver");
        };
        Ok(Browser {
            driver,
            addr,
            session,
            profile,
        })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (code, v) = request(
            &self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )?;
        if code != 200 {
            bail!("webdriver {method} {path}: {code} {v}");
        }
        Ok(v["value"].clone())
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .map(|_| ())
    }

    /// Runs `script` (a function body; use `return`) in the page.
    pub fn eval(&self, script: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Resizes the window (headless: the viewport) to `width` × `height` CSS pixels.
    pub fn set_size(&self, width: u32, height: u32) -> Result<()> {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .map(|_| ())
    }

    /// Types `keys` into the element (WebDriver key codes: "\u{E00D}" is Space); the element
    /// gets the focus first, as a person tabbing to it would give it.
    pub fn send_keys(&self, css: &str, keys: &str) -> Result<()> {
        let id = self.element(css)?;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": keys})),
        )
        .map(|_| ())
    }

    fn element(&self, css: &str) -> Result<String> {
        let el = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        el.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no element {css}"))
    }

    pub fn click(&self, css: &str) -> Result<()> {
        let id = self.element(css)?;
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .map(|_| ())
    }

    /// Polls a JavaScript condition until it returns true.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            if self.eval(&format!(
                "try {{ return !!({cond}); }} catch (e) {{ return false; }}"
            ))? == Value::Bool(true)
            {
                return Ok(());
            }
            if t.elapsed() > timeout {
                let state = self.eval("return JSON.stringify({hamlet: window.hamlet, errors: window.hamletErrors, url: location.href})").unwrap_or(Value::Null);
                bail!("timed out waiting for {what} ({cond}); page state: {state}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let b64 = self.cmd("GET", "/screenshot", None)?;
        use base64::Engine;
        let b64 = b64.as_str().ok_or_else(|| anyhow!("no screenshot"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(b64)?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The lowest WCAG contrast ratio of any visible text element against its effective background,
/// and which element it is. What the eye gets: each ancestor's background composited from the
/// canvas down with its alpha and the opacity of its group (the product of the `opacity` of it and
/// its ancestors), then the text's colour composited onto that with its own alpha and the same
/// opacity — so faint text (`rgba(…, 0.4)`, `opacity: 0.5`) is judged as it looks.
pub const LOWEST_CONTRAST: &str = r#"
    const lum = (c) => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                         return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
    const rgba = (s) => { const v = (s.match(/[\d.]+/g) || []).map(Number); return [v.slice(0, 3), v.length >= 4 ? v[3] : 1]; };
    const over = (c, a, under) => c.map((v, i) => v * a + under[i] * (1 - a));
    const seen = (el) => {
        const chain = []; for (let e = el; e; e = e.parentElement) chain.unshift(e);
        let bg = [255, 255, 255], opacity = 1;
        for (const e of chain) {
            const st = getComputedStyle(e);
            opacity *= Number(st.opacity);
            const [c, a] = rgba(st.backgroundColor);
            if (c.length === 3) bg = over(c, a * opacity, bg);
        }
        const [fg, a] = rgba(getComputedStyle(el).color);
        return [over(fg, a * opacity, bg), bg];
    };
    let worst = { ratio: 99, what: '' };
    for (const el of document.querySelectorAll('body *')) {
        if (!el.offsetParent || el.closest('[hidden]')) continue;
        const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!own) continue;
        const [fg, bg] = seen(el);
        const [a, b] = [lum(fg), lum(bg)];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < worst.ratio) worst = { ratio, what: el.tagName + '#' + el.id + ' ' + el.textContent.trim().slice(0, 30) };
    }
    return worst;"#;
