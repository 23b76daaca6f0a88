//! `fieldlab bench soak`: does a running lab stay flat under hours of steady load?
//!
//! A throughput benchmark says how fast; a soak says whether memory, file handles and ingest
//! lag stay bounded when the load never stops. This starts the real binary (`fieldlab up` in a
//! child process, embedded broker, fresh data dir), publishes `--rate` readings per second of
//! `--fields` fields each at QoS 1 from `--devices` devices (each on its own topic, as real
//! devices do), queries the HTTP API all the while, and once a minute prints the child's RSS,
//! its open files and the ingest lag (readings the broker acknowledged but the store has not yet
//! made durable). The load generator runs in this process, so the figures are the lab's own.

use crate::stats::Latencies;
use clap::Args;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchSoakArgs {
    /// How long to run.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// MQTT messages (one reading each) per second, offered at a steady pace.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Fields per reading.
    #[arg(long, default_value_t = 10)]
    fields: usize,
    /// Distinct devices the readings come from (round-robin).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Publisher connections sharing the devices.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// HTTP queries per second while publishing.
    #[arg(long, default_value_t = 5)]
    query_rate: u64,
    /// Seconds between report lines (default one minute).
    #[arg(long, default_value_t = 60)]
    every: u64,
    /// Keep the data dir here instead of a temp dir.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

/// The lab under test; killed when dropped so a failed bench leaves no process behind.
struct Lab {
    child: Child,
    http: String,
    mqtt_port: u16,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of `fieldlab up`'s banner: an `HTTP <url>` line sets `http`, an
/// `MQTT <url with port>` line sets `mqtt` to the port (an `MQTT    also mqtts://...` line of an
/// extra listener is skipped); other lines change nothing.
pub fn read_banner(line: &str, http: &mut Option<String>, mqtt: &mut Option<u16>) {
    let l = line.trim();
    if let Some(r) = l.strip_prefix("HTTP") {
        *http = r.split_whitespace().next().map(str::to_string);
    }
    if let Some(r) = l.strip_prefix("MQTT") {
        let url = r.split_whitespace().next().unwrap_or_default();
        if let Some(p) = url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) {
            *mqtt = Some(p);
        }
    }
}

fn start_lab(data_dir: &std::path::Path) -> anyhow::Result<Lab> {
    use std::io::BufRead;
    // No demo fleet: every point in the store is then one the soak published.
    std::fs::create_dir_all(data_dir)?;
    let config = data_dir.join("soak.yaml");
    std::fs::write(&config, "devices:\n  fleet: []\n")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["up", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-port", "0", "--mqtt-port", "0"])
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                // Keep draining so the child never blocks on a full pipe.
                continue;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut http, mut mqtt) = (None, None);
    while http.is_none() || mqtt.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx.recv_timeout(left).map_err(|_| {
            anyhow::anyhow!("`fieldlab up` printed no HTTP/MQTT banner within 60 s")
        })?;
        read_banner(&l, &mut http, &mut mqtt);
    }
    Ok(Lab {
        child,
        http: http.unwrap(),
        mqtt_port: mqtt.unwrap(),
    })
}

/// VmRSS of `pid` in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A counter's value from Prometheus text (`name` without labels).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn run(a: BenchSoakArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.rate > 0 && a.fields > 0 && a.devices > 0,
        "--rate, --fields and --devices must be > 0"
    );
    let tmp;
    let dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let lab = start_lab(&dir)?;
    let pid = lab.child.id();
    println!(
        "bench soak: {} min, {} msgs/s x {} fields from {} devices over {} publishers, {} queries/s; lab pid {pid}, HTTP {}, MQTT :{}",
        a.minutes, a.rate, a.fields, a.devices, a.publishers, a.query_rate, lab.http, lab.mqtt_port
    );
    let rt = tokio::runtime::Runtime::new()?;
    let code = rt.block_on(soak(&a, &lab, pid))?;
    Ok(code)
}

