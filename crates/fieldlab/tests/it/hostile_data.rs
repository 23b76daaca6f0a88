//! Hostile or careless input to backups and `/predict`, against the real binary.
//!
//! Backups with auth on (`--token`, `FIELDLAB_TOKEN`): the archive is 0600, secrets are left
//! out unless `--include-secrets` and the manifest lists them as excluded; restore refuses
//! links, FIFOs, `..` and absolute paths and files the manifest does not list, writes nothing
//! outside the target, and restores files 0600 and directories 0700. `/predict`: a window
//! below the method's minimum is a 422 naming it, rows beyond the cap a 413, too many jobs at
//! once a 429 problem, and the legacy API's own example bodies still work.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fieldlab"));
    c.args(args)
        .env_remove("FIELDLAB_TOKEN")
        .env_remove("DATA_DIR")
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run fieldlab")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn manifest(tar: &Path) -> fieldlab_store::backup::Manifest {
    fieldlab_store::backup::read_manifest(std::fs::File::open(tar).unwrap()).unwrap()
}

/// Every path under `dir` with its mode (links are not followed).
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            assert!(
                !md.file_type().is_symlink(),
                "link restored: {}",
                p.display()
            );
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, md.is_dir(), md.permissions().mode() & 0o777));
        }
    }
    out
}

fn key(data: &Path, name: &str, role: &str) -> String {
    let o = fieldlab_cmd(&["users", "key", "add", name, "--role", role], data, None);
    assert!(o.status.success(), "{}", text(&o));
    let k = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(k.starts_with("flk_"), "{k}");
    k
}

