//! `fieldlab ratelimit serve` and `fieldlab bench ratelimit`: argument parsing and wiring only;
//! the service and the benchmark live in `fieldlab-topology::ratelimit`.

use clap::{Args, Subcommand};
use fieldlab_core::config::{Config, RatelimitBackend};
use fieldlab_topology::ratelimit as rl;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RatelimitCmd {
    /// Run only the rate-limit service (POST /api/ratelimit/check, config, stats, /metrics).
    ///
    /// Always authenticated, whatever auth.enabled says: a check needs an API key or token of
    /// any role, configuration needs an admin. Make them with `fieldlab users key add NAME
    /// --role viewer` / `fieldlab users add NAME --role admin` in the same --data-dir.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// fieldlab.yaml to load (its `ratelimit`, `server`, `storage.data_dir` and `logging` sections).
    #[arg(long, env = "FIELDLAB_CONFIG")]
    config: Option<PathBuf>,
    /// Where rules set through the API are kept (ratelimit/rules.json). Default ./data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP port; 0 picks a free one and prints it. Default 8080.
    #[arg(long)]
    http_port: Option<u16>,
    /// memory | redis | hybrid.
    #[arg(long)]
    backend: Option<RatelimitBackend>,
    /// Redis URL for the redis and hybrid backends (also REDIS_URL).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Threads (in-process; wrk -t).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// In-process decisions per run.
    #[arg(long, default_value_t = 4_000_000)]
    decisions: usize,
    /// Requests in flight for Redis (redis-benchmark -c) and HTTP (wrk -c).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Redis checks per run.
    #[arg(long, default_value_t = 200_000)]
    redis_requests: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    wrk_seconds: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Use this Redis instead of starting a temporary redis-server.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Only these parts: memory, redis, http (comma-separated). Default all.
    #[arg(long, value_delimiter = ',', default_value = "memory,redis,http")]
    only: Vec<String>,
}

pub fn run(cmd: RatelimitCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RatelimitCmd::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(
        a.config.as_deref(),
        |k| std::env::var(k).ok(),
        std::env::vars(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(d) = a.data_dir {
        cfg.storage.data_dir = d;
    }
    if let Some(p) = a.http_port {
        cfg.server.port = p;
    }
    if let Some(b) = a.backend {
        cfg.ratelimit.backend = b;
    }
    if let Some(u) = a.redis_url {
        cfg.ratelimit.redis_url = u;
    }
    crate::logging::init_stderr(cfg.logging.level.as_str(), cfg.logging.format);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(rl::serve(cfg, crate::shutdown_signal(), |_| {}))?;
    Ok(ExitCode::SUCCESS)
}

pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init_stderr("warn", fieldlab_core::config::LogFormat::Text);
    let b = rl::RatelimitBench {
        threads: a.threads.max(1),
        keys: a.keys.max(1),
        decisions: a.decisions.max(1000),
        concurrency: a.concurrency.max(1),
        redis_requests: a.redis_requests.max(1000),
        wrk_duration_s: a.wrk_seconds.max(1),
        runs: a.runs.max(1),
        redis_url: a.redis_url,
    };
    let want = |p: &str| a.only.iter().any(|o| o == p);
    println!(
        "bench ratelimit: {} threads, {} keys, {} runs (medians)",
        b.threads, b.keys, b.runs
    );
    if want("memory") {
        let (ours, gov, frac) = rl::bench_in_process(&b);
        println!(
            "in-process  GCRA 100/s burst 50 per key, {} decisions/run: fieldlab {:.0}/s, governor {:.0}/s, ratio {:.2}x ({:.0}% allowed)",
            b.decisions, ours, gov, ours / gov, frac * 100.0
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(b.threads)
        .enable_all()
        .build()?;
    if want("redis") {
        let temp;
        let url = match &b.redis_url {
            Some(u) => u.clone(),
            None => {
                temp = rl::TempRedis::start()?;
                format!("redis://127.0.0.1:{}", temp.port)
            }
        };
        let shapes = rt.block_on(rl::bench_redis(&b, &url))?;
        for r in &shapes {
            println!(
                "redis       token bucket 1000/s (state in the key's expiry), one EVALSHA of the check script per check, {} connection(s) x {} in flight: fieldlab {:.0} checks/s; redis-benchmark -c {} -P {}: EVALSHA 'return 1' {:.0}/s, EVALSHA of the same check script {:.0}/s, EVALSHA of the floor script (PTTL + SET PX, no logic) {:.0}/s; ratio {:.2}x vs 'return 1', {:.2}x vs the same script, {:.2}x vs the floor (the floor itself is {:.2}x of 'return 1') ({:.0}% allowed)",
                r.connections,
                r.pipeline,
                r.ours,
                r.connections,
                r.pipeline,
                r.trivial,
                r.same_script,
                r.floor,
                r.ours / r.trivial,
                r.ours / r.same_script,
                r.ours / r.floor,
                r.floor / r.trivial,
                r.allowed_frac * 100.0
            );
            if let Some(x) = r.ours_string_state {
                println!(
                    "redis       token bucket 999/s (not a whole ms per token: state in a string, clock by TIME), {} connection(s) x {} in flight: fieldlab {:.0} checks/s, {:.2}x vs 'return 1'",
                    r.connections, r.pipeline, x, x / r.trivial
                );
            }
        }
        // Across the two shapes: one fieldlab instance as deployed (one multiplexed connection,
        // its concurrent checks pipelined on it) against redis-benchmark's default shape (each
        // of as many connections with one request in flight). The same requests in flight, each
        // client in its own way of carrying them; not like for like, so printed apart.
        if let (Some(many), Some(one)) = (
            shapes.iter().find(|r| r.pipeline == 1),
            shapes.iter().find(|r| r.connections == 1 && r.pipeline > 1),
        ) {
            println!(
                "redis       across shapes: fieldlab 1 connection x {} in flight {:.0} checks/s vs redis-benchmark -c {} -P 1 EVALSHA 'return 1' {:.0}/s: {:.2}x (not like for like: the lines above are)",
                one.pipeline,
                one.ours,
                many.connections,
                many.trivial,
                one.ours / many.trivial
            );
        }
    }
    if want("http") {
        for r in rt.block_on(rl::bench_http(&b))? {
            let what = match r.name {
                "spread" => format!("{} keys, allowed path", b.keys),
                _ => "one key limited to 10/h, rejected path".to_string(),
            };
            println!(
                "http        wrk -t {} -c {} -d {}s POST /api/ratelimit/check (in-process backend; {what}): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({:.0} of {:.0} answers were 429)",
                b.threads, b.concurrency, b.wrk_duration_s, r.rps, r.p50_ms, r.p99_ms, r.non2xx, r.requests
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
