//! `fieldlab bench ratelimit`: each figure against a named peer in the same run:
//! - in-process decisions/s against the `governor` crate (same quota, keys and threads);
//! - Redis-backed checks/s against `redis-benchmark` running EVALSHA of a trivial script on the
//!   same Redis (the physical limit of one Redis), with the same number of requests in flight;
//! - HTTP `POST /api/ratelimit/check` latency p50/p99 and throughput with `wrk`.

use anyhow::Context;
use clap::Args;
use fieldlab_ratelimit::memory::MemoryBackend;
use fieldlab_ratelimit::redis::RedisBackend;
use fieldlab_ratelimit::{Algorithm, Limit, Policy};
use fieldlab_ratelimit::{FailMode, RatelimitBackend, RatelimitConfig};
use fieldlab_topology::config::Config;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `fieldlab bench ratelimit` runs.
#[derive(Debug, Clone)]
pub struct RatelimitBench {
    pub threads: usize,
    pub keys: usize,
    pub decisions: usize,
    /// Requests in flight for the Redis comparison (redis-benchmark -c).
    pub concurrency: usize,
    pub redis_requests: usize,
    pub wrk_duration_s: u64,
    pub runs: usize,
    /// Use this Redis instead of starting a temporary redis-server.
    pub redis_url: Option<String>,
}

fn median(xs: Vec<f64>) -> f64 {
    crate::stats::median(&xs)
}