async fn soak(a: &BenchSoakArgs, lab: &Lab, pid: u32) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // Wait for /ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("{}/ready", lab.http))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the lab was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let base_points = stored_points(&http, &lab.http).await.unwrap_or(0.0);

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    let publishers = a.publishers.max(1);
    for p in 0..publishers {
        tasks.push(tokio::spawn(publisher(
            lab.mqtt_port,
            p,
            publishers,
            a.rate,
            a.fields,
            a.devices,
            acked.clone(),
            stop.clone(),
        )));
    }
    let latencies = Arc::new(Lat::default());
    let q = tokio::spawn(querier(
        http.clone(),
        lab.http.clone(),
        a.query_rate,
        a.devices,
        latencies.clone(),
        stop.clone(),
    ));

    println!(
        "{:>6} {:>12} {:>12} {:>10} {:>9} {:>9} {:>6} {:>10} {:>10}",
        "min", "published", "stored", "lag_rdgs", "lag_s", "rss_mib", "fds", "q_p50_ms", "q_p99_ms"
    );
    let t0 = Instant::now();
    let total = Duration::from_secs(a.minutes * 60);
    let every = Duration::from_secs(a.every.max(1));
    let mut rss_curve = Vec::new();
    let mut max_lag = 0f64;
    let mut next = every;
    while t0.elapsed() < total {
        tokio::time::sleep(next.saturating_sub(t0.elapsed())).await;
        next += every;
        let published = acked.load(Ordering::Relaxed);
        let stored_pts = stored_points(&http, &lab.http).await.unwrap_or(f64::NAN) - base_points;
        let stored = stored_pts / a.fields as f64;
        let lag = (published as f64 - stored).max(0.0);
        max_lag = max_lag.max(lag);
        let rss = rss_mib(pid);
        rss_curve.push(rss);
        let lat = latencies.take();
        println!(
            "{:>6.1} {:>12} {:>12.0} {:>10.0} {:>9.2} {:>9.1} {:>6} {:>10.1} {:>10.1}",
            t0.elapsed().as_secs_f64() / 60.0,
            published,
            stored,
            lag,
            lag / a.rate as f64,
            rss,
            open_files(pid),
            lat.quantile_ms(0.5),
            lat.quantile_ms(0.99),
        );
        if let Ok(Some(status)) = lab_exited(pid) {
            anyhow::bail!("the lab exited during the soak: {status}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let _ = q.await;
    let secs = t0.elapsed().as_secs_f64();
    let published = acked.load(Ordering::Relaxed);
    // Drain: how long until the store holds everything acknowledged.
    let drain0 = Instant::now();
    let mut stored = 0.0;
    while drain0.elapsed() < Duration::from_secs(120) {
        stored =
            (stored_points(&http, &lab.http).await.unwrap_or(0.0) - base_points) / a.fields as f64;
        if stored >= published as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "published {published} readings in {secs:.0} s ({:.0}/s achieved of {} offered); stored {stored:.0} after a {:.1} s drain; max lag {max_lag:.0} readings",
        published as f64 / secs,
        a.rate,
        drain0.elapsed().as_secs_f64()
    );
    if rss_curve.len() >= 3 {
        let after_warmup = &rss_curve[rss_curve.len().min(2)..];
        let lo = after_warmup.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = after_warmup
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        println!(
            "RSS after the first {} reports: min {lo:.1} MiB, max {hi:.1} MiB, last {:.1} MiB (growth {:.1} MiB)",
            rss_curve.len().min(2),
            rss_curve.last().unwrap(),
            hi - lo
        );
    }
    let code = if stored + 0.5 < published as f64 {
        println!(
            "LOST: {} acknowledged readings were not stored",
            published as f64 - stored
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    Ok(code)
}

fn lab_exited(pid: u32) -> std::io::Result<Option<String>> {
    // A zombie or a missing /proc entry means the child is gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) if s.contains(") Z ") => Ok(Some("zombie (exited)".into())),
        Ok(_) => Ok(None),
        Err(_) => Ok(Some("gone".into())),
    }
}

async fn stored_points(http: &reqwest::Client, base: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric(&text, "fieldlab_store_points_total")
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    port: u16,
    p: usize,
    publishers: usize,
    rate: u64,
    fields: usize,
    devices: usize,
    acked: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut o = MqttOptions::new(format!("soak-pub-{p}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let counter = acked.clone();
    let driver = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("soak publisher {p}: connection error: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    // This publisher's devices: p, p + publishers, ...
    let mine: Vec<usize> = (p..devices).step_by(publishers).collect();
    anyhow::ensure!(
        !mine.is_empty(),
        "publisher {p} has no device (--devices < --publishers)"
    );
    let my_rate = rate as f64 / publishers as f64;
    let tick = Duration::from_millis(10);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut body = String::with_capacity(64 + fields * 16);
    while !stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let due = (t0.elapsed().as_secs_f64() * my_rate) as u64;
        while sent < due {
            let d = mine[(sent as usize) % mine.len()];
            let ts = fieldlab_core::time::now_ms();
            body.clear();
            use std::fmt::Write as _;
            let _ = write!(
                body,
                "{{\"device_id\":\"soak-{d}\",\"device_type\":\"Bench\",\"seq\":{seq},\"ts\":{ts},\"data\":{{"
            );
            for f in 0..fields {
                if f > 0 {
                    body.push(',');
                }
                let _ = write!(
                    body,
                    "\"f{f}\":{:.2}",
                    20.0 + ((seq as usize + f) % 100) as f64 * 0.01
                );
            }
            body.push_str("}}");
            client
                .publish(
                    format!("devices/Bench/soak-{d}/telemetry"),
                    QoS::AtLeastOnce,
                    false,
                    body.clone(),
                )
                .await?;
            sent += 1;
            if (sent as usize).is_multiple_of(mine.len()) {
                seq += 1;
            }
        }
    }
    // Let outstanding PUBACKs arrive before disconnecting.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    Ok(())
}

async fn querier(
    http: reqwest::Client,
    base: String,
    per_s: u64,
    devices: usize,
    lat: Arc<Lat>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    if per_s == 0 {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s as f64));
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let d = i % devices;
        i += 1;
        let url = if i.is_multiple_of(2) {
            format!("{base}/api/v1/query?device_id=soak-{d}&field=f0&from=-1m")
        } else {
            format!("{base}/api/v1/query?device_id=soak-{d}&from=-10m&step=10s&agg=mean,max")
        };
        let t = Instant::now();
        if let Ok(r) = http.get(url).send().await {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            if ok {
                lat.push(t.elapsed());
            }
        }
    }
}

/// Query latencies of the current report period.
#[derive(Default)]
struct Lat(std::sync::Mutex<Latencies>);

impl Lat {
    fn push(&self, d: Duration) {
        self.0.lock().unwrap().record(d);
    }
    fn take(&self) -> Latencies {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_reads_an_unlabelled_counter_and_not_a_prefix() {
        let text =
            "# HELP x\nfieldlab_store_points_total_extra 5\nfieldlab_store_points_total 1234\n";
        assert_eq!(metric(text, "fieldlab_store_points_total"), Some(1234.0));
        assert_eq!(metric(text, "fieldlab_missing_total"), None);
    }
}
