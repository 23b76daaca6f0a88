//! The deployment files under `deploy/`, checked with the tools that run here (no Docker
//! engine, no cluster): scripts/validate_deploy.py (YAML, kustomize and Helm renders,
//! Kubernetes JSON schemas, every queried metric exported), promtool, systemd-analyze,
//! hadolint, `fieldlab config check` on every shipped config, and the Mosquitto ACL file
//! against a real Mosquitto. scripts/test.sh installs the tools.

use crate::common;

use common::{free_port, Fieldlab};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(name: &str) -> Command {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .any(|d| Path::new(d).join(name).is_file());
    assert!(
        found,
        "`{name}` is not installed; scripts/test.sh installs it"
    );
    Command::new(name)
}

fn ok(out: std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn manifests_dashboards_and_alerts_validate_against_a_live_fieldlab() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fieldlab::start(dir.path(), &[]);
    f.wait_ready(Duration::from_secs(20));
    // Let a request be timed, so the HTTP histogram has samples.
    f.text("/api/v1/devices");
    let (st, metrics) = f.text("/metrics");
    assert_eq!(st, 200);
    let mfile = dir.path().join("metrics.txt");
    std::fs::write(&mfile, &metrics).unwrap();

    let out = tool("python3")
        .arg(root().join("scripts/validate_deploy.py"))
        .arg("--metrics")
        .arg(&mfile)
        .output()
        .unwrap();
    let text = ok(out, "scripts/validate_deploy.py");
    assert!(text.contains("all deploy checks passed"), "{text}");

    let out = tool("promtool")
        .args(["check", "rules"])
        .arg(root().join("deploy/prometheus/alerts.yml"))
        .output()
        .unwrap();
    let text = ok(out, "promtool check rules");
    assert!(text.contains("SUCCESS"), "{text}");

    let mut p = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    // `f.text` sends no Accept: the answer is Prometheus text 0.0.4, what promtool lints.
    // Every finding (no help text, a name against the conventions, a parse error) fails.
    assert!(out.status.success(), "promtool check metrics: {text}");
    let unexpected: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        unexpected.is_empty(),
        "promtool check metrics: {unexpected:#?}"
    );
}

#[test]
fn every_shipped_config_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![
        root().join("deploy/docker/fieldlab.yaml"),
        root().join("deploy/systemd/fieldlab.yaml"),
        root().join("deploy/k8s/overlays/prod/fieldlab.yaml"),
    ];
    // The ConfigMap of the kustomize base, as written.
    let cm: String =
        std::fs::read_to_string(root().join("deploy/k8s/base/configmap.yaml")).unwrap();
    let body: String = cm
        .split_once("fieldlab.yaml: |\n")
        .unwrap()
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let p = dir.path().join("base.yaml");
    std::fs::write(&p, body).unwrap();
    files.push(p);
    // The prod overlay's config as a pod of the cluster sees it: the environment the overlay
    // sets (NATS_URL, the replica id and advertise URL from the pod, REDIS_URL) written in as
    // keys, so the cluster-mode checks run (mqtt.broker_url set, the ids valid).
    let prod =
        std::fs::read_to_string(root().join("deploy/k8s/overlays/prod/fieldlab.yaml")).unwrap();
    let kust = std::fs::read_to_string(root().join("deploy/k8s/overlays/prod/kustomization.yaml"))
        .unwrap();
    let env_value = |name: &str| -> String {
        let lines: Vec<&str> = kust.lines().map(str::trim).collect();
        let w = lines
            .windows(2)
            .find(|w| w[0] == format!("name: {name}"))
            .unwrap_or_else(|| panic!("the prod overlay sets no {name}"));
        w[1].strip_prefix("value: ")
            .unwrap_or_else(|| panic!("{name}: {}", w[1]))
            .to_string()
    };
    let advertise = env_value("FIELDLAB__CLUSTER__ADVERTISE_URL")
        .replace("$(POD_NAME)", "fieldlab-0")
        .replace("$(POD_NAMESPACE)", "fieldlab");
    assert!(
        prod.contains("\ncluster:\n"),
        "the prod config has no cluster: section"
    );
    let pod = prod.replacen(
        "\ncluster:\n",
        &format!(
            "\ncluster:\n  nats_url: {}\n  replica_id: fieldlab-0\n  advertise_url: {advertise}\n",
            env_value("NATS_URL")
        ),
        1,
    ) + &format!("ratelimit:\n  redis_url: {}\n", env_value("REDIS_URL"));
    let p = dir.path().join("prod-pod.yaml");
    std::fs::write(&p, pod).unwrap();
    files.push(p);
    for f in files {
        let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
            .args(["config", "check"])
            .arg(&f)
            .output()
            .unwrap();
        ok(out, &format!("fieldlab config check {}", f.display()));
    }

    // The nats.conf the prod overlay ships carries the mapping the binary prints for the
    // partitions of the prod config (scripts/validate_deploy.py checks the rest).
    let partitions = prod
        .lines()
        .find_map(|l| l.trim().strip_prefix("partitions: "))
        .and_then(|v| v.split_whitespace().next())
        .expect("cluster.partitions in the prod config");
    let out = Command::new(env!("CARGO_BIN_EXE_fieldlab"))
        .args(["config", "nats-mapping", "--partitions", partitions])
        .output()
        .unwrap();
    let mapping = ok(out, "fieldlab config nats-mapping");
    let cm =
        std::fs::read_to_string(root().join("deploy/k8s/overlays/prod/nats-config.yaml")).unwrap();
    let conf: String = cm
        .split_once("nats.conf: |\n")
        .unwrap()
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(
        conf.contains(&mapping),
        "nats-config.yaml's nats.conf lacks `fieldlab config nats-mapping --partitions {partitions}`:\n{mapping}\nin:\n{conf}"
    );
    let doc = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    assert!(
        doc.contains(&mapping),
        "docs/deploy.md shows another mapping than:\n{mapping}"
    );
}

