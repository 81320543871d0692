//! Headless Chromium for the monitor page's tests, driven over the DevTools protocol (CDP) with
//! the WebSocket client the daemon already depends on: no WebDriver crate to build.
//!
//! Chromium starts with the flags the project's CI uses (`--headless --no-sandbox --disable-gpu
//! --disable-background-networking --disable-component-update --no-first-run`), a fresh
//! `--user-data-dir`, and `--remote-debugging-port=0`; it writes the port it chose to
//! `DevToolsActivePort` in that directory. One page target is opened and attached in "flat"
//! mode, so every command carries its `sessionId`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Chromium program: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn program() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// A headless Chromium with one page.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium with a page of `width`×`height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        Browser::start_with(width, height, &[]).await
    }

    /// The same with more command-line flags (fake media devices, …).
    pub async fn start_with(width: u32, height: u32, extra: &[String]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(program())
            .args(extra)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                &format!("--window-size={width},{height}"),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); scripts/test-deps installs it", program()));
        let endpoint = wait_for_endpoint(profile.path()).await;
        let (socket, _) = tokio_tungstenite::connect_async(&endpoint).await.expect("connect to Chromium's DevTools");
        let mut browser = Browser { child, _profile: profile, socket, session: String::new(), next_id: 0 };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"})).await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached =
            browser.call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.page("Page.enable", json!({})).await;
        browser.page("Runtime.enable", json!({})).await;
        browser
            .page(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    /// Sends one command and returns its `result`; a protocol error fails the test.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(message.to_string())).await.expect("send to Chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {method}"))
                .expect("Chromium closed DevTools")
                .expect("DevTools socket");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            // Events (no id) and answers to other commands are skipped.
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("{method} failed: {error}");
            }
            return reply["result"].clone();
        }
    }

    /// A command to the page.
    async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Loads `url` and waits until its document has finished loading.
    pub async fn goto(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", "the page loads").await;
    }

    /// Evaluates a JavaScript expression (awaiting a promise) and returns its JSON value. A thrown
    /// exception fails the test with the page's message.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .page("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true}))
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("the page threw evaluating {expression:?}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Runs `script` in every document the page loads from now on, before the page's own
    /// scripts (a test's probe into what the page does, e.g. the audio it plays).
    pub async fn on_new_document(&mut self, script: &str) {
        self.page("Page.addScriptToEvaluateOnNewDocument", json!({"source": script})).await;
    }

    /// Evaluates `expression` as if the user did it (a click that may start audio, which the
    /// autoplay policy allows only after a user gesture).
    pub async fn eval_as_user(&mut self, expression: &str) -> Value {
        let result = self
            .page(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("the page threw evaluating {expression:?}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `condition` (a JavaScript expression) until it is true. This is a deadline for a
    /// failure, never a measurement: a slow machine only takes longer to pass.
    pub async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = format!("(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()");
        while Instant::now() < deadline {
            if self.eval(&probe).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''").await;
        panic!("timed out waiting until {what} ({condition}); the page shows:\n{}", body.as_str().unwrap_or(""));
    }

    /// Lets the page download files, into `dir` (the exports' test: what the supervisor gets).
    pub async fn allow_downloads(&mut self, dir: &Path) {
        let params = json!({"behavior": "allow", "downloadPath": dir.display().to_string()});
        self.call(None, "Browser.setDownloadBehavior", params).await;
    }

    /// Chromium's counters of the page's work (`Performance.getMetrics`: `LayoutCount`,
    /// `RecalcStyleCount`, `TaskDuration`, `ScriptDuration`, `Nodes`, …), by name. Counts are
    /// what a test may assert on; durations are for the record.
    pub async fn metrics(&mut self) -> std::collections::HashMap<String, f64> {
        self.page("Performance.enable", json!({})).await;
        let reply = self.page("Performance.getMetrics", json!({})).await;
        let mut metrics = std::collections::HashMap::new();
        for metric in reply["metrics"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (metric["name"].as_str(), metric["value"].as_f64()) {
                metrics.insert(name.to_owned(), value);
            }
        }
        metrics
    }

    /// Saves a PNG of the page's viewport.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `DevToolsActivePort` (the port, then the browser's WebSocket path) once Chromium wrote it.
async fn wait_for_endpoint(profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{port}{path}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Chromium did not open its DevTools port (is {} installed?)", program());
}

/// Where tests put screenshots: `test-output/` in the package (ignored by git).
pub fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-output")
}
