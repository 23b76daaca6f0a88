//! No false alarms on clean emulated data: every built-in device type runs through the live
//! lab's quality rules and detectors (the default `detect` config, as `fieldlab up` builds it)
//! with the emulator's own generators on a fast clock, and nothing may be reported.

use fieldlab_core::reading::Reading;
use fieldlab_emulator::DeviceSettings;
use fieldlab_watch::DetectConfig;
use fieldlab_watch::{Event, Watch};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// 2026-01-01T00:00:00Z.
const MIDNIGHT: i64 = 1_767_225_600_000;

/// Every event the live watch raises on `hours` of one clean device of type `ty`, reading
/// every `step_s` seconds, starting at `start_ms`.
fn events(ty: &str, start_ms: i64, hours: f64, step_s: f64, seed: u64) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let w = Watch::open(
        dir.path(),
        crate::watch::watch_config(&DetectConfig::default()).unwrap(),
    )
    .unwrap();
    let mut m = fieldlab_emulator::model::build(ty, &DeviceSettings::default()).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = (hours * 3600.0 / step_s) as u64;
    let mut out = Vec::new();
    for i in 0..n {
        let t = start_ms + (i as f64 * step_s * 1000.0) as i64;
        let fields =
            fieldlab_emulator::model::sample(m.as_mut(), t, step_s, &BTreeMap::new(), &mut rng);
        let r = Reading {
            device_id: "d1".into(),
            device_type: ty.into(),
            ts_ms: t,
            seq: Some(i),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            units: Default::default(),
            tags: Default::default(),
            status: None,
        };
        out.extend(w.observe(&r, t));
    }
    out
}

fn describe(e: &Event) -> String {
    match e {
        Event::Quality(q) => format!(
            "quality {} {:?} at {}: {}",
            q.rule,
            q.field,
            (q.ts_ms - MIDNIGHT) / 1000,
            q.reason
        ),
        Event::Anomaly(a) => format!(
            "anomaly {} {} = {} at {} (score {:.3})",
            a.detector,
            a.field,
            a.value,
            (a.ts_ms - MIDNIGHT) / 1000,
            a.score
        ),
    }
}

#[test]
fn the_default_fleet_raises_nothing_in_its_first_ten_minutes() {
    let mut failures = Vec::new();
    // The types of `fieldlab up`'s default fleet.
    let types: Vec<String> = fieldlab_emulator::demo_fleet()
        .into_iter()
        .map(|d| d.device_type)
        .collect();
    for ty in types.iter().map(String::as_str) {
        // A reading a second, as the lab runs it, from five times of day.
        for hour in [2, 8, 11, 12, 14] {
            for seed in 1..=4 {
                let ev = events(ty, MIDNIGHT + hour * 3_600_000, 10.0 / 60.0, 1.0, seed);
                if let Some(e) = ev.first() {
                    failures.push(format!(
                        "{ty} from {hour:02}:00, seed {seed}: {} events, first: {}",
                        ev.len(),
                        describe(e)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "false alarms on clean data:\n{}",
        failures.join("\n")
    );
}

/// Issue 24 item 3, not met yet: a whole clean day of every built-in type without an event.
/// Run it for the table: `cargo test -p fieldlab-topology clean_day -- --ignored --nocapture`.
#[test]
#[ignore = "the live ensemble still raises false alarms over a clean day (issue 24 item 3)"]
fn every_built_in_type_runs_a_clean_day_without_an_event() {
    let mut failures = Vec::new();
    for t in fieldlab_emulator::catalog() {
        if fieldlab_emulator::custom::types()
            .iter()
            .any(|c| c.name == t.name)
        {
            continue;
        }
        // The first hour as the lab runs it (a reading a second, started at 08:00), then a
        // whole day at one reading per 10 s.
        for (start, hours, step) in [(MIDNIGHT + 8 * 3_600_000, 1.0, 1.0), (MIDNIGHT, 24.0, 10.0)] {
            let ev = events(t.name, start, hours, step, 11);
            eprintln!(
                "{} ({hours} h, every {step} s): {} events",
                t.name,
                ev.len()
            );
            for e in ev.iter().take(5) {
                eprintln!("  {}", describe(e));
            }
            if !ev.is_empty() {
                failures.push(format!(
                    "{} ({hours} h every {step} s): {} events, first: {}",
                    t.name,
                    ev.len(),
                    describe(&ev[0])
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "false alarms on clean data:\n{}",
        failures.join("\n")
    );
}