#[test]
fn backups_with_auth_on_are_private_and_leave_secrets_out_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = key(&data, "backup-bot", "admin");
    let viewer = key(&data, "dash", "viewer");
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(&cfg, "auth:\n  enabled: true\n").unwrap();
    let f = Fieldlab::start(&data, &["--config", cfg.to_str().unwrap()]);
    f.wait_ready(Duration::from_secs(30));
    assert!(data.join("auth/jwt.secret").is_file() && data.join("auth/users.json").is_file());
    let url = f.http.clone();
    let out = |name: &str| dir.path().join(name);
    let arg = |p: &PathBuf| p.to_str().unwrap().to_string();

    // No credentials: a clear refusal saying what to pass, and no file left.
    let o = run(
        &["backup", "--url", &url, "--out", &arg(&out("none.tar"))],
        &[],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("401") && t.contains("--token") && t.contains("FIELDLAB_TOKEN"),
        "{t}"
    );
    assert!(!out("none.tar").exists() && !out("none.partial").exists());
    // A role that may not take backups.
    let o = run(
        &[
            "backup",
            "--url",
            &url,
            "--token",
            &viewer,
            "--out",
            &arg(&out("v.tar")),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("403"), "{}", text(&o));
    // The data dir itself is locked while the lab runs: the message names the online way.
    let o = run(
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            &arg(&out("off.tar")),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--url") && text(&o).contains("--token"),
        "{}",
        text(&o)
    );

    // --token: the archive is 0600 whatever the umask, secrets are listed as excluded.
    let plain = out("plain.tar");
    let o = run(
        &[
            "backup",
            "--url",
            &url,
            "--token",
            &admin,
            "--out",
            &arg(&plain),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("auth/jwt.secret"), "{}", text(&o));
    assert_eq!(mode(&plain), 0o600);
    let m = manifest(&plain);
    assert!(!m.secrets_included);
    for secret in ["auth/jwt.secret", "auth/users.json"] {
        let x = m
            .excluded
            .iter()
            .find(|x| x.path == secret)
            .unwrap_or_else(|| panic!("{secret} not listed as excluded: {:?}", m.excluded));
        assert!(x.reason.contains("--include-secrets"), "{x:?}");
        assert!(
            !m.entries.iter().any(|e| e.path == secret),
            "{secret} archived"
        );
    }
    assert!(
        m.entries.iter().any(|e| e.path.starts_with("wal/")),
        "{:?}",
        m.entries
    );
    assert!(
        !m.entries.iter().any(|e| e.path.starts_with("cap/keys")),
        "signing keys archived"
    );
    if data.join("cap/registry.db").exists() {
        assert!(m.entries.iter().any(|e| e.path == "cap/registry.db"));
        assert!(!m.entries.iter().any(|e| e.path.ends_with("-wal")));
    }

    // FIELDLAB_TOKEN and --include-secrets: the secrets are in, nothing secret is excluded.
    let full = out("full.tar");
    let o = run(
        &[
            "backup",
            "--url",
            &url,
            "--include-secrets",
            "--out",
            &arg(&full),
        ],
        &[("FIELDLAB_TOKEN", &admin)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&full), 0o600);
    let m = manifest(&full);
    assert!(m.secrets_included);
    for secret in ["auth/jwt.secret", "auth/users.json"] {
        assert!(
            m.entries.iter().any(|e| e.path == secret),
            "{secret} missing"
        );
    }
    assert!(m
        .excluded
        .iter()
        .all(|x| !x.reason.contains("--include-secrets")));
    drop(f);

    // Restore: files 0600, directories 0700, the secret identical.
    let restored = out("restored");
    let o = run(
        &["restore", &arg(&full), "--data-dir", &arg(&restored)],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&restored), 0o700);
    let all = modes(&restored);
    assert!(all.len() > 3, "{all:?}");
    for (p, is_dir, m) in &all {
        assert_eq!(*m, if *is_dir { 0o700 } else { 0o600 }, "{}", p.display());
    }
    assert_eq!(
        std::fs::read(restored.join("auth/jwt.secret")).unwrap(),
        std::fs::read(data.join("auth/jwt.secret")).unwrap()
    );
    // The plain backup restores without the secrets and says so.
    let o = run(
        &[
            "restore",
            &arg(&plain),
            "--data-dir",
            &arg(&out("restored-plain")),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--include-secrets"), "{}", text(&o));
    assert!(!out("restored-plain/auth/jwt.secret").exists());
}

/// A copy of the real archive `src` with `extra` entries appended (headers written raw so
/// that `..`, absolute paths, links and FIFOs can be made), and `also_list` added to its
/// manifest's entries.
fn tamper(src: &Path, dst: &Path, extra: Vec<(tar::Header, Vec<u8>)>, also_list: &[&str]) {
    let mut ar = tar::Archive::new(std::fs::File::open(src).unwrap());
    let mut b = tar::Builder::new(std::fs::File::create(dst).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        let mut h = e.header().clone();
        if e.path_bytes().as_ref() == b"BACKUP.json" {
            let mut m: Value = serde_json::from_slice(&body).unwrap();
            for p in also_list {
                m["entries"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"path": p, "type": "file", "size": 2, "sha256": "00"}));
            }
            body = serde_json::to_vec(&m).unwrap();
            h.set_size(body.len() as u64);
            h.set_cksum();
        }
        b.append(&h, &body[..]).unwrap();
    }
    for (mut h, body) in extra {
        h.set_cksum();
        b.append(&h, &body[..]).unwrap();
    }
    b.finish().unwrap();
}

fn raw(name: &str, t: tar::EntryType, body: &[u8]) -> (tar::Header, Vec<u8>) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(t);
    h.set_size(body.len() as u64);
    h.set_mode(0o777);
    (h, body.to_vec())
}