/// In-process: fieldlab's sharded GCRA vs governor's keyed GCRA, same quota, keys, threads.
/// Returns (fieldlab decisions/s, governor decisions/s, allowed fraction) per run.
pub fn bench_in_process(b: &RatelimitBench) -> (f64, f64, f64) {
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    let keys: Arc<Vec<String>> = Arc::new((0..b.keys).map(|i| format!("client:{i}")).collect());
    let per_thread = b.decisions / b.threads;
    // 100 per second with a burst of 50, per key: both allow and reject in the run.
    let quota =
        Quota::per_second(NonZeroU32::new(100).unwrap()).allow_burst(NonZeroU32::new(50).unwrap());
    let policy = Arc::new(Policy::single(
        "bench",
        Limit::new(Algorithm::Gcra, 100, 1000).with_burst(50),
    ));
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut allowed_frac = 0.0;
    for _ in 0..b.runs {
        let mem = Arc::new(MemoryBackend::with_capacity(b.keys * 2));
        let t0 = Instant::now();
        let allowed: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..b.threads)
                .map(|t| {
                    let (mem, keys, policy) = (mem.clone(), keys.clone(), policy.clone());
                    s.spawn(move || {
                        let mut ok = 0u64;
                        for i in 0..per_thread {
                            let k = &keys[(i * 7 + t * 13) % keys.len()];
                            let now = fieldlab_ratelimit::now_ms();
                            ok += mem.check(&policy, k, 1, now, 0)[0].allowed as u64;
                        }
                        ok
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        ours.push((per_thread * b.threads) as f64 / t0.elapsed().as_secs_f64());
        allowed_frac = allowed as f64 / (per_thread * b.threads) as f64;

        let gov = Arc::new(RateLimiter::keyed(quota));
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..b.threads {
                let (gov, keys) = (gov.clone(), keys.clone());
                s.spawn(move || {
                    let mut ok = 0u64;
                    for i in 0..per_thread {
                        let k = &keys[(i * 7 + t * 13) % keys.len()];
                        ok += gov.check_key(k).is_ok() as u64;
                    }
                    std::hint::black_box(ok);
                });
            }
        });
        theirs.push((per_thread * b.threads) as f64 / t0.elapsed().as_secs_f64());
    }
    (median(ours), median(theirs), allowed_frac)
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let info: redis::ConnectionInfo = url.parse().context("not a Redis URL")?;
    match info.addr {
        redis::ConnectionAddr::Tcp(h, p) => Ok((h, p)),
        _ => anyhow::bail!("redis-benchmark needs a TCP Redis URL"),
    }
}

/// One Redis comparison: fieldlab's checks/s and redis-benchmark's, in the same shape.
#[derive(Debug, Clone)]
pub struct RedisShape {
    /// Connections (redis-benchmark -c).
    pub connections: usize,
    /// Requests in flight per connection (redis-benchmark -P).
    pub pipeline: usize,
    /// fieldlab checks/s (token bucket, the real check script, one EVALSHA per check).
    pub ours: f64,
    /// fieldlab checks/s for a token bucket whose time per token is not a whole number of ms
    /// (999 per second): its state is a string, read and written with the clock (TIME + GET +
    /// SET PX). Measured in the first shape only.
    pub ours_string_state: Option<f64>,
    /// redis-benchmark EVALSHA of `return 1` (the physical limit).
    pub trivial: f64,
    /// redis-benchmark EVALSHA of fieldlab's own check script with the same arguments (the
    /// best any client can do with this script).
    pub same_script: f64,
    /// redis-benchmark EVALSHA of [`FLOOR_SCRIPT`]: the least any correct check can do
    /// (read the clock and the state, write the state, reply one integer).
    pub floor: f64,
    pub allowed_frac: f64,
}

/// The least a correct distributed check does on the server, with no decision logic at all:
/// one read of the clock and the key's state together (PTTL: how far the state's instant is
/// ahead of the server clock, as fieldlab keeps a token bucket or GCRA limit), one write of it,
/// one integer back (run with the same arguments as fieldlab's check of one unit: the key).
/// Its rate bounds what any check script can reach on a given Redis.
pub const FLOOR_SCRIPT: &str =
    "redis.call('PTTL', KEYS[1]) redis.call('SET', KEYS[1], '', 'PX', 1000) return 1";

/// Redis: fieldlab checks/s vs `redis-benchmark` on the same Redis, like for like, in two
/// shapes with `concurrency` checks in flight:
/// - `concurrency` clients, one connection each, one check in flight per connection, against
///   `redis-benchmark -c concurrency -P 1`;
/// - one multiplexed connection (what one fieldlab instance uses) with `concurrency` checks in
///   flight, against `redis-benchmark -c 1 -P concurrency`.
///
/// Every fieldlab check is one EVALSHA of the real check script (token bucket, Redis clock):
/// one round trip, no batching of decisions. The token bucket is fieldlab's default algorithm,
/// 1000 per second: a whole number of ms per token, so its state is the key's expiry (see
/// `fieldlab_ratelimit::redis`); the first shape also measures a bucket of 999 per second,
/// whose state is a string with the clock read by TIME.
pub async fn bench_redis(b: &RatelimitBench, url: &str) -> anyhow::Result<Vec<RedisShape>> {
    let (host, port) = host_port(url)?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let trivial_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut conn)
        .await?;
    let floor_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(FLOOR_SCRIPT)
        .query_async(&mut conn)
        .await?;
    let policy = Arc::new(Policy::single(
        "bench",
        Limit::new(Algorithm::TokenBucket, 1000, 1000).with_burst(1000),
    ));
    let string_policy = Arc::new(Policy::single(
        "bench-string",
        Limit::new(Algorithm::TokenBucket, 999, 1000).with_burst(1000),
    ));
    let new_backend = || -> anyhow::Result<RedisBackend> {
        RedisBackend::new(url, None, Duration::from_secs(5)).map_err(anyhow::Error::msg)
    };
    let probe = new_backend()?;
    // Exactly the command a fieldlab check sends (the script specialised to this limit), with
    // redis-benchmark's random 12-digit key part in the key.
    let check_args: Vec<String> = probe
        .command(&policy, "__rand_int__", 1, 0, None)
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Arg::Cursor => String::new(),
        })
        .collect();
    anyhow::ensure!(
        check_args.len() == 4 && check_args[0] == "EVALSHA",
        "unexpected check command {check_args:?}"
    );
    let key_pattern = check_args[3].clone();
    let redis_benchmark = |c: usize, p: usize, args: Vec<String>| -> anyhow::Result<f64> {
        let out = fieldlab_testkit::peer_command("redis-benchmark")
            .args(["-h", &host, "-p", &port.to_string()])
            .args(["-c", &c.to_string(), "-P", &p.to_string()])
            .args(["-n", &b.redis_requests.to_string()])
            .args(["-r", &b.keys.to_string(), "--csv"])
            .args(args)
            .output()
            .context("cannot run redis-benchmark (apt-get install redis-tools)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| l.split(',').nth(1))
            .filter_map(|f| f.trim_matches('"').parse::<f64>().ok())
            .next()
            .with_context(|| format!("cannot read redis-benchmark output: {text}"))
    };
    let mut shapes = Vec::new();
    for (connections, pipeline) in [(b.concurrency, 1), (1, b.concurrency)] {
        // One backend per connection: each carries exactly `pipeline` checks in flight.
        let backends: Vec<Arc<RedisBackend>> = (0..connections)
            .map(|_| new_backend().map(Arc::new))
            .collect::<anyhow::Result<_>>()?;
        for be in &backends {
            // Connects and loads the script.
            be.check(&policy, "warm", 1, 0, None).await?;
            be.check(&string_policy, "warm", 1, 0, None).await?;
        }
        let (mut ours, mut ours_string, mut trivial, mut same, mut floor, mut frac) =
            (vec![], vec![], vec![], vec![], vec![], 0.0);
        for _ in 0..b.runs {
            let (rate, f) = run_checks(b, &backends, pipeline, &policy).await?;
            ours.push(rate);
            frac = f;
            if shapes.is_empty() {
                ours_string.push(run_checks(b, &backends, pipeline, &string_policy).await?.0);
            }
            trivial.push(redis_benchmark(
                connections,
                pipeline,
                vec!["EVALSHA".into(), trivial_sha.clone(), "0".into()],
            )?);
            same.push(redis_benchmark(connections, pipeline, check_args.clone())?);
            floor.push(redis_benchmark(
                connections,
                pipeline,
                vec![
                    "EVALSHA".into(),
                    floor_sha.clone(),
                    "1".into(),
                    key_pattern.clone(),
                ],
            )?);
        }
        shapes.push(RedisShape {
            connections,
            pipeline,
            ours: median(ours),
            ours_string_state: (!ours_string.is_empty()).then(|| median(ours_string)),
            trivial: median(trivial),
            same_script: median(same),
            floor: median(floor),
            allowed_frac: frac,
        });
    }
    Ok(shapes)
}

