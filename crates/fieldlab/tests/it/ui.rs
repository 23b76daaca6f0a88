//! The web UI in a real headless Chromium against a real `fieldlab up`: the fleet page lists
//! the demo fleet, a device page draws its history and keeps receiving points, the navigation
//! works from the keyboard alone, every page draws without a console error, and screenshots of
//! every page at 1280x800 land in `target/ui-screenshots/` for a human to look at. The pages
//! that show what other parts found (anomalies, quality, rate limits, proof verification, a
//! lesson) are checked for the real data a running fieldlab produced; sign-in with auth on
//! shows a student the server's refusal.

use crate::browser;
use crate::common;

use browser::Browser;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

const DEMO: [&str; 3] = ["temperature_sensor_1", "pressure_valve_1", "pv_inverter_1"];

/// Every page of the nav, and the heading it must show once drawn.
const PAGES: [(&str, &str); 12] = [
    ("#/", "Fleet"),
    ("#/device/pv_inverter_1", "pv_inverter_1"),
    ("#/map", "Floor map"),
    ("#/anomalies", "Anomalies"),
    ("#/quality", "Data quality"),
    ("#/quarantine", "Quarantine"),
    ("#/ratelimit", "Rate limits"),
    ("#/verify", "Verify a proof bundle"),
    ("#/lessons", "Bad-data lessons"),
    ("#/lessons/stuck-sensor", "A stuck sensor"),
    ("#/health", "Health"),
    ("#/signin", "Sign in"),
];

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ui-screenshots")
}

