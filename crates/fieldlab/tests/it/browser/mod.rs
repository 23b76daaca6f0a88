//! Headless Debian Chromium driven over the Chrome DevTools Protocol, for the UI tests.
//!
//! Hand-written on purpose: the tests need eight CDP methods (navigate, evaluate, key events,
//! screenshots, viewport, and the console/log/exception events), and the CDP crates
//! (chromiumoxide, headless_chrome) bring a generated binding of the whole protocol that takes
//! minutes to compile on a 2-core CI machine. This speaks JSON over one WebSocket (tungstenite)
//! and records every console error, uncaught exception and failed resource load, so a test can
//! fail on any of them. Chromium comes from Debian's `chromium` package (scripts/test.sh).
#![allow(dead_code)]

use base64::Engine;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

fn find_chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("Chromium is not installed; run scripts/test.sh, which installs Debian's `chromium`")
}

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Every CDP event received so far, in order.
    pub events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start headless Chromium with a fresh profile and attach to its first tab.
    pub fn launch(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(find_chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose into the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse().ok())
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let targets: Value = loop {
            if let Ok(r) = reqwest::blocking::get(format!("http://127.0.0.1:{port}/json/list")) {
                if let Ok(v) = r.json::<Value>() {
                    if v.as_array()
                        .is_some_and(|a| a.iter().any(|t| t["type"] == "page"))
                    {
                        break v;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromium has no page target");
            std::thread::sleep(Duration::from_millis(50));
        };
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("page target with a debugger URL")
            .to_string();
        let (ws, _) = tungstenite::connect(url).expect("connect to the DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, json!({}));
        }
        b.viewport(width, height);
        b
    }

    /// Send one CDP command and wait for its result (events arriving meanwhile are recorded).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("send CDP command");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer to {method} within 20 s"
            );
            if let Some(v) = self.read_one() {
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        panic!("{method} failed: {e}");
                    }
                    return v["result"].clone();
                }
            }
        }
    }

    fn read_one(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).ok()?;
                if v.get("method").is_some() {
                    self.events.push(v.clone());
                }
                Some(v)
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection failed: {e}"),
        }
    }

    /// Record events for `d` (lets timers and network run while the test waits).
    pub fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.read_one();
        }
    }

    pub fn viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Evaluate a JavaScript expression (promises awaited); its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expr}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until it returns something other than null/false/undefined.
    pub fn wait_for(&mut self, what: &str, within: Duration, expr: &str) -> Value {
        let end = Instant::now() + within;
        loop {
            let v = self.eval(expr);
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "timed out after {within:?} waiting for {what}\nconsole problems: {:#?}",
                self.console_problems()
            );
            self.pump(Duration::from_millis(100));
        }
    }

    /// Press one key as a keyboard would (Tab, Enter, ...): keydown then keyup.
    pub fn press(&mut self, key: &str) {
        let (code, vk, text) = match key {
            "Tab" => ("Tab", 9, ""),
            "Enter" => ("Enter", 13, "\r"),
            "Escape" => ("Escape", 27, ""),
            k => panic!("key {k} is not mapped"),
        };
        let mut down = json!({"type": "keyDown", "key": key, "code": code,
            "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk});
        if text.is_empty() {
            down["type"] = json!("rawKeyDown");
        } else {
            down["text"] = json!(text);
        }
        self.call("Input.dispatchKeyEvent", down);
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": code,
                "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}),
        );
    }

    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Console errors, uncaught exceptions and failed loads seen so far, as text.
    pub fn console_problems(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Runtime.exceptionThrown" => Some(format!(
                        "uncaught: {}",
                        p["exceptionDetails"]["exception"]["description"]
                            .as_str()
                            .unwrap_or_else(|| p["exceptionDetails"]["text"]
                                .as_str()
                                .unwrap_or("?"))
                    )),
                    "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
                        "log ({}): {} {}",
                        p["entry"]["source"].as_str().unwrap_or("?"),
                        p["entry"]["text"].as_str().unwrap_or("?"),
                        p["entry"]["url"].as_str().unwrap_or("")
                    )),
                    _ => None,
                }
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