#[test]
fn restore_refuses_links_devices_escapes_and_unlisted_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("quarantine")).unwrap();
    std::fs::write(data.join("quarantine/quarantine.jsonl"), "{}\n").unwrap();
    std::fs::create_dir_all(data.join("wal")).unwrap();
    let good = dir.path().join("good.tar");
    let o = run(
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&good), 0o600);

    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("escaped");
    let abs = format!("{}/abs.txt", work.path().display());
    let mut link = raw("evil", tar::EntryType::Symlink, b"");
    link.0.set_link_name("/etc").unwrap();
    let mut hard = raw("hard", tar::EntryType::Link, b"");
    hard.0.set_link_name("/etc/passwd").unwrap();
    // (case, entries, paths the manifest lists, what the refusal must say)
    type Case<'a> = (&'a str, Vec<(tar::Header, Vec<u8>)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        ("symlink", vec![link], vec!["evil"], "symbolic link"),
        ("hardlink", vec![hard], vec!["hard"], "hard link"),
        (
            "fifo",
            vec![raw("pipe", tar::EntryType::Fifo, b"")],
            vec!["pipe"],
            "FIFO",
        ),
        (
            "device",
            vec![raw("dev", tar::EntryType::Char, b"")],
            vec!["dev"],
            "character device",
        ),
        (
            "dotdot",
            vec![raw("../escaped/x", tar::EntryType::Regular, b"hi")],
            vec![],
            "would leave the data dir",
        ),
        (
            "dotdot-listed",
            vec![raw("../escaped/x", tar::EntryType::Regular, b"hi")],
            vec!["../escaped/x"],
            "would leave the data dir",
        ),
        (
            "absolute",
            vec![raw(&abs, tar::EntryType::Regular, b"hi")],
            vec![],
            "would leave the data dir",
        ),
        (
            "unlisted",
            vec![raw("extra.txt", tar::EntryType::Regular, b"hi")],
            vec![],
            "not listed in BACKUP.json",
        ),
    ];
    for (name, extra, listed, want) in cases {
        let tar = work.path().join(format!("{name}.tar"));
        tamper(&good, &tar, extra, &listed);
        let target = work.path().join(format!("target-{name}"));
        let o = run(
            &[
                "restore",
                tar.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ],
            &[],
        );
        assert!(!o.status.success(), "{name}: restored anyway");
        let t = text(&o);
        assert!(t.contains(want) && t.contains("refusing"), "{name}: {t}");
        assert!(!target.exists(), "{name}: the target was left behind");
        assert!(
            !outside.exists() && !Path::new(&abs).exists(),
            "{name}: wrote outside"
        );
        let left: Vec<String> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.ends_with(".tar"))
            .collect();
        assert!(left.is_empty(), "{name}: left {left:?}");
    }
    // The untampered archive restores.
    let target = work.path().join("ok");
    let o = run(
        &[
            "restore",
            good.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&target.join("quarantine/quarantine.jsonl")), 0o600);
}

fn post(c: &reqwest::blocking::Client, url: &str, body: &Value) -> (u16, String, Value) {
    status_type_json(c.post(url).json(body).send().unwrap())
}

fn rows(n: usize, features: usize) -> Value {
    json!((0..n)
        .map(|i| (0..features)
            .map(|j| ((i * 7 + j * 3) % 11) as f64)
            .collect::<Vec<f64>>())
        .collect::<Vec<_>>())
}