fn h1(b: &mut Browser) -> String {
    b.eval("document.querySelector('main h1')?.textContent || ''")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn dashboard_works_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fieldlab::start(dir.path(), &[]);
    f.wait_ready(Duration::from_secs(15));
    let mut b = Browser::launch(1280, 800);

    // The console check itself works: a console.error and a failed load are both caught.
    b.navigate(&f.url("/ui/icon.svg"));
    b.eval("console.error('self-check'); fetch('/ui/self-check-missing.js').then(() => true)");
    b.pump(Duration::from_millis(300));
    let caught = b.console_problems();
    assert!(
        caught.iter().any(|p| p.contains("self-check")) && caught.iter().any(|p| p.contains("404")),
        "the console check misses errors: {caught:#?}"
    );
    b.events.clear();

    // A payload that cannot be parsed, for the quarantine page.
    mosquitto_pub(f.mqtt_port, "devices/x/y/telemetry", b"not a payload");
    b.navigate(&f.url("/"));

    // The fleet page lists the demo fleet, each device linking to its page.
    let listed = fleet_ids(&mut b, "the demo fleet in the fleet table", 3);
    for id in DEMO {
        assert!(
            listed.as_array().unwrap().iter().any(|v| v == id),
            "{id} missing from {listed}"
        );
    }
    // Values with units arrive (polling today, the WebSocket once it exists). Measured in the
    // page: ms from navigation start to the first value on screen, and bytes transferred.
    let first_value_ms = b.wait_for(
        "newest values with units in the fleet table",
        Duration::from_secs(15),
        "new Promise(res => { const chk = () => \
           (document.querySelector('#fleet-table')?.textContent || '').includes('°C') \
             ? res(performance.now()) : requestAnimationFrame(chk); chk(); })",
    );
    // Every unit the UI shows is the catalog's: for each device type of the default fleet, the
    // unit the page's own `unitOf` gives each field (from what the server sends) equals the
    // emulator catalog's, and the wind turbine's power (kW) is shown in kW on the fleet page.
    let shown = b.eval(
        "(async () => { const { unitOf } = await import('/ui/js/format.js'); \
           const d = await (await fetch('/api/v1/devices')).json(); \
           return d.devices.map(x => [x.device_type, Object.fromEntries( \
             Object.keys(x.units || {}).map(f => [f, unitOf(f, {}, x.units)]))]); })()",
    );
    let mut checked = 0;
    for pair in shown.as_array().unwrap() {
        let ty = pair[0].as_str().unwrap();
        let Some(info) = fieldlab_emulator::model::type_info(ty) else {
            continue;
        };
        for f in info
            .fields
            .iter()
            .filter(|f| f.unit != "bool" && !f.unit.is_empty())
        {
            assert_eq!(
                pair[1][f.name].as_str(),
                Some(f.unit),
                "{ty}.{}: the UI shows {:?}, the catalog says {}",
                f.name,
                pair[1][f.name],
                f.unit
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} fields compared: {shown}");
    b.wait_for(
        "the wind turbine's power in kW on the fleet page",
        Duration::from_secs(15),
        "(() => { const row = [...document.querySelectorAll('#fleet-table tbody tr')] \
           .find(r => r.textContent.includes('wind_turbine_1')); \
           return row && /power [^·]*kW/.test(row.textContent) ? true : null; })()",
    );
    let bytes = b.eval(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')) \
           .reduce((n, e) => n + (e.transferSize || 0), 0)",
    );
    eprintln!(
        "first load of the overview: {bytes} bytes transferred, first value on screen after {:.0} ms",
        first_value_ms.as_f64().unwrap()
    );
    let first_live_ms = b.wait_for(
        "the first message over /ws",
        Duration::from_secs(15),
        "performance.getEntriesByName('fieldlab:first-live')[0]?.startTime ?? null",
    );
    eprintln!(
        "first live value over /ws {:.0} ms after navigation start",
        first_live_ms.as_f64().unwrap()
    );
    assert!(
        bytes.as_u64().unwrap() < 300_000,
        "the overview must load in < 300 KB, took {bytes} B"
    );
    b.screenshot(&shots().join("fleet.png"));

    // Keyboard only: Tab from the top of the page to the Quarantine link, Enter opens it, and
    // focus lands on the new page's heading.
    b.eval("document.activeElement?.blur(); window.scrollTo(0, 0); true");
    let mut reached = false;
    for _ in 0..25 {
        b.press("Tab");
        let href = b.eval("document.activeElement?.getAttribute('href')");
        if href == "#/quarantine" {
            reached = true;
            break;
        }
    }
    assert!(
        reached,
        "Tab never reached the Quarantine link of the navigation"
    );
    b.press("Enter");
    b.wait_for(
        "the quarantine page after Enter",
        Duration::from_secs(10),
        "location.hash === '#/quarantine' && document.querySelector('main h1')?.textContent === 'Quarantine'",
    );
    b.wait_for(
        "focus on the new page's heading",
        Duration::from_secs(5),
        "document.activeElement?.tagName === 'H1'",
    );
    assert_eq!(
        b.eval("document.querySelector('#nav a[aria-current=page]')?.getAttribute('href')"),
        "#/quarantine"
    );

    // A device page draws a chart per numeric field, with points, and more arrive live.
    b.eval("location.hash = '#/device/pv_inverter_1'; true");
    let first = b.wait_for(
        "a chart with points on the device page",
        Duration::from_secs(15),
        "(() => { const p = document.querySelector('.chart[data-field=\"ac_power\"] .plot'); \
           const n = p ? Number(p.dataset.points || 0) : 0; return n >= 2 ? n : null; })()",
    );
    // The line is really drawn: the canvas holds pixels in the series colour.
    b.wait_for(
        "the ac_power line drawn on the canvas",
        Duration::from_secs(10),
        "(() => { const c = document.querySelector('.chart[data-field=\"ac_power\"] canvas'); if (!c) return null; \
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
           const acc = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim(); \
           const m = acc.match(/^#(..)(..)(..)$/); const [r, g, bl] = m.slice(1).map(x => parseInt(x, 16)); \
           let n = 0; for (let i = 0; i < d.length; i += 4) \
             if (d[i+3] > 200 && Math.abs(d[i]-r) < 40 && Math.abs(d[i+1]-g) < 40 && Math.abs(d[i+2]-bl) < 40) n++; \
           return n > 50 ? n : null; })()",
    );
    let first = first.as_u64().unwrap();
    b.wait_for(
        "live points added to the chart",
        Duration::from_secs(15),
        &format!(
            "Number(document.querySelector('.chart[data-field=\"ac_power\"] .plot')?.dataset.points || 0) > {first}"
        ),
    );
    assert!(
        b.eval("document.querySelector('.chart[data-field=\"ac_power\"] h3')?.textContent.includes('(W)')")
            == true,
        "the chart names its unit"
    );
    // 100 pushes/s into one chart for 3 s: redraws are batched per animation frame (never more
    // redraws than frames) and no point is lost. Frame timing is printed, not asserted.
    let r = b.eval(
        "(async () => { \
           const { TimeChart, ChartGroup } = await import('/ui/js/chart.js'); \
           const box = document.createElement('div'); box.style.width = '600px'; \
           document.querySelector('main').append(box); \
           const g = new ChartGroup('bench'); const c = new TimeChart(box, { label: 'bench', unit: 'W' }); \
           g.add(c); await c.init(); \
           let draws = 0; const orig = c.u.setData.bind(c.u); c.u.setData = (...a) => { draws++; return orig(...a); }; \
           const frames = []; let run = true; \
           const loop = (t) => { frames.push(t); if (run) requestAnimationFrame(loop); }; requestAnimationFrame(loop); \
           const t0 = performance.now(); let pushes = 0; const base = Date.now(); \
           await new Promise(res => { const iv = setInterval(() => { \
             for (let k = 0; k < 2; k++) { c.push(base + pushes * 10, Math.sin(pushes / 10)); pushes++; } \
             if (performance.now() - t0 > 3000) { clearInterval(iv); res(); } }, 20); }); \
           await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); run = false; \
           const gaps = frames.slice(1).map((t, i) => t - frames[i]).sort((a, b) => a - b); \
           const out = { pushes, draws, frames: frames.length, points: Number(box.dataset.points), \
             p50_frame_ms: gaps[gaps.length >> 1], max_frame_ms: gaps[gaps.length - 1] }; \
           c.destroy(); box.remove(); return out; })()",
    );
    eprintln!("chart at 100 updates/s for 3 s: {r}");
    assert_eq!(r["points"], r["pushes"], "every pushed point is kept: {r}");
    assert!(
        r["draws"].as_u64().unwrap() <= r["frames"].as_u64().unwrap(),
        "more redraws than frames: {r}"
    );

    // Zoom by keyboard on the charts: the group's label says it is zoomed.
    b.eval("document.querySelector('.charts').dispatchEvent(new KeyboardEvent('keydown', {key: '+', bubbles: true})); true");
    b.wait_for(
        "zoomed state after +",
        Duration::from_secs(5),
        "document.body.textContent.includes('zoomed:')",
    );

    // The quarantine page shows the refused payload with its reason.
    b.eval("location.hash = '#/quarantine'; true");
    b.wait_for(
        "the quarantined payload on its page",
        Duration::from_secs(10),
        "(() => { const t = document.querySelector('main table')?.textContent || ''; \
           return t.includes('devices/x/y/telemetry') && t.includes('not a payload'); })()",
    );

    // Every page draws its heading, and none logs an error.
    for (hash, title) in PAGES {
        open_page(&mut b, hash, title, "");
        if hash == "#/" {
            b.wait_for(
                "values with units on the revisited fleet page",
                Duration::from_secs(10),
                "(document.querySelector('#fleet-table')?.textContent || '').includes('°C')",
            );
        }
        b.pump(Duration::from_millis(700));
        let name = if hash == "#/" {
            "fleet".to_string()
        } else {
            hash.trim_start_matches("#/").replace('/', "-")
        };
        b.screenshot(&shots().join(format!("{name}.png")));
        assert!(!h1(&mut b).is_empty());
    }
    // Pages whose API is not on this server say so instead of showing data.
    b.eval("location.hash = '#/anomalies'; true");
    b.wait_for(
        "the anomaly page's availability state",
        Duration::from_secs(10),
        "document.querySelector('[data-unavailable]') !== null || document.querySelector('main table') !== null",
    );

    // Dark theme and a phone-width screen, for the screenshots.
    b.eval("location.hash = '#/device/temperature_sensor_1'; document.getElementById('theme').click(); true");
    b.wait_for(
        "dark theme",
        Duration::from_secs(5),
        "document.documentElement.dataset.theme === 'dark'",
    );
    screenshot_when(
        &mut b,
        "temperature chart",
        "Number(document.querySelector('.chart .plot')?.dataset.points || 0) >= 2",
        "device-dark.png",
    );
    b.viewport(390, 844);
    b.eval("location.hash = '#/'; true");
    screenshot_when(
        &mut b,
        "fleet at phone width",
        "document.querySelectorAll('#fleet-table tbody a').length >= 3",
        "fleet-phone.png",
    );

    live_feed_reconnects_over_a_real_websocket(&mut b);
    device_control_and_fault_annotation(&mut b, &f);

    let problems = b.console_problems();
    assert!(problems.is_empty(), "console errors: {problems:#?}");
    eprintln!("screenshots in {}", shots().display());
}

/// fieldlab's `/ws` is not on this branch yet, so the client's WebSocket path is exercised
/// against a small real WebSocket server speaking the brief's payload shape: the first
/// connection sends 10 messages and closes, the second streams until the test is done. The
/// client must go live, parse every message, fall back to polling while disconnected, and
/// reconnect by itself.
fn live_feed_reconnects_over_a_real_websocket(b: &mut Browser) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = Arc::new(AtomicBool::new(false));
    let conns = Arc::new(AtomicUsize::new(0));
    let (d, c) = (done.clone(), conns.clone());
    let server = std::thread::spawn(move || {
        let mut seq = 0u64;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if d.load(Ordering::SeqCst) {
                return;
            }
            let n = c.fetch_add(1, Ordering::SeqCst);
            let Ok(mut ws) = tungstenite::accept(stream) else {
                continue;
            };
            let mut sent = 0;
            while !d.load(Ordering::SeqCst) && (n > 0 || sent < 10) {
                seq += 1;
                let msg = serde_json::json!({
                    "device_id": "ws_probe_1", "device_type": "TemperatureSensor", "seq": seq,
                    "ts": "2026-01-01T00:00:00.000Z", "data": {"temperature": 20.0 + seq as f64 / 10.0},
                    "status": "operational"
                });
                if ws
                    .send(tungstenite::Message::text(msg.to_string()))
                    .is_err()
                {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = ws.close(None);
            let _ = ws.flush();
            if n > 0 {
                return;
            }
        }
    });
    b.eval(&format!(
        "(async () => {{ const {{ LiveFeed }} = await import('/ui/js/live.js'); \
           const f = new LiveFeed({{ wsPath: 'ws://127.0.0.1:{port}/ws', probe: async () => true }}); \
           window.__t = {{ modes: [], msgs: [] }}; window.__feed = f; \
           f.on('mode', m => __t.modes.push(m)); f.on('telemetry', m => __t.msgs.push(m)); \
           await f.start(); return true; }})()"
    ));
    let t = b.wait_for(
        "live, fallback to polling, and live again after the server closed",
        Duration::from_secs(15),
        "(() => { const m = __t.modes.join(','); \
           return /live.*polling.*live/.test(m) && __t.msgs.length >= 15 ? __t : null; })()",
    );
    b.eval("__feed.stop(); true");
    done.store(true, Ordering::SeqCst);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    server.join().unwrap();
    let msgs = t["msgs"].as_array().unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(msgs[0]["data"]["temperature"], 20.1);
    assert_eq!(conns.load(Ordering::SeqCst), 2, "reconnected once");
}

/// Start/stop and fault injection from the device page, and the fault's annotation on the
/// chart. Runs when the server has the emulator's control API (issue 3); until that is merged
/// the page shows "not available" (checked above) and this says it did not run.
fn device_control_and_fault_annotation(b: &mut Browser, f: &Fieldlab) {
    let (_, probe) = f.get(
        "/api/v1/ui/endpoints?path=/api/v1/devices/x/stop&path=/api/v1/devices/x/faults&path=/api/v1/annotations",
    );
    if !probe
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with('/'))
        .all(|(_, v)| v["available"] == true)
    {
        eprintln!("device control not exercised: this server has no emulator control API yet");
        return;
    }
    b.viewport(1280, 800);
    b.eval("location.hash = '#/device/temperature_sensor_1'; true");
    let status = |b: &mut Browser, text: &str| {
        b.wait_for(
            &format!("status `{text}`"),
            Duration::from_secs(10),
            &format!(
                "document.querySelector('main [role=status]')?.textContent.includes({text:?})"
            ),
        );
    };
    click_button(b, "Stop");
    status(b, "Stop: done");
    b.wait_for(
        "state stopped",
        Duration::from_secs(10),
        "document.querySelector('main h1')?.textContent.includes('stopped')",
    );
    click_button(b, "Start");
    status(b, "Start: done");
    b.wait_for(
        "state running",
        Duration::from_secs(10),
        "document.querySelector('main h1')?.textContent.includes('running')",
    );
    b.eval(
        "(() => { const s = document.querySelector('select[aria-label=\"Fault kind\"]'); s.value = 'spike'; \
           document.querySelector('select[aria-label=\"Field\"]').value = 'temperature'; \
           document.querySelector('input[aria-label=\"Duration in seconds\"]').value = '5'; \
           document.querySelector('input[aria-label^=\"Magnitude\"]').value = '30'; return true; })()",
    );
    click_button(b, "Inject fault");
    status(b, "Inject fault: done");
    b.wait_for(
        "the fault's annotation on the temperature chart and in the list",
        Duration::from_secs(15),
        "Number(document.querySelector('.chart[data-field=\"temperature\"] .plot')?.dataset.annotations || 0) >= 1 \
           && document.querySelector('main')?.textContent.includes('Injected faults')",
    );
    b.screenshot(&shots().join("device-fault.png"));
}