#[test]
fn systemd_unit_verifies_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(root().join("deploy/systemd/fieldlab.service")).unwrap();
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = unit.replace("/usr/local/bin/fieldlab", env!("CARGO_BIN_EXE_fieldlab"));
    let path = dir.path().join("fieldlab.service");
    std::fs::write(&path, unit).unwrap();
    let out = tool("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = ok(out, "systemd-analyze verify");
    // It exits 0 on unknown keys and bad values, so any output is a failure.
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );
}

#[test]
fn dockerfile_lints_clean() {
    let out = tool("hadolint")
        .arg(root().join("deploy/docker/Dockerfile"))
        .output()
        .unwrap();
    ok(out, "hadolint");
}

/// A real Mosquitto with the compose stack's ACL file: a device may publish only its own
/// telemetry; fieldlab's ingest user reads everything.
#[test]
fn mosquitto_acl_confines_each_device_to_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    for (u, p) in [
        ("fieldlab", "ingest-password"),
        ("dev1", "dev1-password"),
        ("dev2", "dev2-password"),
    ] {
        let out = tool("mosquitto_passwd")
            .arg("-b")
            .arg(&passwd)
            .args([u, p])
            .output()
            .unwrap();
        ok(out, "mosquitto_passwd");
    }
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\n",
            passwd.display(),
            root().join("deploy/compose/mosquitto/acl").display()
        ),
    )
    .unwrap();
    let bin = if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let _broker = Kill(
        Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let port_s = port.to_string();
    let publish = |user: &str, pass: &str, topic: &str, msg: &str| {
        let out = tool("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port_s, "-q", "1"])
            .args(["-u", user, "-P", pass, "-t", topic, "-m", msg])
            .output()
            .unwrap();
        ok(out, "mosquitto_pub");
    };
    // fieldlab's ingest user reads all of devices/#.
    let mut sub = Kill(
        tool("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port_s, "-q", "1", "-v"])
            .args(["-u", "fieldlab", "-P", "ingest-password", "-t", "devices/#"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = sub.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |want: &str, republish: &dyn Fn()| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            republish();
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(l);
            }
            if seen.iter().any(|l| l.ends_with(want)) {
                return;
            }
            assert!(Instant::now() < deadline, "never saw {want}: {seen:?}");
        }
    };
    // The subscriber is live once it sees fieldlab's own command message.
    wait_for("marker-1", &|| {
        publish(
            "fieldlab",
            "ingest-password",
            "devices/T/dev1/commands",
            "marker-1",
        )
    });
    // dev1 cannot publish as dev2 (Mosquitto drops it silently), but may publish as itself.
    publish(
        "dev1",
        "dev1-password",
        "devices/T/dev2/telemetry",
        "forged",
    );
    publish("dev1", "dev1-password", "fieldlab/anything", "forged");
    wait_for("own", &|| {
        publish("dev1", "dev1-password", "devices/T/dev1/telemetry", "own")
    });
    wait_for("marker-2", &|| {
        publish(
            "fieldlab",
            "ingest-password",
            "devices/T/dev1/commands",
            "marker-2",
        )
    });
    assert!(
        seen.iter().all(|l| !l.ends_with("forged")),
        "a device published outside its topics: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l == "devices/T/dev1/telemetry own"),
        "{seen:?}"
    );
    // A wrong password is refused.
    let out = tool("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port_s])
        .args([
            "-u",
            "dev1",
            "-P",
            "nope",
            "-t",
            "devices/T/dev1/telemetry",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
