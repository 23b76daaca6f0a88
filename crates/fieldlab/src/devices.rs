//! `fieldlab devices ...`: the device catalog, and control of a running fieldlab over HTTP.
//!
//! `types` reads the catalog locally; every other subcommand talks to a running instance
//! (`--url`, default `http://127.0.0.1:8080`, or `FIELDLAB_URL`) through the same REST API a
//! web UI would use, and prints what it answered. Errors are the server's problem details.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List device types (built-in and from --config) with their fields and units.
    Types {
        /// fieldlab.yaml whose `devices.types` should be listed too.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// List the emulated devices of a running fieldlab.
    List(Remote),
    /// Start one device, or all with --all.
    Start(Target),
    /// Stop one device, or all with --all.
    Stop(Target),
    /// Run a configured scenario on a device (once, or looped with --loop).
    Simulate {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        device: String,
        #[arg(long)]
        scenario: String,
        #[arg(long = "loop")]
        looping: bool,
    },
    /// Inject a fault, e.g. `--kind spike --field temperature --duration 30 --param magnitude=20`.
    Fault {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        device: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        field: Option<String>,
        /// Seconds; absent: until removed.
        #[arg(long)]
        duration: Option<f64>,
        /// Extra parameters KEY=VALUE (magnitude, value, rate_per_s, offset_s, factor, multiplier, rename_to, mode).
        #[arg(long = "param")]
        params: Vec<String>,
    },
}

#[derive(Args)]
pub struct Remote {
    /// Base URL of the running fieldlab.
    #[arg(long, env = "FIELDLAB_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
}

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    remote: Remote,
    /// Device id.
    device: Option<String>,
    #[arg(long)]
    all: bool,
}

fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let c = reqwest::blocking::Client::new();
    let mut rq = c.request(method, url);
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().with_context(|| {
        format!("cannot reach fieldlab at {url}; is `fieldlab up` running (see --url)?")
    })?;
    let st = r.status();
    let text = r.text().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !st.is_success() {
        let detail = v["detail"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_string);
        anyhow::bail!("{st}: {detail}");
    }
    Ok(v)
}

/// `devices start|stop`: `verb` one device, or all of them.
fn start_stop(t: Target, verb: &str) -> anyhow::Result<()> {
    let path = t.device.map_or(verb.into(), |d| format!("{d}/{verb}"));
    let v = call(
        reqwest::Method::POST,
        &format!("{}/api/v1/devices/{path}", t.remote.url),
        None,
    )?;
    println!("{v}");
    Ok(())
}

pub fn run(cmd: DevicesCmd) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match cmd {
        DevicesCmd::Types { config } => {
            if let Some(p) = config {
                let cfg =
                    fieldlab_topology::Config::from_file(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
                fieldlab_emulator::custom::register_yaml(&cfg.devices.types)
                    .map_err(|(k, m)| anyhow::anyhow!("{}: key `{k}`: {m}", p.display()))?;
            }
            for t in fieldlab_emulator::catalog() {
                println!(
                    "{} ({})\n  {}",
                    t.name,
                    fieldlab_emulator::model::snake(t.name),
                    t.description
                );
                for f in t.fields {
                    println!("  - {:<22} {:<10} {}", f.name, f.unit, f.description);
                }
            }
        }
        DevicesCmd::List(r) => {
            let v = call(
                Method::GET,
                &format!("{}/api/v1/emulator/devices", r.url),
                None,
            )?;
            // Columns as wide as their widest cell, so long ids and types stay aligned.
            let mut rows: Vec<[String; 6]> = vec![[
                "DEVICE".into(),
                "TYPE".into(),
                "STATE".into(),
                "SEQ".into(),
                "SCENARIO".into(),
                "FAULTS".into(),
            ]];
            for d in v["devices"].as_array().into_iter().flatten() {
                let sc = d["scenario"]["name"].as_str().map_or("-".to_string(), |n| {
                    format!("{n}/{}", d["scenario"]["phase"].as_str().unwrap_or("-"))
                });
                let faults: Vec<&str> = d["faults"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["kind"].as_str())
                    .collect();
                rows.push([
                    d["device_id"].as_str().unwrap_or("").to_string(),
                    d["device_type"].as_str().unwrap_or("").to_string(),
                    d["state"].as_str().unwrap_or("").to_string(),
                    d["seq"].as_u64().map_or("-".into(), |n| n.to_string()),
                    sc,
                    if faults.is_empty() {
                        "-".into()
                    } else {
                        faults.join(",")
                    },
                ]);
            }
            let mut w = [0usize; 6];
            for r in &rows {
                for (i, c) in r.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
            for r in &rows {
                println!(
                    "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:<w4$}  {}",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    w0 = w[0],
                    w1 = w[1],
                    w2 = w[2],
                    w3 = w[3],
                    w4 = w[4]
                );
            }
            println!("{} devices", v["count"]);
        }
        DevicesCmd::Start(t) | DevicesCmd::Stop(t) if t.all == t.device.is_some() => {
            let _ = t;
            anyhow::bail!("name one device, or pass --all (not both)");
        }
        DevicesCmd::Start(t) => start_stop(t, "start")?,
        DevicesCmd::Stop(t) => start_stop(t, "stop")?,
        DevicesCmd::Simulate {
            remote,
            device,
            scenario,
            looping,
        } => {
            let v = call(
                Method::POST,
                &format!("{}/api/v1/devices/{device}/scenario", remote.url),
                Some(json!({"scenario": scenario, "loop": looping})),
            )?;
            println!(
                "{device}: scenario {} running (phase {}, loop {})",
                v["scenario"]["name"], v["scenario"]["phase"], v["scenario"]["looping"]
            );
        }
        DevicesCmd::Fault {
            remote,
            device,
            kind,
            field,
            duration,
            params,
        } => {
            let mut body = json!({"kind": kind});
            if let Some(f) = field {
                body["field"] = json!(f);
            }
            if let Some(d) = duration {
                body["duration_s"] = json!(d);
            }
            for p in params {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--param `{p}`: write KEY=VALUE"))?;
                body[k] = v.parse::<f64>().map_or_else(|_| json!(v), |n| json!(n));
                if k == "multiplier" {
                    body[k] = json!(v
                        .parse::<u32>()
                        .with_context(|| format!("--param {p}: a whole number"))?);
                }
            }
            let v = call(
                Method::POST,
                &format!("{}/api/v1/devices/{device}/faults", remote.url),
                Some(body),
            )?;
            println!(
                "{device}: fault {} ({}) injected, annotation id {}",
                v["kind"], v["field"], v["id"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
