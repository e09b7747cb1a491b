//! A minimal W3C WebDriver client for Debian's chromedriver + headless Chromium (no downloads).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
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

fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // Read the head, then exactly the body: chromedriver may keep the connection open.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            let _ = s.read_to_end(&mut buf);
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Ok((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
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

    pub fn click(&self, css: &str) -> Result<()> {
        let el = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("no element {css}"))?
            .to_owned();
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
        let png = base64_decode(b64.as_str().ok_or_else(|| anyhow!("no screenshot"))?)?;
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

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let val = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("bad base64"),
        })
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Ok(out)
}
