//! `fieldlab bench emulator`: what a device costs, and how fast the fleet publishes.
//!
//! 1. Memory: for each size (default 100k and 1M devices, one message per 10 s each, shared
//!    connections, QoS 0 into the embedded broker) a child process builds the fleet, runs it
//!    until every device has published, and reports its resident set size (VmRSS).
//! 2. Publish rate: the same load-mode run (N devices, short interval) into the embedded broker
//!    at QoS 0 and QoS 1, and into a real Mosquitto started here; delivered messages per second
//!    (as received back by a subscriber), median of `--runs`, and the ratio embedded/Mosquitto.

use clap::Args;
use fieldlab_core::config::Qos;
use fieldlab_emulator::load::{generated_fleet, LoadOptions, LoadReport};
use fieldlab_emulator::ConnectionMode;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BenchEmulatorArgs {
    /// Fleet sizes for the memory figure.
    pub sizes: Vec<usize>,
    /// Devices of the publish-rate runs.
    pub rate_devices: usize,
    /// Interval (ms) of each device in the publish-rate runs.
    pub rate_interval: u64,
    /// Seconds per publish-rate run.
    pub duration: f64,
    pub runs: usize,
    /// Skip the memory part.
    pub no_memory: bool,
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn embedded() -> anyhow::Result<std::net::SocketAddr> {
    let b = fieldlab_broker::start(&fieldlab_broker::BrokerSettings {
        host: "127.0.0.1".into(),
        port: 0,
        max_payload_size: 1 << 20,
        max_connections: 10_000,
        ..Default::default()
    })?;
    Ok(b.local_addr())
}

/// The child side of the memory figure: build `n` devices, run them, print `RSS <kB> ...`.
pub fn rss_child(n: usize) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let addr = embedded()?;
        let base = rss_kb();
        let mut s = fieldlab_emulator::EmulatorSettings::new(addr.ip().to_string(), addr.port());
        s.qos = Qos::AtMostOnce;
        s.connection = ConnectionMode::Shared;
        s.shared_connections = 2;
        let em = fieldlab_emulator::Emulator::new(
            s,
            fieldlab_core::DeviceDirectory::new(),
            None,
            Default::default(),
        )
        .map_err(anyhow::Error::msg)?;
        let template =
            std::sync::Arc::new(generated_fleet(1, "TemperatureSensor", "x", 10_000).remove(0));
        let t0 = Instant::now();
        for i in 0..n {
            let name = format!("mem-{i}");
            em.create_from(&name, template.clone(), false)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            em.start_spread(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let built = t0.elapsed();
        // Run through more than one interval, so that every device has published.
        let deadline = Instant::now() + Duration::from_secs(60);
        while (em.metrics().published.get() as usize) < n + n / 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rss = rss_kb();
        println!(
            "RSS {rss} BASE {base} PUBLISHED {} ERRORS {} BUILD_MS {}",
            em.metrics().published.get(),
            em.metrics().publish_errors.get(),
            built.as_millis()
        );
        std::process::exit(0)
    })
}

fn median(v: Vec<f64>) -> f64 {
    crate::stats::median(&v)
}

async fn rate(
    a: &BenchEmulatorArgs,
    port: u16,
    qos: Qos,
    run: usize,
) -> anyhow::Result<LoadReport> {
    let mut s = fieldlab_emulator::EmulatorSettings::new("127.0.0.1", port);
    s.qos = qos;
    s.connection = ConnectionMode::Shared;
    s.shared_connections = 2;
    s.seed = run as u64;
    fieldlab_emulator::load::run(LoadOptions {
        settings: s,
        fleet: generated_fleet(
            a.rate_devices,
            "TemperatureSensor",
            &format!("rate{run}"),
            a.rate_interval,
        ),
        duration: Duration::from_secs_f64(a.duration),
        progress: false,
    })
    .await
}

