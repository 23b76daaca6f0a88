//! The `fieldlab` command. Argument parsing and wiring only: every capability lives in a crate
//! under `crates/`, the pipeline in `fieldlab-topology`.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fieldlab_core::config::locate_key;
use fieldlab_topology::config::{Config, LogFormat};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// mimalloc: ingest, the store and the verifier allocate many small strings per point/request;
// glibc malloc spent ~20% of the ingest profile in _int_malloc/_int_free/consolidate.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod data_cmds;
mod detect;
mod devices;
mod emulate;
mod logging;
mod nab;
mod progress;
mod users;

mod ratelimit;

mod cap;

#[derive(Parser)]
#[command(
    name = "fieldlab",
    version,
    about = "A self-hosted IoT telemetry lab: emulate, ingest, store, query."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything in one process: MQTT broker, device emulator, ingest, store, HTTP API.
    Up(UpArgs),
    /// Check or print configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Device types, and control of the devices of a running fieldlab.
    #[command(subcommand)]
    Devices(devices::DevicesCmd),
    /// Load mode: emulated devices against any broker; reports msgs/s, latency and loss.
    Emulate(emulate::EmulateArgs),
    /// Benchmarks that print reproducible figures.
    #[command(subcommand)]
    Bench(fieldlab_bench::BenchCmd),
    /// Query stored series (reads the data dir read-only): table, CSV or JSON.
    Query(data_cmds::QueryArgs),
    /// Export series as CSV, JSON lines or Parquet (reads the data dir read-only), streamed.
    Export(data_cmds::ExportArgs),
    /// Write a consistent snapshot of the whole data dir to a tar file (online with --url).
    Backup(data_cmds::BackupArgs),
    /// Restore a backup into an empty data dir.
    Restore(data_cmds::RestoreArgs),
    /// Proofs: commitments, policies, signed bundles, offline verifier, keys, registry (the legacy `cap` tool).
    #[command(subcommand)]
    Cap(cap::CapCmd),
    /// The rate-limit service on its own.
    #[command(subcommand)]
    Ratelimit(ratelimit::RatelimitCmd),
    /// Users, roles and API keys (auth).
    Users(users::UsersArgs),
    /// The Numenta Anomaly Benchmark: run detectors over its data, score their results.
    #[command(subcommand)]
    Nab(nab::NabCmd),
    /// Anomaly detection: train the autoencoder.
    #[command(subcommand)]
    Detect(detect::DetectCmd),
}

#[derive(Args)]
struct UpArgs {
    /// fieldlab.yaml to load (see `fieldlab config example`).
    #[arg(long, env = "FIELDLAB_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for all state (WAL, blocks, quarantine). Default ./data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP port; 0 picks a free one and prints it. Default 8080.
    #[arg(long)]
    http_port: Option<u16>,
    /// Embedded MQTT broker port; 0 picks a free one and prints it. Default 1883.
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// Use this external broker instead of the embedded one, e.g. mqtt://localhost:1883.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// CA (PEM) the mqtts:// broker's certificate must chain to (mqtt.tls.ca_file; unset:
    /// the system trust store).
    #[arg(long, value_name = "FILE", requires = "broker")]
    broker_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a broker that requires one (mqtt.tls.cert_file).
    #[arg(long, value_name = "FILE", requires_all = ["broker", "broker_key"])]
    broker_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, mqtt.tls.key_file).
    #[arg(long, value_name = "FILE", requires_all = ["broker", "broker_cert"])]
    broker_key: Option<PathBuf>,
    /// Seed of the emulator's generators (same seed, same values).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check a file; errors name the file, line and key. Exit 0 when valid, 1 otherwise.
    Check { file: PathBuf },
    /// Print a commented configuration with every default.
    Example,
    /// Print the nats.conf subject mapping a cluster of replicas needs (cluster.partitions).
    NatsMapping {
        /// Partitions of the device streams; equal to cluster.partitions.
        #[arg(long, default_value_t = 12)]
        partitions: u32,
    },
}

