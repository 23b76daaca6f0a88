//! The web UI in a real headless Chromium against a real `fieldlab up`: the fleet page lists
//! the demo fleet, a device page draws its history and keeps receiving points, the navigation
//! works from the keyboard alone, every page draws without a console error, and screenshots of
//! every page at 1280x800 land in `target/tmp/ui-screenshots/` for a human to look at.

mod browser;
mod common;

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
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
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
    let listed = b.wait_for(
        "the demo fleet in the fleet table",
        Duration::from_secs(15),
        "(() => { const ids = [...document.querySelectorAll('#fleet-table tbody a')].map(a => a.textContent); \
           return ids.length >= 3 ? ids : null; })()",
    );
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
    let bytes = b.eval(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')) \
           .reduce((n, e) => n + (e.transferSize || 0), 0)",
    );
    eprintln!(
        "first load of the overview: {bytes} bytes transferred, first value on screen after {:.0} ms",
        first_value_ms.as_f64().unwrap()
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
        b.eval(&format!("location.hash = '{hash}'; true"));
        b.wait_for(
            &format!("heading `{title}` on {hash}"),
            Duration::from_secs(10),
            &format!(
                "(document.querySelector('main h1')?.textContent || '').startsWith({title:?})"
            ),
        );
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
    b.wait_for(
        "temperature chart",
        Duration::from_secs(10),
        "Number(document.querySelector('.chart .plot')?.dataset.points || 0) >= 2",
    );
    b.pump(Duration::from_millis(500));
    b.screenshot(&shots().join("device-dark.png"));
    b.viewport(390, 844);
    b.eval("location.hash = '#/'; true");
    b.wait_for(
        "fleet at phone width",
        Duration::from_secs(10),
        "document.querySelectorAll('#fleet-table tbody a').length >= 3",
    );
    b.pump(Duration::from_millis(500));
    b.screenshot(&shots().join("fleet-phone.png"));

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
        .values()
        .all(|v| v["available"] == true)
    {
        eprintln!("device control not exercised: this server has no emulator control API yet");
        return;
    }
    b.eval("location.hash = '#/device/temperature_sensor_1'; true");
    let click = |b: &mut Browser, label: &str| {
        b.wait_for(
            &format!("button {label}"),
            Duration::from_secs(10),
            &format!(
                "(() => {{ const x = [...document.querySelectorAll('main button')].find(x => x.textContent === {label:?}); \
                   if (!x) return null; x.click(); return true; }})()"
            ),
        );
    };
    let status = |b: &mut Browser, text: &str| {
        b.wait_for(
            &format!("status `{text}`"),
            Duration::from_secs(10),
            &format!(
                "document.querySelector('main [role=status]')?.textContent.includes({text:?})"
            ),
        );
    };
    click(b, "Stop");
    status(b, "Stop: done");
    b.wait_for(
        "state stopped",
        Duration::from_secs(10),
        "document.querySelector('main h1')?.textContent.includes('stopped')",
    );
    click(b, "Start");
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
    click(b, "Inject fault");
    status(b, "Inject fault: done");
    b.wait_for(
        "the fault's annotation on the temperature chart and in the list",
        Duration::from_secs(15),
        "Number(document.querySelector('.chart[data-field=\"temperature\"] .plot')?.dataset.annotations || 0) >= 1 \
           && document.querySelector('main')?.textContent.includes('Injected faults')",
    );
    b.screenshot(&shots().join("device-fault.png"));
}
