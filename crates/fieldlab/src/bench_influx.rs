//! `fieldlab bench influx`: arguments and the call into `fieldlab_topology::bench_influx`,
//! which starts its own influxd in a temporary directory.

use clap::Args;
use fieldlab_core::config::{FsyncPolicy, LogFormat};
use std::process::ExitCode;

#[derive(Args)]
pub struct InfluxArgs {
    /// Messages per ingest run (each of --fields points).
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
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
            publishers: a.publishers.max(1),
            runs: a.runs.max(1),
            fsync: a.fsync,
        },
        series: a.series.max(1),
        queries: a.queries.max(1),
    };
    println!(
        "bench influx: ingest {} messages x {} fields, {} publishers/writers, wal_fsync={}, {} runs; {} day-series; {} queries",
        a.messages, b.ingest.fields, b.ingest.publishers, a.fsync.as_str(), b.ingest.runs, b.series, b.queries
    );
    tokio::runtime::Runtime::new()?.block_on(fieldlab_topology::bench_influx::run(&b))?;
    Ok(ExitCode::SUCCESS)
}