fn main() -> ExitCode {
    // See the function: 21-42% of gateway ingest went to zeroing fresh huge pages.
    fieldlab_core::process::no_transparent_huge_pages();
    fieldlab_detect::autoencoder::train_on_one_thread();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Detect(c) => detect::run(c),
        Cmd::Query(a) => data_cmds::query(a).map(|_| ExitCode::SUCCESS),
        Cmd::Export(a) => data_cmds::export(a).map(|_| ExitCode::SUCCESS),
        Cmd::Backup(a) => data_cmds::backup(a).map(|_| ExitCode::SUCCESS),
        Cmd::Restore(a) => data_cmds::restore(a).map(|_| ExitCode::SUCCESS),
        Cmd::Ratelimit(c) => ratelimit::run(c),
        Cmd::Up(a) => up(a),
        Cmd::Users(a) => users::run(a),
        Cmd::Cap(c) => cap::run(c),
        Cmd::Nab(c) => nab::run(c),
        Cmd::Config(ConfigCmd::Example) => {
            print!("{}", fieldlab_topology::config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config(ConfigCmd::Check { file }) => Ok(config_check(&file)),
        Cmd::Config(ConfigCmd::NatsMapping { partitions }) => {
            let c = fieldlab_topology::config::ClusterConfig {
                partitions,
                ..Default::default()
            };
            print!("{}", c.nats_mapping());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Devices(c) => devices::run(c),
        Cmd::Emulate(a) => {
            logging::init_stderr("warn", LogFormat::Text);
            emulate::run(a)
        }
        Cmd::Bench(c) => {
            logging::init_stderr("warn", LogFormat::Text);
            fieldlab_bench::run(c)
        }
    }
}

/// The clap parser of a config word (`--backend`, `--qos`, ...): its possible values, which
/// `--help` and a bad value's error list, are the enum's own table (strum's `VARIANTS`), the
/// one fieldlab.yaml is parsed with.
pub(crate) fn word_parser<E>() -> impl clap::builder::TypedValueParser<Value = E>
where
    E: fieldlab_core::config::VariantNames + std::str::FromStr + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(E::VARIANTS).map(|s| match s.parse::<E>() {
        Ok(v) => v,
        Err(_) => unreachable!("`{s}` is one of the enum's own names"),
    })
}

/// Load config from file + environment, then apply flags.
fn load_config(a: &UpArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(
        a.config.as_deref(),
        |k| std::env::var(k).ok(),
        std::env::vars(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(d) = &a.data_dir {
        cfg.storage.data_dir = d.clone();
    }
    if let Some(p) = a.http_port {
        cfg.server.port = p;
    }
    if let Some(p) = a.mqtt_port {
        cfg.mqtt.port = p;
    }
    if let Some(b) = &a.broker {
        fieldlab_core::config::parse_broker_url(b).map_err(|m| anyhow::anyhow!("--broker: {m}"))?;
        cfg.mqtt.broker_url = Some(b.clone());
    }
    if a.broker_ca.is_some() || a.broker_cert.is_some() {
        let t = cfg.mqtt.tls.get_or_insert_with(Default::default);
        if let Some(c) = &a.broker_ca {
            t.ca_file = Some(c.clone());
        }
        if let (Some(c), Some(k)) = (&a.broker_cert, &a.broker_key) {
            t.cert_file = Some(c.clone());
            t.key_file = Some(k.clone());
        }
    }
    if let Some(s) = a.seed {
        cfg.devices.seed = s;
    }
    check_fleet(&cfg, a.config.as_deref()).map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

/// Check the configured fleet against the emulator's catalog; the error names file:line and key.
fn check_fleet(cfg: &Config, file: Option<&Path>) -> Result<(), String> {
    if cfg.devices.fleet.is_none() && cfg.devices.types.is_empty() {
        return Ok(());
    }
    fieldlab_emulator::validate_devices(&cfg.devices).map_err(|(key, msg)| {
        let line = file
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| locate_key(&t, &key));
        let at = match (file, line) {
            (Some(p), Some(l)) => format!("{}:{l}", p.display()),
            (Some(p), None) => p.display().to_string(),
            (None, _) => "config".into(),
        };
        format!("{at}: key `{key}`: {msg}")
    })
}

fn config_check(file: &Path) -> ExitCode {
    let result = Config::from_file(file)
        .map_err(|e| e.to_string())
        .and_then(|cfg| check_fleet(&cfg, Some(file)).map(|_| cfg));
    match result {
        Ok(cfg) => {
            let devices = cfg
                .devices
                .fleet
                .as_ref()
                .map_or("demo fleet".to_string(), |f| format!("{} devices", f.len()));
            let broker = cfg
                .mqtt
                .broker_url
                .clone()
                .unwrap_or_else(|| format!("embedded broker on port {}", cfg.mqtt.port));
            println!(
                "{}: OK ({devices}, {broker}, HTTP port {}, data in {})",
                file.display(),
                cfg.server.port,
                cfg.storage.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn up(a: UpArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&a)?;
    let _log = logging::init(&cfg.logging)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(fieldlab_topology::up(cfg, shutdown_signal(), |_| {}))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (docker stop, Kubernetes).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