/// Run the benchmark. `child(n)` is the command that runs [`rss_child`] with `n` devices in a
/// fresh process (so that each size starts from an empty heap).
pub fn run(a: BenchEmulatorArgs, child: impl Fn(usize) -> Command) -> anyhow::Result<ExitCode> {
    if !a.no_memory {
        println!("memory: shared connections, 1 msg / 10 s per device, QoS 0, embedded broker (one child process per size)");
        for &n in &a.sizes {
            let out = child(n).stderr(Stdio::inherit()).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let f = |k: &str| -> u64 {
                let mut it = text.split_whitespace();
                while let Some(w) = it.next() {
                    if w == k {
                        return it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    }
                }
                0
            };
            let (rss, base) = (f("RSS"), f("BASE"));
            println!(
                "  {n:>8} devices: RSS {:.0} MiB (process before devices {:.0} MiB; {:.0} bytes/device), {} messages published, {} publish errors, built in {} ms{}",
                rss as f64 / 1024.0,
                base as f64 / 1024.0,
                (rss.saturating_sub(base)) as f64 * 1024.0 / n as f64,
                f("PUBLISHED"),
                f("ERRORS"),
                f("BUILD_MS"),
                if n >= 1_000_000 { if rss < 2 * 1024 * 1024 { "  [target < 2 GiB: met]" } else { "  [target < 2 GiB: MISSED]" } } else { "" }
            );
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let emb = embedded()?;
        let mq = fieldlab_testkit::Mosquitto::start()?;
        println!(
            "publish rate: {} devices x 1 msg / {} ms, shared connections, {} s per run, {} runs, delivered msgs/s (received back by a subscriber)",
            a.rate_devices, a.rate_interval, a.duration, a.runs
        );
        let mut med = std::collections::BTreeMap::new();
        for (label, port, qos) in [
            ("embedded QoS 0", emb.port(), Qos::AtMostOnce),
            ("mosquitto QoS 0", mq.port, Qos::AtMostOnce),
            ("embedded QoS 1", emb.port(), Qos::AtLeastOnce),
            ("mosquitto QoS 1", mq.port, Qos::AtLeastOnce),
        ] {
            let mut rates = Vec::new();
            for r in 0..a.runs.max(1) {
                let rep = rate(&a, port, qos, r).await?;
                println!(
                    "  {label:<16} run {}: sent {:.0} msgs/s, delivered {:.0} msgs/s, lost {:.2} %, p50 {:.1} ms, p99 {:.1} ms",
                    r + 1,
                    rep.sent as f64 / rep.seconds,
                    rep.msgs_per_s,
                    rep.loss_percent,
                    rep.latency_p50_ms,
                    rep.latency_p99_ms
                );
                rates.push(rep.msgs_per_s);
            }
            med.insert(label, median(rates));
        }
        for q in ["QoS 0", "QoS 1"] {
            let e = med[format!("embedded {q}").as_str()];
            let m = med[format!("mosquitto {q}").as_str()];
            println!("  median {q}: embedded {e:.0} msgs/s, mosquitto {m:.0} msgs/s, ratio embedded/mosquitto {:.2}", e / m);
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct EmulatorArgs {
    /// Fleet sizes for the memory figure.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<usize>,
    /// Devices of the publish-rate runs.
    #[arg(long, default_value_t = 1000)]
    rate_devices: usize,
    /// Interval (ms) of each device in the publish-rate runs. The default offers 333k msgs/s,
    /// above the 200k msgs/s target, so the figure shows what the broker delivers, not what
    /// was offered.
    #[arg(long, default_value_t = 3)]
    rate_interval: u64,
    /// Seconds per publish-rate run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the memory part.
    #[arg(long)]
    no_memory: bool,
    /// (internal) run one memory measurement with this many devices and print `RSS <kB>`.
    #[arg(long, hide = true)]
    rss_child: Option<usize>,
}

/// `fieldlab bench emulator`; the memory figures run in child processes of `exe` (the
/// `fieldlab` binary: `fieldlab bench emulator --rss-child N`).
pub fn cmd(a: EmulatorArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.rss_child {
        return rss_child(n);
    }
    let exe = std::env::current_exe()?;
    run(
        BenchEmulatorArgs {
            sizes: a.sizes,
            rate_devices: a.rate_devices,
            rate_interval: a.rate_interval,
            duration: a.duration,
            runs: a.runs,
            no_memory: a.no_memory,
        },
        move |n| {
            let mut c = Command::new(&exe);
            c.args(["bench", "emulator", "--rss-child", &n.to_string()]);
            c
        },
    )
}
