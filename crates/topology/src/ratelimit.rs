//! Rate limiting, wired: the limiter of `fieldlab up`, `fieldlab ratelimit serve` (the service
//! alone, for teams that only need that), and `fieldlab bench ratelimit`.
//!
//! The benchmark measures each figure against a named peer in the same run:
//! - in-process decisions/s against the `governor` crate (same quota, keys and threads);
//! - Redis-backed checks/s against `redis-benchmark` running EVALSHA of a trivial script on the
//!   same Redis (the physical limit of one Redis), with the same number of requests in flight;
//! - HTTP `POST /api/ratelimit/check` latency p50/p99 and throughput with `wrk`.

use anyhow::Context;
use fieldlab_core::config::{Config, FailMode, RatelimitBackend, RatelimitConfig};
use fieldlab_ratelimit::memory::MemoryBackend;
use fieldlab_ratelimit::redis::RedisBackend;
use fieldlab_ratelimit::{Algorithm, Limit, Limiter, LimiterSettings, Policy, RatelimitMetrics};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limiter for `cfg`, its metrics registered; admin changes persist in the data dir.
pub fn limiter(cfg: &Config, registry: &mut Registry) -> anyhow::Result<Limiter> {
    let metrics = RatelimitMetrics::default();
    metrics.register(registry);
    Limiter::new(
        LimiterSettings {
            config: cfg.ratelimit.clone(),
            state_dir: Some(cfg.storage.data_dir.clone()),
        },
        metrics,
    )
    .map_err(|e| anyhow::anyhow!("rate limiting: {e}"))
}

/// The ingest hook of `ratelimit.ingest` (None when not configured): one unit per message per
/// device; a refusal quarantines the message as "rate limited".
pub fn ingest_admit(limiter: &Limiter) -> Option<fieldlab_ingest::Admit> {
    let guard = limiter.ingest_guard()?;
    Some(fieldlab_ingest::Admit(Arc::new(move |device: String| {
        let g = guard.clone();
        Box::pin(async move { g.admit(&device).await })
    })))
}

/// `fieldlab ratelimit serve`: the service API, health and metrics on `server.host:port`.
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let limiter = limiter(&cfg, &mut registry)?;
    // Always authenticated (whatever `auth.enabled` says): the service is for other teams'
    // services, over a network. Same users file, secrets and OAuth2 settings as `fieldlab up`.
    let auth = fieldlab_auth::Authenticator::new(&cfg.auth, &cfg.storage.data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let (users, keys) = auth
        .users()
        .current()
        .map_or((0, 0), |f| (f.users.len(), f.keys.len()));
    let data = cfg.storage.data_dir.display();
    let auth_line = if users + keys == 0 {
        format!(
            "on — no users or API keys yet: `fieldlab users add NAME --role admin --data-dir {data}` \
             (config), `fieldlab users key add NAME --role viewer --data-dir {data}` (checks)"
        )
    } else {
        format!(
            "on ({users} users, {keys} API keys); checks need a token or key, config needs admin"
        )
    };
    let bind = format!("{}:{}", cfg.server.host, cfg.server.port);
    let listener = tokio::net::TcpListener::bind(&bind).await.with_context(|| {
        format!("cannot listen for HTTP on {bind}; pick another port with --http-port N (0 = any free port)")
    })?;
    let addr = fieldlab_broker::connectable(listener.local_addr()?);
    let backend = match cfg.ratelimit.backend {
        RatelimitBackend::Memory => "in-process".to_string(),
        b => format!("{} at {}", b.as_str(), cfg.ratelimit.redis_url),
    };
    println!(
        "fieldlab ratelimit is up\n\
         \x20 HTTP    http://{addr}  (POST /api/ratelimit/check, /api/ratelimit/config, /api/ratelimit/stats, /metrics)\n\
         \x20 backend {backend}\n\
         \x20 rules   {data}/ratelimit/rules.json (changes made through the API)\n\
         \x20 auth    {auth_line}\n\
         Press Ctrl-C to stop."
    );
    on_ready(addr);
    let app = fieldlab_server::ratelimit::standalone(limiter, Arc::new(registry), Arc::new(auth))
        .into_make_service_with_connect_info::<SocketAddr>();
    axum_serve(listener, app, shutdown).await?;
    println!("fieldlab ratelimit: stopped");
    Ok(())
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    app: axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

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
    crate::bench::median(&xs)
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

/// A temporary redis-server (no persistence) on a free port, stopped on drop.
pub struct TempRedis {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl TempRedis {
    pub fn start() -> anyhow::Result<TempRedis> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = fieldlab_core::process::peer_command("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start redis-server; install it (apt-get install redis-server) or pass --redis-url")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(TempRedis {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        let out = fieldlab_core::process::peer_command("redis-benchmark")
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
        fieldlab_core::config::RatelimitPolicySpec {
            limits: vec![fieldlab_core::config::RatelimitLimitSpec {
                algorithm: "fixed_window".into(),
                limit: 10,
                period: "1h".into(),
                burst: None,
                max_delay: None,
            }],
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
    let server = tokio::spawn(serve(
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
            let out = tokio::process::Command::from(fieldlab_core::process::peer_command("wrk"))
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
