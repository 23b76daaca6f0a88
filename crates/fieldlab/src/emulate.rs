//! `fieldlab emulate`: load mode against any broker, with progress and a final report.

use clap::Args;
use fieldlab_core::config::{parse_broker_url, Qos};
use fieldlab_emulator::{ConnectionMode, DeviceSpec, MqttProtocol};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct EmulateArgs {
    /// Broker to load, e.g. mqtt://localhost:1883, or mqtts://host:8883 for TLS.
    #[arg(long)]
    broker: String,
    /// TLS: PEM CA bundle the broker's certificate must chain to (default: the system's
    /// trust store). Needs an mqtts:// broker.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS: PEM client certificate (with --key), for brokers that require one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// TLS: PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Devices from a YAML file (`devices: [...]` as in the legacy emulator's devices.yaml, or a list).
    #[arg(long, conflicts_with = "count")]
    devices: Option<PathBuf>,
    /// Or this many generated devices.
    #[arg(long)]
    count: Option<usize>,
    /// Type of generated devices.
    #[arg(long = "type", default_value = "TemperatureSensor")]
    device_type: String,
    /// Milliseconds between two messages of one device (generated devices).
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    /// MQTT QoS of the devices' messages.
    #[arg(long, default_value = "1", value_parser = crate::word_parser::<Qos>())]
    qos: Qos,
    /// MQTT protocol of the device connections.
    #[arg(long, default_value = "3.1.1", value_parser = crate::word_parser::<MqttProtocol>())]
    protocol: MqttProtocol,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Shared connections instead of one per device (0 = one per device). For 10k+ devices.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    #[arg(long, env = "MQTT_USERNAME")]
    username: Option<String>,
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn load_fleet(p: &PathBuf) -> anyhow::Result<Vec<DeviceSpec>> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let list = v.get("devices").cloned().unwrap_or(v);
    let fleet: Vec<DeviceSpec> =
        serde_yaml::from_value(list).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    fieldlab_emulator::validate_fleet(&fleet).map_err(|(k, m)| {
        let k = k.replace("devices.fleet", "devices");
        anyhow::anyhow!("{}: key `{k}`: {m}", p.display())
    })?;
    Ok(fleet)
}

pub fn run(a: EmulateArgs) -> anyhow::Result<ExitCode> {
    let b = parse_broker_url(&a.broker).map_err(|m| anyhow::anyhow!("--broker: {m}"))?;
    let tls = match (b.tls, &a.ca, &a.cert) {
        (true, _, _) => Some(
            fieldlab_emulator::tls::client_config(&fieldlab_topology::config::MqttTlsConfig {
                ca_file: a.ca.clone(),
                cert_file: a.cert.clone(),
                key_file: a.key.clone(),
                server_name: None,
            })
            .map_err(|e| {
                let flag = match e.key.as_str() {
                    "ca_file" => "--ca",
                    "cert_file" => "--cert",
                    "key_file" => "--key",
                    _ => "--broker",
                };
                anyhow::anyhow!("{flag}: {}", e.message)
            })?,
        ),
        (false, Some(_), _) | (false, _, Some(_)) => {
            anyhow::bail!("--ca/--cert/--key are for TLS; write the broker as mqtts://HOST:PORT")
        }
        _ => None,
    };
    let fleet = match (&a.devices, a.count) {
        (Some(p), _) => load_fleet(p)?,
        (None, Some(n)) if n > 0 => {
            if fieldlab_emulator::model::type_info(&a.device_type).is_none() {
                anyhow::bail!(
                    "--type: unknown device type `{}`; see `fieldlab devices types`",
                    a.device_type
                );
            }
            fieldlab_emulator::load::generated_fleet(n, &a.device_type, "load", a.interval.max(1))
        }
        _ => anyhow::bail!("give --count N (N > 0) or --devices FILE"),
    };
    let mut s = fieldlab_emulator::EmulatorSettings::new(b.host.clone(), b.port);
    s.qos = a.qos;
    s.protocol = a.protocol;
    s.seed = a.seed;
    s.username = a.username;
    s.password = a.password;
    s.tls = tls;
    if a.connections > 0 {
        s.connection = ConnectionMode::Shared;
        s.shared_connections = a.connections.div_ceil(s.shards.max(1));
    }
    eprintln!(
        "emulate: {} devices -> {} (QoS {}, {}), {} s",
        fleet.len(),
        a.broker,
        a.qos.level(),
        if a.connections > 0 {
            format!("{} shared connections", a.connections)
        } else {
            "one connection per device".into()
        },
        a.duration
    );
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(fieldlab_emulator::load::run(
        fieldlab_emulator::load::LoadOptions {
            settings: s,
            fleet,
            duration: Duration::from_secs_f64(a.duration.max(0.1)),
            progress: true,
        },
    ))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