#[test]
fn predict_is_bounded_and_validates_windows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fieldlab.yaml");
    std::fs::write(
        &cfg,
        "detect:\n  predict:\n    max_rows: 40000\n    max_window: 500\n    max_work: 100000000\n    max_body: 4MB\n    max_concurrent_jobs: 1\n    max_jobs_kept: 4\n",
    )
    .unwrap();
    let f = Fieldlab::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = reqwest::blocking::Client::new();
    let url = f.url("/predict");
    let batch = f.url("/api/v1/predict/batch");

    // The legacy API's examples.
    let (st, _, v) = post(
        &c,
        &url,
        &json!({"data": [[1.2, 3.4, 5.6], [2.3, 4.5, 6.7]], "window_size": 30, "method": "ensemble"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["scores"].as_array().unwrap().len(), 2);
    assert!(
        v["note"]
            .as_str()
            .unwrap()
            .contains("fewer than window_size"),
        "{v}"
    );
    let (st, _, v) = post(
        &c,
        &batch,
        &json!({"data": [[[1.2, 3.4, 5.6], [2.3, 4.5, 6.7]], [[3.4, 5.6, 7.8], [4.5, 6.7, 8.9]]]}),
    );
    assert_eq!(st, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let job = eventually(Duration::from_secs(20), "the legacy batch job", || {
        let (_, j) = f.get(&format!("/predict/status/{id}"));
        (j["status"] != "pending").then_some(j)
    });
    assert_eq!(job["status"], "done", "{job}");
    let results = job["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(r.get("Ok").is_none() && r.get("Err").is_none(), "{r}");
        assert_eq!(r["result"]["scores"].as_array().unwrap().len(), 2, "{r}");
    }

    // Windows below the method's minimum: 422 naming it, on both aliases, never a 5xx.
    for (path, method, min) in [
        ("/predict", "ensemble", 3),
        ("/api/v1/predict", "robust_z", 3),
        ("/predict", "ewma", 2),
    ] {
        for w in [0, min - 1] {
            let (st, ct, v) = post(
                &c,
                &f.url(path),
                &json!({"data": rows(20, 2), "window_size": w, "method": method}),
            );
            assert_eq!(st, 422, "{path} {method} w={w}: {v}");
            assert!(ct.starts_with("application/problem+json"), "{ct}");
            assert_eq!(v["parameter"], "window_size");
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("minimum {min}")),
                "{v}"
            );
        }
    }
    let (st, _, v) = post(&c, &url, &json!({"data": rows(20, 2), "window_size": 501}));
    assert_eq!(st, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("max_window"), "{v}");
    let (st, _, v) = post(
        &c,
        &batch,
        &json!({"data": [rows(5, 2)], "window_size": 2, "method": "robust_z"}),
    );
    assert_eq!(st, 422, "{v}");

    // Rows beyond the cap (alone, and summed over a batch), and a body beyond max_body: 413.
    let (st, ct, v) = post(&c, &url, &json!({"data": rows(40001, 1), "window_size": 3}));
    assert_eq!(st, 413, "{v}");
    assert!(ct.starts_with("application/problem+json"), "{ct}");
    assert!(v["detail"].as_str().unwrap().contains("max_rows"), "{v}");
    let (st, _, v) = post(
        &c,
        &batch,
        &json!({"data": [rows(20001, 1), rows(20000, 1)], "window_size": 3}),
    );
    assert_eq!(st, 413, "{v}");
    let (st, _, v) = post(
        &c,
        &url,
        &json!({"data": rows(39000, 40), "window_size": 3}),
    );
    assert_eq!(st, 413, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("max_body"), "{v}");
    // rows x window x features beyond max_work (10000 x 500 x 21 > 100M).
    let (st, _, v) = post(
        &c,
        &url,
        &json!({"data": rows(10000, 21), "window_size": 500}),
    );
    assert_eq!(st, 413, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("max_work"), "{v}");

    // One scoring at a time: a second job while a long one runs is a 429 problem.
    // 4 x 10000 rows x 2 features x window 500 = 40M steps; then 100M, the cap.
    for features in [2, 5] {
        let heavy = json!({"data": (0..4).map(|_| rows(10000, features)).collect::<Vec<_>>(), "window_size": 500, "method": "ensemble"});
        let (st, _, v) = post(&c, &batch, &heavy);
        assert_eq!(st, 202, "{v}");
        let first = v["id"].as_str().unwrap().to_string();
        let r = c
            .post(&batch)
            .json(&json!({"data": [rows(10, 2)], "window_size": 3}))
            .send()
            .unwrap();
        let st = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let v: Value = r.json().unwrap();
        let (_, j) = f.get(&format!("/predict/status/{first}"));
        let t0 = Instant::now();
        let done = eventually(Duration::from_secs(120), "the heavy job", || {
            let (_, j) = f.get(&format!("/predict/status/{first}"));
            (j["status"] != "pending").then_some(j)
        });
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(done["results"].as_array().unwrap().len(), 4);
        if j["status"] == "pending" {
            assert_eq!(st, 429, "{v}");
            assert!(ct.starts_with("application/problem+json"), "{ct}");
            assert!(retry.is_some(), "Retry-After");
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap()
                    .contains("max_concurrent_jobs"),
                "{v}"
            );
            break;
        }
        // The heavy job was done before the second request: make it heavier and try again
        // (once the small job accepted meanwhile is done too).
        let small = v["id"].as_str().unwrap().to_string();
        eventually(Duration::from_secs(20), "the small job", || {
            let (_, j) = f.get(&format!("/predict/status/{small}"));
            (j["status"] != "pending").then_some(())
        });
        assert!(
            features < 5,
            "could not keep a job busy ({:?})",
            t0.elapsed()
        );
    }
    // With the slot free again, jobs run; old finished jobs are forgotten (max_jobs_kept).
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = eventually(Duration::from_secs(20), "a free slot", || {
            let (st, _, v) = post(
                &c,
                &batch,
                &json!({"data": [rows(10, 2)], "window_size": 3}),
            );
            (st == 202).then(|| v["id"].as_str().unwrap().to_string())
        });
        eventually(Duration::from_secs(20), "the small job", || {
            let (_, j) = f.get(&format!("/predict/status/{id}"));
            (j["status"] == "done").then_some(())
        });
        ids.push(id);
    }
    assert_eq!(f.get(&format!("/predict/status/{}", ids[0])).0, 404);
    assert_eq!(f.get(&format!("/predict/status/{}", ids[5])).0, 200);
}
