//! `fieldlab bench influx`: arguments and the call into `fieldlab_topology::bench_influx`,
//! which starts its own influxd in a temporary directory.

use clap::Args;
use fieldlab_core::config::{FsyncPolicy, LogFormat};
use std::process::ExitCode;

#[derive(Args)]
pub struct InfluxArgs {
    /// Readings per ingest run (each of --fields points).
    #[arg(long, alias = "readings", default_value_t = 50_000)]
    messages: usize,
    /// Readings per MQTT message for the first fieldlab run (1 = a device's message).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Message encoding for the first fieldlab run: json | line.
    #[arg(long, default_value = "json")]
    format: fieldlab_topology::bench::BenchFormat,
    /// Ingest's MQTT connections (shared subscription when > 1).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Skip the second fieldlab run (gateway batches: InfluxDB's request bodies as MQTT messages).
    #[arg(long)]
    no_gateway: bool,
    #[arg(long, default_value_t = 10)]
    fields: usize,
    /// Concurrent MQTT publishers, and concurrent HTTP writers to InfluxDB.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// fieldlab's WAL fsync policy: always | interval | never.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Series of one day at 1 Hz for the bytes/point and query comparisons.
    #[arg(long, default_value_t = 10)]
    series: usize,
    /// Queries per side for the p50 latency.
    #[arg(long, default_value_t = 200)]
    queries: usize,
}

pub fn run(a: InfluxArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_stderr("warn", LogFormat::Text);
    let b = fieldlab_topology::bench_influx::InfluxBench {
        ingest: fieldlab_topology::bench::IngestBench {
            messages: a.messages,
            fields: a.fields.max(1),
            batch: a.batch.max(1),
            format: a.format,
            connections: a.connections.max(1),
            publishers: a.publishers.max(1),
            runs: a.runs.max(1),
            fsync: a.fsync,
            acl: false,
        },
        gateway: !a.no_gateway,
        series: a.series.max(1),
        queries: a.queries.max(1),
    };
    println!(
        "bench influx: ingest {} readings x {} fields, {} publishers/writers, wal_fsync={}, {} runs; {} day-series; {} queries",
        a.messages, b.ingest.fields, b.ingest.publishers, a.fsync.as_str(), b.ingest.runs, b.series, b.queries
    );
    tokio::runtime::Runtime::new()?.block_on(fieldlab_topology::bench_influx::run(&b))?;
    Ok(ExitCode::SUCCESS)
}