fn post_json(
    f: &Fieldlab,
    token: Option<&str>,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let c = reqwest::blocking::Client::new();
    let mut r = c.post(f.url(path)).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or_default())
}

/// Run `fieldlab <args>` in `dir`; its exit code and output.
fn run(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let out = fieldlab_in(dir, args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A signed proof bundle built by `fieldlab cap` from the example data, and a copy with one
/// bit flipped.
fn bundles(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cap = |args: &[&str]| {
        let all = [&["cap"], args].concat();
        let (c, out) = run(dir, &all, None);
        assert_eq!(c, 0, "fieldlab {all:?}: {out}");
    };
    cap_build_proof(&cap_example("ubos.csv"), cap);
    cap(&["keys", "keygen", "--name", "exporter"]);
    cap(&[
        "proof", "export", "--dir", "w", "--key", "exporter", "--out", "b.zip",
    ]);
    let good = dir.join("b.zip");
    let mut z = std::fs::read(&good).unwrap();
    let n = z.len();
    z[n / 3] ^= 0x04;
    let bad = dir.join("tampered.zip");
    std::fs::write(&bad, &z).unwrap();
    (good, bad)
}

/// Pages at phone width: each draws, scrolls only vertically, and gets a screenshot.
fn every_page_at_phone_width(b: &mut Browser) {
    b.viewport(390, 844);
    for (hash, title) in PAGES {
        open_page(b, hash, title, " at 390 px");
        b.pump(Duration::from_millis(400));
        let (sw, w) = {
            let v = b.eval("[document.documentElement.scrollWidth, window.innerWidth]");
            (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
        };
        assert!(sw <= w, "{hash} scrolls sideways at 390 px: {sw} > {w}");
        let name = if hash == "#/" {
            "fleet".to_string()
        } else {
            hash.trim_start_matches("#/").replace('/', "-")
        };
        b.screenshot(&shots().join(format!("{name}-phone.png")));
    }
    b.viewport(1280, 800);
}

/// The anomaly feed, the quality report, the rate-limit page and proof verification, each with
/// data the running fieldlab produced in this test: an injected spike the detector scored, an
/// injected duplicate fault the quality rules flagged, rate-limit checks, and a bundle built
/// by `fieldlab cap` (and a tampered copy) verified by drag and drop and by file upload.
#[test]
fn anomaly_quality_ratelimit_and_verify_pages_show_real_data() {
    let dir = tempfile::tempdir().unwrap();
    // A short robust z-score on the sensor's temperature (warm after 20 readings), and a rate
    // limit wide enough that a spike reaches the detector instead of the rate rule.
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        "detect:\n  series:\n    TemperatureSensor.temperature: \"robust_z:window=20\"\n    \
         temperature_sensor_1.temperature: \"robust_z:window=20\"\n  max_rate_per_s:\n    temperature: 1000\n",
    )
    .unwrap();
    let f = Fieldlab::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    f.wait_ready(Duration::from_secs(15));
    let (good, bad) = bundles(dir.path());
    let mut b = Browser::launch(1280, 800);
    b.navigate(&f.url("/#/quality"));

    // Quality: duplicates from pv_inverter_1 are flagged and lower its score.
    let (st, body) = post_json(
        &f,
        None,
        "/api/v1/devices/pv_inverter_1/faults",
        serde_json::json!({"kind": "duplicate", "duration_s": 8}),
    );
    assert!(st < 300, "{st} {body}");
    let row = b.wait_for(
        "pv_inverter_1 below 100 % with a duplicate violation on the quality page",
        Duration::from_secs(25),
        "(() => { const rows = [...document.querySelectorAll('main table tbody tr')].map(r => r.textContent); \
           const score = rows.find(t => t.startsWith('pv_inverter_1') && !t.includes('100 %')); \
           const ev = rows.find(t => t.includes('pv_inverter_1') && t.includes('duplicate')); \
           return score && ev ? [score, ev] : null; })()",
    );
    eprintln!("quality: {row}");
    b.screenshot(&shots().join("quality-duplicates.png"));

    // Anomalies: spikes on the warm sensor show up in the feed with detector and score.
    b.eval("location.hash = '#/anomalies'; true");
    let mut found = serde_json::Value::Null;
    for _ in 0..12 {
        let (st, body) = post_json(
            &f,
            None,
            "/api/v1/devices/temperature_sensor_1/faults",
            serde_json::json!({"kind": "spike", "field": "temperature", "magnitude": 30}),
        );
        assert!(st < 300, "{st} {body}");
        b.pump(Duration::from_secs(3));
        found = b.eval(
            "(() => { const r = [...document.querySelectorAll('main table tbody tr')].map(r => [...r.cells].map(c => c.textContent)) \
               .find(c => c[1] === 'temperature_sensor_1' && c[2] === 'temperature'); return r || null; })()",
        );
        if !found.is_null() {
            break;
        }
    }
    assert!(
        !found.is_null(),
        "no anomaly row after injected spikes; API: {:?}",
        f.get("/api/v1/anomalies").1
    );
    let cells: Vec<String> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_ne!(cells[0], "—", "the anomaly has a time: {cells:?}");
    assert!(cells[3].contains("°C"), "value with unit: {cells:?}");
    assert!(
        cells[4].parse::<f64>().is_ok()
            && (cells[5].starts_with("robust_z") || cells[5] == "gross_outlier"),
        "{cells:?}"
    );
    b.screenshot(&shots().join("anomalies-spike.png"));

    // Rate limits: the policies, and decisions counted live as checks arrive.
    for _ in 0..3 {
        post_json(
            &f,
            None,
            "/api/v1/ratelimit/check",
            serde_json::json!({"key": "ui-test"}),
        );
    }
    b.eval("location.hash = '#/ratelimit'; true");
    let allowed = |b: &mut Browser| -> u64 {
        b.wait_for(
            "the default policy and its decisions",
            Duration::from_secs(10),
            "(() => { const t = [...document.querySelectorAll('main table')]; if (t.length < 2) return null; \
               const pol = [...t[0].querySelectorAll('tbody tr')].find(r => r.cells[1]?.textContent === 'default'); \
               const dec = [...t[1].querySelectorAll('tbody tr')].find(r => r.cells[0]?.textContent === 'default'); \
               if (!pol || !/\\d+ \\/ /.test(pol.cells[2].textContent) || !dec) return null; \
               return Number(dec.cells[1].textContent.replace(/\\D/g, '')); })()",
        )
        .as_u64()
        .unwrap()
    };
    let before = allowed(&mut b);
    assert!(before >= 3, "{before}");
    for _ in 0..4 {
        post_json(
            &f,
            None,
            "/api/v1/ratelimit/check",
            serde_json::json!({"key": "ui-test"}),
        );
    }
    b.wait_for(
        "decisions counted after more checks",
        Duration::from_secs(15),
        &format!(
            "(() => {{ const t = document.querySelectorAll('main table')[1]; \
               const r = [...(t?.querySelectorAll('tbody tr') || [])].find(r => r.cells[0]?.textContent === 'default'); \
               return r && Number(r.cells[1].textContent.replace(/\\D/g, '')) >= {}; }})()",
            before + 4
        ),
    );
    b.screenshot(&shots().join("ratelimit-decisions.png"));

    // Verify: the good bundle dropped on the drop zone is OK with every check passed.
    use base64::Engine;
    let b64 =
        |p: &PathBuf| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
    b.eval("location.hash = '#/verify'; true");
    b.wait_for(
        "the drop zone",
        Duration::from_secs(10),
        "!!document.querySelector('main .drop')",
    );
    b.eval(&format!(
        "(() => {{ const bytes = Uint8Array.from(atob('{}'), c => c.charCodeAt(0)); \
           const dt = new DataTransfer(); dt.items.add(new File([bytes], 'b.zip', {{ type: 'application/zip' }})); \
           const d = document.querySelector('main .drop'); \
           d.dispatchEvent(new DragEvent('dragover', {{ dataTransfer: dt, bubbles: true, cancelable: true }})); \
           d.dispatchEvent(new DragEvent('drop', {{ dataTransfer: dt, bubbles: true, cancelable: true }})); return true; }})()",
        b64(&good)
    ));
    let ok = b.wait_for(
        "OK with every check passed",
        Duration::from_secs(10),
        "(() => { const s = document.querySelector('main [data-verdict]'); if (!s) return null; \
           const li = [...s.querySelectorAll('li')]; \
           return { verdict: s.dataset.verdict, states: li.map(l => l.dataset.state), names: li.map(l => l.textContent) }; })()",
    );
    assert_eq!(ok["verdict"], "OK", "{ok}");
    let states = ok["states"].as_array().unwrap();
    let names = ok["names"].to_string();
    assert!(
        states.len() >= 8 && states.iter().all(|s| s == "pass"),
        "{ok}"
    );
    for want in [
        "Signature",
        "SHA-256 and size of manifest.json",
        "proof.json",
        "Rule ",
    ] {
        assert!(names.contains(want), "check `{want}` not shown: {names}");
    }
    b.screenshot(&shots().join("verify-ok.png"));
    // The tampered copy chosen with the file input: FAIL, the reason, and the failing check.
    let doc = b.call("DOM.getDocument", serde_json::json!({}));
    let node = b.call(
        "DOM.querySelector",
        serde_json::json!({"nodeId": doc["root"]["nodeId"], "selector": "#bundle-file"}),
    );
    b.call(
        "DOM.setFileInputFiles",
        serde_json::json!({"nodeId": node["nodeId"], "files": [bad.display().to_string()]}),
    );
    let fail = b.wait_for(
        "FAIL with its reason",
        Duration::from_secs(10),
        "(() => { const s = document.querySelector('main [data-verdict=FAIL]'); if (!s) return null; \
           return { reason: s.querySelector('.reason')?.textContent, \
             failed: [...s.querySelectorAll('li[data-state=fail]')].map(l => l.textContent), \
             title: s.querySelector('h2').textContent }; })()",
    );
    assert!(
        fail["title"].as_str().unwrap().contains("tampered.zip"),
        "{fail}"
    );
    assert!(
        fail["reason"].as_str().unwrap_or("").len() > "Reason: ".len() + 5,
        "{fail}"
    );
    assert_eq!(
        fail["failed"].as_array().unwrap().len(),
        1,
        "exactly one failing check: {fail}"
    );
    b.screenshot(&shots().join("verify-fail.png"));

    every_page_at_phone_width(&mut b);
    let problems = b.console_problems();
    assert!(problems.is_empty(), "console errors: {problems:#?}");
}

/// Sign in through the form from the keyboard alone: focus the user field, type, Tab, type,
/// Enter.
fn sign_in(b: &mut Browser, user: &str, role: &str) {
    b.eval("sessionStorage.removeItem('fieldlab.token'); window.dispatchEvent(new Event('fieldlab:session')); location.hash = '#/signin'; true");
    b.wait_for(
        "the sign-in form",
        Duration::from_secs(10),
        "(() => { const u = document.getElementById('signin-user'); if (!u) return null; \
           u.value = ''; document.getElementById('signin-pass').value = ''; u.focus(); return true; })()",
    );
    b.call("Input.insertText", serde_json::json!({"text": user}));
    b.press("Tab");
    b.call(
        "Input.insertText",
        serde_json::json!({"text": "correct horse battery"}),
    );
    b.press("Enter");
    b.wait_for(
        &format!("signed in as {user}"),
        Duration::from_secs(10),
        &format!("document.getElementById('account')?.textContent === '{user} ({role})' && location.hash !== '#/signin'"),
    );
}

/// Go to the page `hash` and wait for its heading `title`; `shown` says how, for the message.
fn open_page(b: &mut Browser, hash: &str, title: &str, shown: &str) {
    b.eval(&format!("location.hash = '{hash}'; true"));
    b.wait_for(
        &format!("heading `{title}` on {hash}{shown}"),
        Duration::from_secs(10),
        &format!("(document.querySelector('main h1')?.textContent || '').startsWith({title:?})"),
    );
}

/// The device ids the fleet table links to, once it lists at least `at_least`.
fn fleet_ids(b: &mut Browser, what: &str, at_least: usize) -> serde_json::Value {
    b.wait_for(
        what,
        Duration::from_secs(15),
        &format!(
            "(() => {{ const ids = [...document.querySelectorAll('#fleet-table tbody a')].map(a => a.textContent); \
               return ids.length >= {at_least} ? ids : null; }})()"
        ),
    )
}

/// Once `ready` holds (within 10 s) and the page has settled, a screenshot named `name`.
fn screenshot_when(b: &mut Browser, what: &str, ready: &str, name: &str) {
    b.wait_for(what, Duration::from_secs(10), ready);
    b.pump(Duration::from_millis(500));
    b.screenshot(&shots().join(name));
}

fn click_button(b: &mut Browser, label: &str) {
    b.wait_for(
        &format!("button {label}"),
        Duration::from_secs(10),
        &format!(
            "(() => {{ const x = [...document.querySelectorAll('main button')].find(x => x.textContent === {label:?}); \
               if (!x) return null; x.click(); return true; }})()"
        ),
    );
}

fn status_text(b: &mut Browser, what: &str, contains: &str) -> String {
    b.wait_for(
        what,
        Duration::from_secs(10),
        &format!(
            "(() => {{ const t = [...document.querySelectorAll('main [role=status]')].map(s => s.textContent).find(t => t.includes({contains:?})); \
               return t || null; }})()"
        ),
    )
    .as_str()
    .unwrap()
    .to_string()
}

/// Auth on: the UI asks for sign-in before anything else, a student sees the fleet but is
/// refused (with the server's reason) when stopping a device, starting a lesson or reading the
/// rate-limit configuration; a teacher runs a lesson end to end (inject, find, reveal what
/// the rules saw next to the ground truth) and may stop a device; an admin sees the policies.
#[test]
fn sign_in_roles_and_a_lesson_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (name, role) in [("ada", "admin"), ("tess", "teacher"), ("stu", "student")] {
        let (c, out) = run(
            dir.path(),
            &[
                "users",
                "add",
                name,
                "--role",
                role,
                "--password-stdin",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            Some("correct horse battery\n"),
        );
        assert_eq!(c, 0, "{out}");
    }
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(&cfg, "auth:\n  enabled: true\n").unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(20));
    let mut b = Browser::launch(1280, 800);

    // No token: straight to sign-in, no API request made (so no 401 in the console).
    b.navigate(&f.url("/#/device/temperature_sensor_1"));
    b.wait_for(
        "the sign-in page first",
        Duration::from_secs(10),
        "location.hash === '#/signin' && !!document.getElementById('signin-user')",
    );
    b.pump(Duration::from_millis(500));
    assert!(
        b.console_problems().is_empty(),
        "{:#?}",
        b.console_problems()
    );
    b.screenshot(&shots().join("signin-auth.png"));
    // A wrong password is refused with the server's words.
    b.eval("document.getElementById('signin-user').value = 'stu'; document.getElementById('signin-pass').value = 'nope'; \
            document.querySelector('main form button[type=submit]').click(); true");
    b.wait_for(
        "the refusal of a wrong password",
        Duration::from_secs(10),
        "document.querySelector('main [role=alert]')?.textContent.includes('wrong password')",
    );

    // Student: after sign-in, back where they wanted to go, with live data over /ws.
    sign_in(&mut b, "stu", "student");
    b.wait_for(
        "the device page with its chart after sign-in",
        Duration::from_secs(15),
        "location.hash === '#/device/temperature_sensor_1' && Number(document.querySelector('.chart .plot')?.dataset.points || 0) >= 2",
    );
    b.wait_for(
        "the live feed over /ws with the token",
        Duration::from_secs(15),
        "document.getElementById('live-status')?.textContent.includes('live')",
    );
    click_button(&mut b, "Stop");
    let refused = status_text(&mut b, "the refusal to stop", "Stop refused");
    assert!(
        refused.contains("teacher") && refused.contains("stu"),
        "{refused}"
    );
    assert!(b.eval("document.querySelector('main h1').textContent.includes('running')") == true);
    b.screenshot(&shots().join("device-student-refused.png"));
    b.eval("location.hash = '#/ratelimit'; true");
    b.wait_for(
        "the rate-limit page refusing the configuration but showing decisions",
        Duration::from_secs(10),
        "(() => { const t = document.querySelector('main')?.textContent || ''; \
           return t.includes('Only admins may read the rate-limit configuration') && t.includes('Decisions since start'); })()",
    );
    b.eval("location.hash = '#/lessons/unit-switch'; true");
    click_button(&mut b, "Start the lesson");
    status_text(&mut b, "the lesson refused for a student", "Only a teacher");

    // Teacher: runs the lesson end to end.
    sign_in(&mut b, "tess", "teacher");
    b.eval("location.hash = '#/lessons/unit-switch'; true");
    click_button(&mut b, "Start the lesson");
    status_text(&mut b, "the lesson started", "Started at");
    // The student's part: find it in the chart (the fault's annotation is on it).
    b.eval("location.hash = '#/device/temperature_sensor_1'; true");
    b.wait_for(
        "the unit switch annotated on the temperature chart",
        Duration::from_secs(15),
        "Number(document.querySelector('.chart[data-field=\"temperature\"] .plot')?.dataset.annotations || 0) >= 1",
    );
    b.eval("location.hash = '#/lessons/unit-switch'; true");
    let mut revealed = serde_json::Value::Null;
    for _ in 0..20 {
        click_button(&mut b, "Show what the rules saw");
        b.pump(Duration::from_millis(1000));
        revealed = b.eval(
            "(() => { const sec = [...document.querySelectorAll('main h3')]; \
               const after = (title) => { const h = sec.find(x => x.textContent.startsWith(title)); \
                 let n = h?.nextElementSibling; while (n && !n.querySelector?.('table') && n.tagName !== 'TABLE') n = n.nextElementSibling; \
                 return n ? [...n.querySelectorAll('tbody tr')].map(r => r.textContent) : []; }; \
               const truth = after('Ground truth'), rules = after('Quality rules'); \
               return truth.some(t => t.includes('unit_switch')) && rules.some(t => !t.includes('No rule fired')) \
                 ? { truth, rules, detectors: after('Detector events') } : null; })()",
        );
        if !revealed.is_null() {
            break;
        }
    }
    assert!(
        !revealed.is_null(),
        "the reveal never showed the truth and a rule's finding"
    );
    eprintln!("lesson reveal: {revealed}");
    b.screenshot(&shots().join("lesson-revealed.png"));
    // A teacher may stop a device.
    b.eval("location.hash = '#/device/pressure_valve_1'; true");
    click_button(&mut b, "Stop");
    status_text(&mut b, "a teacher stopping a device", "Stop: done");
    click_button(&mut b, "Start");
    status_text(&mut b, "and starting it again", "Start: done");

    // Admin: the rate-limit policies.
    sign_in(&mut b, "ada", "admin");
    b.eval("location.hash = '#/ratelimit'; true");
    b.wait_for(
        "the policies for an admin",
        Duration::from_secs(10),
        "[...document.querySelectorAll('main table tbody tr')].some(r => r.cells[1]?.textContent === 'default')",
    );
    // The only console lines: the refusals this test provoked on purpose (a wrong password,
    // and the student's three forbidden requests).
    let problems: Vec<String> = b
        .console_problems()
        .into_iter()
        .filter(|p| !(p.contains("status of 401") || p.contains("status of 403")))
        .collect();
    assert!(problems.is_empty(), "console errors: {problems:#?}");
}

/// A newcomer's first five minutes on a fresh `fieldlab up` with nothing configured: the
/// dashboard lists the whole default fleet, every station of the floor map is live, nothing is
/// reported on clean data, a +12 °C spike injected from the device page 80 s after start shows
/// on the anomaly page within 15 s (the gross outlier check, while the detectors still warm
/// up), and the same value's broken rate rule on the quality page.
#[test]
fn a_newcomers_first_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let f = Fieldlab::start(dir.path(), &[]);
    f.wait_ready(Duration::from_secs(15));
    let mut b = Browser::launch(1280, 800);
    b.navigate(&f.url("/"));

    // The fleet page: the three demo devices and one of each lab station's type.
    let listed = fleet_ids(&mut b, "the default fleet in the fleet table", 9);
    assert_eq!(listed.as_array().unwrap().len(), 9, "{listed}");

    // The floor map: all seven stations have a device that is sending values.
    b.eval("location.hash = '#/map'; true");
    let live = b.wait_for(
        "every floor-map station live",
        Duration::from_secs(20),
        "(() => { const st = [...document.querySelectorAll('svg .map-station')]; \
           const live = st.filter(g => g.classList.contains('has-device') && !g.classList.contains('silent') \
             && g.querySelector('text.value')); \
           return st.length === 7 && live.length === 7 ? live.map(g => g.getAttribute('data-type')) : null; })()",
    );
    eprintln!("live stations: {live}");
    b.screenshot(&shots().join("newcomer-map.png"));

    // The device page of the temperature sensor, its chart drawing.
    b.eval("location.hash = '#/device/temperature_sensor_1'; true");
    b.wait_for(
        "the temperature chart",
        Duration::from_secs(15),
        "document.querySelector('.chart[data-field=\"temperature\"] .plot') ? true : null",
    );
    // The fault form offers every kind the emulator injects (its list, from the server).
    let kinds = b.wait_for(
        "the fault form's kinds",
        Duration::from_secs(10),
        "(() => { const o = [...document.querySelectorAll('select[aria-label=\"Fault kind\"] option')]; \
           return o.length ? o.map(x => x.value) : null; })()",
    );
    let want: Vec<&str> = fieldlab_emulator::fault::FaultKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, serde_json::json!(want));
    // 80 s after start, inject the spike from the page's fault form.
    let at = Duration::from_secs(80);
    while started.elapsed() < at {
        b.pump(Duration::from_millis(500));
    }
    let (_, before) = f.get("/api/v1/anomalies");
    assert_eq!(
        before["count"], 0,
        "clean demo data raised anomalies: {before}"
    );
    b.eval(
        "(() => { document.querySelector('select[aria-label=\"Fault kind\"]').value = 'spike'; \
           document.querySelector('select[aria-label=\"Field\"]').value = 'temperature'; \
           document.querySelector('input[aria-label=\"Duration in seconds\"]').value = '2'; \
           document.querySelector('input[aria-label^=\"Magnitude\"]').value = '12'; return true; })()",
    );
    click_button(&mut b, "Inject fault");
    let injected = std::time::Instant::now();
    status_text(&mut b, "the injection's status", "Inject fault: done");

    // The anomaly page shows it within 15 s, with both verdicts on the value.
    b.eval("location.hash = '#/anomalies'; true");
    let row = b.wait_for(
        "the spike on the anomaly page",
        Duration::from_secs(15),
        "(() => { const r = [...document.querySelectorAll('main table tbody tr')].map(r => [...r.cells].map(c => c.textContent)) \
           .find(c => c[1] === 'temperature_sensor_1' && c[2] === 'temperature'); return r || null; })()",
    );
    let seen_after = injected.elapsed();
    eprintln!("anomaly row {row} {seen_after:?} after the injection");
    assert!(seen_after <= Duration::from_secs(15), "{seen_after:?}");
    let cells: Vec<&str> = row
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let value: f64 = cells[3]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();
    assert!(value > 30.0, "the spiked value: {cells:?}");
    assert!(
        cells[6].contains("rate"),
        "the quality verdict beside it: {cells:?}"
    );
    assert_eq!(
        cells[5], "gross_outlier",
        "caught by the gross check: {cells:?}"
    );
    b.screenshot(&shots().join("newcomer-anomaly.png"));

    // The quality page: the same value broke the temperature's rate rule.
    b.eval("location.hash = '#/quality'; true");
    let q = b.wait_for(
        "the spike's rate violation on the quality page",
        Duration::from_secs(15),
        "(() => { const rows = [...document.querySelectorAll('main table tbody tr')].map(r => r.textContent); \
           return rows.find(t => t.includes('temperature_sensor_1') && t.includes('rate')) || null; })()",
    );
    eprintln!("quality: {q}");
    // Only the injected fault was reported: no other device raised anything.
    let (_, all) = f.get("/api/v1/anomalies");
    let others: Vec<&serde_json::Value> = all["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["device_id"] != "temperature_sensor_1")
        .collect();
    assert!(others.is_empty(), "false alarms on clean data: {others:?}");
    b.screenshot(&shots().join("newcomer-quality.png"));

    // Every stored reading carries its verdict: the spike's row in a raw query and in a CSV
    // export has its quality rules and its anomaly score; the clean rows around it have none.
    let spike = all["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["device_id"] == "temperature_sensor_1" && a["field"] == "temperature")
        .expect("the spike's anomaly event")
        .clone();
    let ts = spike["ts_ms"].as_i64().unwrap();
    let sel = "device_id=temperature_sensor_1&field=temperature&with=quality,anomaly";
    let (st, q) = f.get(&format!("/api/v1/query?{sel}&from={ts}&to={ts}"));
    assert_eq!(st, 200, "{q}");
    let row = &q["series"][0]["points"][0];
    assert!(
        row["quality"].as_str().is_some_and(|r| r.contains("rate")),
        "the spike's quality verdict: {q}"
    );
    assert!(
        row["anomaly"].as_f64().is_some_and(|s| s >= 0.9),
        "the spike's anomaly score: {q}"
    );
    let (_, q) = f.get(&format!("/api/v1/query?{sel}&from=-10m"));
    let points = q["series"][0]["points"].as_array().unwrap().clone();
    let clean = points
        .iter()
        .filter(|p| p["quality"].is_null() && p["anomaly"].as_f64().is_some_and(|s| s < 0.9))
        .count();
    assert!(
        points.len() > 30 && clean >= points.len() - 3,
        "most readings are clean and scored: {clean} of {}: {q}",
        points.len()
    );
    let (st, csv) = f.text(&format!(
        "/api/v1/export?format=csv&{sel}&from={}&to={}",
        ts - 60_000,
        ts + 1
    ));
    assert_eq!(st, 200, "{csv}");
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.ends_with("value,quality,anomaly"), "{header}");
    let last = csv.lines().last().unwrap();
    assert!(last.contains("rate"), "the spike's CSV row: {last}");
    let problems = b.console_problems();
    assert!(problems.is_empty(), "console: {problems:#?}");
}
