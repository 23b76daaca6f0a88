//! fieldlab-bench: every `fieldlab bench ...` benchmark, each against its named peer in the
//! same run.
//!
//! Why it exists: benchmarks start peers (Mosquitto, InfluxDB, Redis, wrk), mint keys and
//! generate load; none of that belongs in the product crates they measure. The `fieldlab`
//! binary parses `fieldlab bench <what>` into [`BenchCmd`] and calls [`run`]; the peers come
//! from fieldlab-testkit. Not published (`publish = false`).

use clap::Subcommand;
use std::process::ExitCode;

pub mod cap;
pub mod cluster;
pub mod detect;
pub mod emulator;
pub mod influx;
pub mod ingest;
pub mod ratelimit;
pub mod soak;
pub mod stats;
pub mod store;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// fieldlab vs a real InfluxDB 1.x (started here): ingest, bytes/point, query p50.
    Influx(influx::InfluxArgs),
    /// Publish N messages of M fields through the embedded broker; print durable points/s.
    Ingest(ingest::IngestArgs),
    /// Bytes/point on disk per generator, emulator field and NAB series; query latency.
    Store(store::BenchStoreArgs),
    /// Rate-limit decisions/s vs governor, Redis checks/s vs redis-benchmark, HTTP with wrk.
    Ratelimit(ratelimit::BenchArgs),
    /// Durable readings/s of a local cluster of replicas (scripts/cluster.sh) vs one replica.
    Cluster(cluster::ClusterArgs),
    /// Proofs: prepare 1M records, bundle verification, POST /verify under wrk.
    Cap(cap::BenchCapArgs),
    /// Emulator memory (100k / 1M devices) and publish rate: embedded broker vs Mosquitto.
    Emulator(emulator::EmulatorArgs),
    /// Detector throughput (points/s, one thread) and /predict latency for a 30x3 window.
    Detect(detect::BenchArgs),
    /// A long steady load on a real `fieldlab up`: RSS, open files and ingest lag each minute.
    Soak(soak::BenchSoakArgs),
}

/// Runs one benchmark; it prints its figures on stdout.
pub fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Influx(a) => influx::cmd(a),
        BenchCmd::Ingest(a) => ingest::cmd(a),
        BenchCmd::Store(a) => store::run(a).map(|_| ExitCode::SUCCESS),
        BenchCmd::Ratelimit(a) => ratelimit::cmd(a),
        BenchCmd::Cap(a) => cap::cmd(a),
        BenchCmd::Cluster(a) => cluster::cmd(a),
        BenchCmd::Emulator(a) => emulator::cmd(a),
        BenchCmd::Detect(a) => detect::cmd(a),
        BenchCmd::Soak(a) => soak::run(a),
    }
}