/// One run of fieldlab's checks for `policy`: `pipeline` tasks per backend, each checking one
/// unit at a time over `b.keys` keys. Returns (checks/s, allowed fraction).
async fn run_checks(
    b: &RatelimitBench,
    backends: &[Arc<RedisBackend>],
    pipeline: usize,
    policy: &Arc<Policy>,
) -> anyhow::Result<(f64, f64)> {
    let per_task = b.redis_requests / (backends.len() * pipeline);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (c, be) in backends.iter().enumerate() {
        for p in 0..pipeline {
            let (be, policy) = (be.clone(), policy.clone());
            let (t, keys) = (c * pipeline + p, b.keys);
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                let mut k = String::with_capacity(24);
                for i in 0..per_task {
                    use std::fmt::Write;
                    k.clear();
                    let _ = write!(k, "client:{}", (i * 7 + t * 13) % keys);
                    let d = be.check(&policy, &k, 1, 0, None).await?;
                    ok += d[0].allowed as u64;
                }
                Ok::<u64, fieldlab_ratelimit::BackendError>(ok)
            }));
        }
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await??;
    }
    let n = per_task * backends.len() * pipeline;
    Ok((n as f64 / t0.elapsed().as_secs_f64(), ok as f64 / n as f64))
}

/// One `wrk` run of the HTTP bench (medians over the runs).
#[derive(Debug, Clone)]
pub struct HttpRun {
    /// `spread`: keys spread over `keys` (almost all allowed); `limited`: every request for
    /// one key whose limit is 10 per hour (almost all 429).
    pub name: &'static str,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: f64,
    /// Answers that were not 2xx (all 429s: the probe made sure auth passes).
    pub non2xx: f64,
}

