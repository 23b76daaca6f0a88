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
use std::process::{Command, Stdio};
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
        let child = Command::new("redis-server")
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

/// Redis: fieldlab checks/s (token bucket script, `concurrency` in flight on one multiplexed
/// connection) vs `redis-benchmark -c concurrency -P 1 EVALSHA <return 1>`.
pub async fn bench_redis(b: &RatelimitBench, url: &str) -> anyhow::Result<(f64, f64, f64)> {
    let (host, port) = host_port(url)?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut conn)
        .await?;
    let backend =
        Arc::new(RedisBackend::new(url, None, Duration::from_secs(5)).map_err(anyhow::Error::msg)?);
    let policy = Arc::new(Policy::single(
        "bench",
        Limit::new(Algorithm::TokenBucket, 1000, 1000).with_burst(1000),
    ));
    // Warm up (loads the script).
    backend.check(&policy, "warm", 1, 0, None).await?;
    let (mut ours, mut theirs, mut allowed_frac) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..b.runs {
        let per_task = b.redis_requests / b.concurrency;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..b.concurrency {
            let (backend, policy) = (backend.clone(), policy.clone());
            let keys = b.keys;
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                for i in 0..per_task {
                    let k = format!("client:{}", (i * 7 + t * 13) % keys);
                    let d = backend.check(&policy, &k, 1, 0, None).await?;
                    ok += d[0].allowed as u64;
                }
                Ok::<u64, fieldlab_ratelimit::BackendError>(ok)
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await??;
        }
        let n = per_task * b.concurrency;
        ours.push(n as f64 / t0.elapsed().as_secs_f64());
        allowed_frac = ok as f64 / n as f64;

        let out = Command::new("redis-benchmark")
            .args(["-h", &host, "-p", &port.to_string()])
            .args([
                "-c",
                &b.concurrency.to_string(),
                "-n",
                &b.redis_requests.to_string(),
                "-P",
                "1",
                "--csv",
            ])
            .args(["EVALSHA", &sha, "0"])
            .output()
            .context("cannot run redis-benchmark (apt-get install redis-tools)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rps = text
            .lines()
            .filter_map(|l| l.split(',').nth(1))
            .filter_map(|f| f.trim_matches('"').parse::<f64>().ok())
            .next()
            .with_context(|| format!("cannot read redis-benchmark output: {text}"))?;
        theirs.push(rps);
    }
    Ok((median(ours), median(theirs), allowed_frac))
}

/// HTTP: `wrk` against `fieldlab ratelimit serve` (in this process, in-process backend).
/// Returns (requests/s, p50 ms, p99 ms, non-2xx/3xx responses) medians.
pub async fn bench_http(b: &RatelimitBench) -> anyhow::Result<(f64, f64, f64, f64)> {
    let mut cfg = Config::default();
    let dir = tempfile::tempdir()?;
    cfg.storage.data_dir = dir.path().to_path_buf();
    cfg.server.port = 0;
    cfg.ratelimit = RatelimitConfig {
        backend: RatelimitBackend::Memory,
        ..RatelimitConfig::default()
    };
    cfg.ratelimit.default.fail = FailMode::Open;
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
    let probe = |with_key: bool| {
        let mut r = reqwest::Client::new()
            .post(format!("http://{addr}/api/ratelimit/check"))
            .header("content-type", "application/json")
            .body(r#"{"key":"probe","tokens":1}"#);
        if with_key {
            r = r.header("x-api-key", &key);
        }
        async move { r.send().await.map(|r| r.status().as_u16()) }
    };
    anyhow::ensure!(
        probe(false).await? == 401,
        "the service answered a check without a key"
    );
    let st = probe(true).await?;
    anyhow::ensure!(st == 200, "a check with the bench's API key answered {st}");
    let script = dir.path().join("check.lua");
    std::fs::write(
        &script,
        format!(
            "counter = 0\n\
             request = function()\n\
               counter = counter + 1\n\
               local body = '{{\"key\":\"client:' .. (counter % {}) .. '\",\"tokens\":1}}'\n\
               return wrk.format('POST', '/api/ratelimit/check', {{['Content-Type']='application/json', ['X-API-Key']='{key}'}}, body)\n\
             end\n",
            b.keys
        ),
    )?;
    let (mut rps, mut p50, mut p99, mut errs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..b.runs {
        let out = tokio::process::Command::new("wrk")
            .args([
                "-t",
                &b.threads.to_string(),
                "-c",
                &b.concurrency.to_string(),
            ])
            .args(["-d", &format!("{}s", b.wrk_duration_s), "--latency", "-s"])
            .arg(&script)
            .arg(format!("http://{addr}"))
            .output()
            .await
            .context("cannot run wrk (apt-get install wrk)")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |prefix: &str| -> Option<String> {
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        };
        rps.push(
            field("Requests/sec:")
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("cannot read wrk output: {text}"))?,
        );
        p50.push(field("50%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN));
        p99.push(field("99%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN));
        // wrk counts 429 as "Non-2xx or 3xx responses"; with 100/min per key most are 429s,
        // which is the point: a rejection costs the same path as an allowance.
        errs.push(
            text.lines()
                .find(|l| l.contains("Non-2xx"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0),
        );
    }
    let _ = tx.send(());
    let _ = server.await;
    Ok((median(rps), median(p50), median(p99), median(errs)))
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
    fn wrk_units() {
        assert_eq!(super::wrk_ms("1.50ms"), 1.5);
        assert_eq!(super::wrk_ms("500.00us"), 0.5);
        assert_eq!(super::wrk_ms("2.00s"), 2000.0);
    }
}
