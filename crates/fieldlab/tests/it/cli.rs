//! The command line: config check points at file:line and key; the example config is valid.

use crate::common::fieldlab;
use std::process::Command;

#[test]
fn config_example_passes_config_check() {
    let (code, example, _) = fieldlab(&["config", "example"]);
    assert_eq!(code, 0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fieldlab.yaml");
    std::fs::write(&p, example).unwrap();
    let (code, out, err) = fieldlab(&["config", "check", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn config_check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    let cases: &[(&str, &str, &str)] = &[
        ("server:\n  port: 99999\n", ":2: key `server.port`", "invalid value"),
        ("logging:\n  level: loud\n", ":2: key `logging.level`", "trace, debug"),
        ("storage:\n  wal_fsync: sometimes\n", ":2: key `storage.wal_fsync`", "always, interval, never"),
        (
            "devices:\n  fleet:\n    - name: a\n      type: Toaster\n",
            ":4: key `devices.fleet[0].type`",
            "built-in types",
        ),
        (
            "devices:\n  fleet:\n    - name: a\n      type: TemperatureSensor\n      scenarios:\n        - name: hot\n          duration: 10\n          parameters:\n            pressure_range: [1, 2]\n",
            ":8: key `devices.fleet[0].scenarios[0].parameters`",
            "temperature_range",
        ),
        ("mqtt:\n  broker_url: \"localhost:1883\"\n", ":2: key `mqtt.broker_url`", "mqtt://HOST:PORT"),
        ("server:\n  host: \"abc\n", "bad.yaml:3", "unexpected end of stream"),
        ("server:\n  port: 80\n   host: x\n", ":2: key `server.port`", "expected u16"),
    ];
    for (text, at, why) in cases {
        std::fs::write(&p, text).unwrap();
        let (code, _, err) = fieldlab(&["config", "check", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(at), "expected `{at}` in: {err}");
        assert!(err.contains(why), "expected `{why}` in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn bad_env_and_flags_give_one_line_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .args(["up", "--http-port", "0", "--mqtt-port", "0"])
        .env("MAX_DEVICES", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("environment variable MAX_DEVICES"), "{err}");
    let (code, _, err) = fieldlab(&["up", "--broker", "http://x"]);
    assert_eq!(code, 1);
    assert!(err.contains("--broker"), "{err}");
}

#[test]
fn device_types_are_listed_with_units() {
    let (code, out, _) = fieldlab(&["devices", "types"]);
    assert_eq!(code, 0);
    for t in [
        "TemperatureSensor",
        "PressureValve",
        "PvInverter",
        "W/m²",
        "bar",
    ] {
        assert!(out.contains(t), "{t} missing: {out}");
    }
}