/// HTTP: `wrk` against `fieldlab ratelimit serve` (in this process, in-process backend), on
/// the allowed path (`spread`) and the rejected path (`limited`).
pub async fn bench_http(b: &RatelimitBench) -> anyhow::Result<Vec<HttpRun>> {
    let mut cfg = Config::default();
    let dir = tempfile::tempdir()?;
    cfg.storage.data_dir = dir.path().to_path_buf();
    cfg.server.port = 0;
    cfg.ratelimit = RatelimitConfig {
        backend: RatelimitBackend::Memory,
        ..RatelimitConfig::default()
    };
    cfg.ratelimit.default.fail = FailMode::Open;
    let limited_key = "bench:limited";
    cfg.ratelimit.keys.insert(
        limited_key.into(),
        fieldlab_ratelimit::RatelimitPolicySpec {
            limits: vec![fieldlab_ratelimit::RatelimitLimitSpec::new(
                fieldlab_ratelimit::Algorithm::FixedWindow,
                10,
                fieldlab_core::config::HumanDuration::from_secs(3600),
            )],
            ..Default::default()
        },
    );
    // The service authenticates every check: wrk sends an API key, as a client service would.
    let key = fieldlab_auth::UserDb::open(dir.path())
        .update(|f| f.add_key("bench", &[fieldlab_core::Role::Viewer]))
        .map_err(|e| anyhow::anyhow!("cannot make an API key for wrk: {e}"))?
        .secret;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (atx, arx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(fieldlab_topology::ratelimit::serve(
        cfg,
        async {
            let _ = rx.await;
        },
        move |a| {
            let _ = atx.send(a);
        },
    ));
    let addr = arx.await?;
    // wrk only counts non-2xx answers: make sure they would be 429s, not 401s.
    let probe = |with_key: bool, k: &str| {
        let mut r = reqwest::Client::new()
            .post(format!("http://{addr}/api/ratelimit/check"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"key":"{k}","tokens":1}}"#));
        if with_key {
            r = r.header("x-api-key", &key);
        }
        async move { r.send().await.map(|r| r.status().as_u16()) }
    };
    anyhow::ensure!(
        probe(false, "probe").await? == 401,
        "the service answered a check without a key"
    );
    let st = probe(true, "probe").await?;
    anyhow::ensure!(st == 200, "a check with the bench's API key answered {st}");
    let script = |name: &str, body_key: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.path().join(format!("{name}.lua"));
        std::fs::write(
            &path,
            format!(
                "counter = 0\n\
                 request = function()\n\
                   counter = counter + 1\n\
                   local body = '{{\"key\":\"' .. {body_key} .. '\",\"tokens\":1}}'\n\
                   return wrk.format('POST', '/api/ratelimit/check', {{['Content-Type']='application/json', ['X-API-Key']='{key}'}}, body)\n\
                 end\n"
            ),
        )?;
        Ok(path)
    };
    let spread = script("spread", &format!("'client:' .. (counter % {})", b.keys))?;
    let limited = script("limited", &format!("'{limited_key}'"))?;
    let mut runs = Vec::new();
    for (name, path) in [("spread", spread), ("limited", limited)] {
        let (mut rps, mut p50, mut p99, mut reqs, mut errs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..b.runs {
            let out = tokio::process::Command::from(fieldlab_testkit::peer_command("wrk"))
                .args([
                    "-t",
                    &b.threads.to_string(),
                    "-c",
                    &b.concurrency.to_string(),
                ])
                .args(["-d", &format!("{}s", b.wrk_duration_s), "--latency", "-s"])
                .arg(&path)
                .arg(format!("http://{addr}"))
                .output()
                .await
                .context("cannot run wrk (apt-get install wrk)")?;
            let w = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
            rps.push(w.0);
            p50.push(w.1);
            p99.push(w.2);
            reqs.push(w.3);
            errs.push(w.4);
        }
        runs.push(HttpRun {
            name,
            rps: median(rps),
            p50_ms: median(p50),
            p99_ms: median(p99),
            requests: median(reqs),
            non2xx: median(errs),
        });
    }
    let _ = tx.send(());
    let _ = server.await;
    Ok(runs)
}

/// (requests/s, p50 ms, p99 ms, requests, non-2xx/3xx answers) from wrk's `--latency` output.
fn parse_wrk(text: &str) -> anyhow::Result<(f64, f64, f64, f64, f64)> {
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read wrk output: {text}"))?;
    let requests = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read wrk's request count: {text}"))?;
    // wrk counts 429 as "Non-2xx or 3xx responses" (absent when there were none).
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Ok((
        rps,
        field("50%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN),
        field("99%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN),
        requests,
        non2xx,
    ))
}

/// wrk prints `1.23ms`, `456.00us`, `1.02s`.
fn wrk_ms(v: &str) -> f64 {
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    if let Some(x) = v.strip_suffix("us") {
        num(x) / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        num(x)
    } else if let Some(x) = v.strip_suffix('s') {
        num(x) * 1000.0
    } else {
        num(v)
    }
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

/// `fieldlab bench ratelimit`.
pub fn cmd(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let b = RatelimitBench {
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
        let (ours, gov, frac) = bench_in_process(&b);
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
                temp = fieldlab_testkit::TempRedis::start()?;
                format!("redis://127.0.0.1:{}", temp.port)
            }
        };
        let shapes = rt.block_on(bench_redis(&b, &url))?;
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
        for r in rt.block_on(bench_http(&b))? {
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

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_is_read() {
        let text = "Running 2s test @ http://127.0.0.1:1\n  2 threads and 50 connections\n  \
            Latency Distribution\n     50%  312.00us\n     75%  400.00us\n     90%  1.10ms\n     \
            99%    2.50ms\n  40000 requests in 2.00s, 9.00MB read\n  \
            Non-2xx or 3xx responses: 39990\nRequests/sec:  20000.00\nTransfer/sec:      4.50MB\n";
        let (rps, p50, p99, n, non2xx) = super::parse_wrk(text).unwrap();
        assert_eq!((rps, n, non2xx), (20000.0, 40000.0, 39990.0));
        assert_eq!((p50, p99), (0.312, 2.5));
        assert!(super::parse_wrk("garbage").is_err());
    }

    #[test]
    fn wrk_units() {
        assert_eq!(super::wrk_ms("1.50ms"), 1.5);
        assert_eq!(super::wrk_ms("500.00us"), 0.5);
        assert_eq!(super::wrk_ms("2.00s"), 2000.0);
    }
}
