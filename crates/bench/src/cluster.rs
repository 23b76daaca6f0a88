//! `fieldlab bench cluster`: durable readings/s of a cluster of replicas vs one replica, on
//! this machine, in one run.
//!
//! Each round starts a fresh local cluster with `scripts/cluster.sh` (nats-server with
//! JetStream and its MQTT listener, Redis, N `fieldlab up` replicas), pre-encodes the readings,
//! then starts the clock: `devices` MQTT clients (QoS 1, one per device) publish
//! `readings` readings each to nats-server. Two instants are taken: when nats-server has
//! acknowledged every message (PUBACK: the stream holds it), and when the replicas' stores hold
//! every reading durably (the sum over replicas of `fieldlab_ingest_points_total`, which counts
//! points after the store's WAL acknowledged them; one field per reading). The CPU seconds each
//! process spent in the round (from /proc) say where the time goes. Rounds alternate 1 and N
//! replicas, `runs` times each; medians are reported with the ratio.

use crate::stats::median;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Replicas of the cluster compared with one replica.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Devices, each its own MQTT client.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Readings per device.
    #[arg(long, default_value_t = 300)]
    pub readings: usize,
    /// Rounds per configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// scripts/cluster.sh (default: ./scripts/cluster.sh).
    #[arg(long)]
    pub script: Option<PathBuf>,
}

struct Round {
    replicas: usize,
    acked_s: f64,
    durable_s: f64,
    /// CPU seconds: nats-server, redis, replicas (sum), this load generator.
    cpu: [f64; 4],
}

pub fn cmd(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let script = a
        .script
        .clone()
        .unwrap_or_else(|| PathBuf::from("scripts/cluster.sh"));
    anyhow::ensure!(
        script.exists(),
        "{} not found; run from the repository root or pass --script",
        script.display()
    );
    let total = a.devices * a.readings;
    println!(
        "bench cluster: {} devices x {} readings = {total} readings (QoS 1, one client per device), 1 vs {} replicas, {} runs each",
        a.devices, a.readings, a.replicas, a.runs
    );
    let mut rounds = Vec::new();
    for run in 0..a.runs {
        for n in [1, a.replicas] {
            let r = round(&script, n, &a)?;
            println!(
                "  run {} replicas {n}: acked by NATS {:>8.0} readings/s, durable {:>8.0} readings/s ({:.2} s); CPU s: nats {:.2}, redis {:.2}, replicas {:.2}, load generator {:.2}",
                run + 1,
                total as f64 / r.acked_s,
                total as f64 / r.durable_s,
                r.durable_s,
                r.cpu[0],
                r.cpu[1],
                r.cpu[2],
                r.cpu[3]
            );
            rounds.push(r);
        }
    }
    let med = |n: usize, f: &dyn Fn(&Round) -> f64| {
        median(
            &rounds
                .iter()
                .filter(|r| r.replicas == n)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    let one = med(1, &|r| total as f64 / r.durable_s);
    let many = med(a.replicas, &|r| total as f64 / r.durable_s);
    let acked_one = med(1, &|r| total as f64 / r.acked_s);
    let acked_many = med(a.replicas, &|r| total as f64 / r.acked_s);
    println!(
        "median durable readings/s: 1 replica {one:.0}, {} replicas {many:.0}; ratio {:.2}",
        a.replicas,
        many / one
    );
    println!("median acknowledged by NATS readings/s: 1 replica {acked_one:.0}, {} replicas {acked_many:.0}", a.replicas);
    for n in [1, a.replicas] {
        println!(
            "median CPU s with {n} replica(s): nats {:.2}, redis {:.2}, replicas {:.2}, load generator {:.2}",
            med(n, &|r| r.cpu[0]),
            med(n, &|r| r.cpu[1]),
            med(n, &|r| r.cpu[2]),
            med(n, &|r| r.cpu[3])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_s(pid: i32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name, in clock
    // ticks (USER_HZ, 100 on Linux whatever the architecture).
    (ticks(11) + ticks(12)) / 100.0
}

fn pid(dir: &Path, name: &str) -> i32 {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn round(script: &Path, replicas: usize, a: &ClusterArgs) -> anyhow::Result<Round> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let out = Command::new("bash")
        .arg(script)
        .arg("up")
        .arg(dir.path())
        .env("REPLICAS", replicas.to_string())
        .env("FIELDLAB_BIN", &exe)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let down = || {
        let _ = Command::new("bash")
            .arg(script)
            .arg("down")
            .arg(dir.path())
            .env("REPLICAS", replicas.to_string())
            .status();
    };
    if !out.status.success() {
        down();
        anyhow::bail!(
            "cluster.sh up failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mqtt_port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("mqtt mqtt://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no mqtt line in {text}"))?;
    let http: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("http "))
        .map(|s| s.trim().to_string())
        .collect();
    let pids = |name: &str| pid(dir.path(), name);
    let procs: Vec<i32> = (1..=replicas)
        .map(|n| pids(&format!("replica-{n}.pid")))
        .collect();
    let cpu_now = || {
        [
            cpu_s(pids("nats.pid")),
            cpu_s(pids("redis.pid")),
            procs.iter().map(|p| cpu_s(*p)).sum(),
            cpu_s(std::process::id() as i32),
        ]
    };
    let result = (|| -> anyhow::Result<Round> {
        let bodies: Vec<Vec<String>> = (0..a.devices)
            .map(|d| {
                (0..a.readings)
                    .map(|i| {
                        format!(
                            r#"{{"device_id":"bench-{d:04}","seq":{i},"ts":{},"v":{}}}"#,
                            1_700_000_000_000i64 + i as i64 * 1000,
                            20.0 + (i % 100) as f64 * 0.01
                        )
                    })
                    .collect()
            })
            .collect();
        let before = cpu_now();
        let t0 = Instant::now();
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(publish(mqtt_port, bodies))?;
        let acked_s = t0.elapsed().as_secs_f64();
        let total = (a.devices * a.readings) as u64;
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let stored: u64 = http.iter().map(|h| points(&client, h)).sum();
            if stored >= total {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {stored} of {total} readings durable after 10 min"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let durable_s = t0.elapsed().as_secs_f64();
        let after = cpu_now();
        Ok(Round {
            replicas,
            acked_s,
            durable_s,
            cpu: [
                after[0] - before[0],
                after[1] - before[1],
                after[2] - before[2],
                after[3] - before[3],
            ],
        })
    })();
    down();
    result
}

/// `fieldlab_ingest_points_total` of one replica.
fn points(c: &reqwest::blocking::Client, http: &str) -> u64 {
    let Ok(r) = c.get(format!("{http}/metrics")).send() else {
        return 0;
    };
    let text = r.text().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("fieldlab_ingest_points_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Every device's bodies over its own connection, QoS 1, at most 100 in flight; returns when
/// nats-server has acknowledged all.
async fn publish(port: u16, bodies: Vec<Vec<String>>) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for (d, msgs) in bodies.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let id = format!("bench-{d:04}");
            let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(60));
            o.set_inflight(100);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 128);
            let n = msgs.len();
            let topic = format!("devices/Bench/{id}/telemetry");
            let sender = tokio::spawn(async move {
                for m in msgs {
                    if c.publish(topic.as_str(), rumqttc::QoS::AtLeastOnce, false, m)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                c
            });
            let mut acked = 0;
            while acked < n {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("device {d}: {e}")),
                }
            }
            let c = sender.await?;
            let _ = c.disconnect().await;
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
