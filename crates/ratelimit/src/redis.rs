//! Redis backend: one atomic Lua script per check, on the Redis server's clock.
//!
//! Why a script: read-decide-write must be atomic across instances, or N instances allow N
//! times the limit (upstream's bug). The script (`check.lua`) runs the same integer arithmetic
//! as `algo.rs` for every limit of a policy, writes only if all pass, and is sent with EVALSHA
//! (the `redis` crate loads it on NOSCRIPT): one round trip per check. All keys of a check
//! carry the hash tag `{key}`, so they live in one Redis Cluster slot.
//!
//! Connection: a `ConnectionManager` (multiplexed, reconnects with exponential back-off). While
//! no connection can be made, checks fail fast with [`BackendError::Unavailable`] and a new
//! attempt is made at most once per back-off step (100 ms doubling up to 5 s).

use crate::algo::{Algorithm, NEVER};
use crate::{BackendError, Decision, Decisions, Policy};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::{Duration, Instant};

/// The check script, shared with tests and the benchmark.
pub const SCRIPT: &str = include_str!("check.lua");

pub struct RedisBackend {
    client: redis::Client,
    script: redis::Script,
    timeout: Duration,
    conn: tokio::sync::RwLock<Option<ConnectionManager>>,
    /// When the next connection attempt may start, and the current back-off.
    retry: Mutex<(Instant, Duration)>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl RedisBackend {
    /// A backend for `url` (`redis://[:password@]host:port[/db]`). Does not connect yet.
    pub fn new(
        url: &str,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<RedisBackend, String> {
        let mut info: redis::ConnectionInfo = url
            .parse()
            .map_err(|e| format!("`{url}` is not a Redis URL ({e}); write redis://HOST:PORT"))?;
        if let Some(p) = password {
            info.redis.password = Some(p.to_string());
        }
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        Ok(RedisBackend {
            client,
            script: redis::Script::new(SCRIPT),
            timeout,
            conn: tokio::sync::RwLock::new(None),
            retry: Mutex::new((Instant::now(), BACKOFF_MIN)),
        })
    }

    /// The SHA1 the script runs under (what `redis-benchmark` and `SCRIPT EXISTS` see).
    pub fn script_hash(&self) -> &str {
        self.script.get_hash()
    }

    async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(c) = self.conn.read().await.as_ref() {
            return Ok(c.clone());
        }
        let backing_off = || {
            let r = self.retry.lock();
            (Instant::now() < r.0).then(|| BackendError::Unavailable("waiting to reconnect".into()))
        };
        // After a failed attempt, fail fast until the back-off step is over.
        if let Some(e) = backing_off() {
            return Err(e);
        }
        // One attempt at a time; callers arriving meanwhile wait for its result.
        let mut guard = self.conn.write().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        if let Some(e) = backing_off() {
            return Err(e);
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout.max(Duration::from_millis(100)))
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_factor(BACKOFF_MIN.as_millis() as u64)
            .set_max_delay(BACKOFF_MAX.as_millis() as u64);
        match tokio::time::timeout(
            self.timeout.max(Duration::from_millis(100)) * 2,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        {
            Ok(Ok(c)) => {
                *self.retry.lock() = (Instant::now(), BACKOFF_MIN);
                tracing::info!("connected to redis");
                *guard = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => Err(self.failed("connect timed out".into())),
        }
    }

    /// Record a failed attempt: the next one waits one back-off step (doubling up to 5 s).
    fn failed(&self, why: String) -> BackendError {
        let mut r = self.retry.lock();
        r.0 = Instant::now() + r.1;
        r.1 = (r.1 * 2).min(BACKOFF_MAX);
        BackendError::Unavailable(why)
    }

    /// Redis keys of `key` under `policy`: `fieldlab:rl:{key}:<policy>:<i>:<algorithm>`.
    pub fn keys(policy: &Policy, key: &str) -> Vec<String> {
        policy
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "fieldlab:rl:{{{key}}}:{}:{i}:{}",
                    policy.name,
                    l.algorithm.as_str()
                )
            })
            .collect()
    }

    /// The script invocation of one check. `now_ms`: `None` = Redis server clock.
    pub fn invocation(
        &self,
        policy: &Policy,
        key: &str,
        n: u64,
        lease: u64,
        now_ms: Option<i64>,
    ) -> redis::ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        for k in Self::keys(policy, key) {
            inv.key(k);
        }
        inv.arg(now_ms.map_or(String::new(), |t| t.to_string()))
            .arg(n)
            .arg(lease);
        for l in &policy.limits {
            inv.arg(l.algorithm.code())
                .arg(l.limit)
                .arg(l.period_ms)
                .arg(l.burst)
                .arg(l.max_delay_ms);
        }
        inv
    }

    /// Decide `n` units for `key` (one EVALSHA). `now_ms` overrides the server clock (tests).
    pub async fn check(
        &self,
        policy: &Policy,
        key: &str,
        n: u64,
        lease: u64,
        now_ms: Option<i64>,
    ) -> Result<Decisions, BackendError> {
        let mut conn = self.connection().await?;
        let inv = self.invocation(policy, key, n, lease, now_ms);
        let res: Result<Vec<i64>, _> =
            tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| BackendError::Redis("timed out".into()))?;
        let v = res.map_err(|e| BackendError::Redis(e.to_string()))?;
        parse_reply(&v, policy.limits.len())
    }

    /// Give a concurrency lease back (one HDEL per concurrency limit, pipelined).
    pub async fn release(
        &self,
        policy: &Policy,
        key: &str,
        lease: u64,
    ) -> Result<bool, BackendError> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for (k, l) in Self::keys(policy, key).iter().zip(&policy.limits) {
            if l.algorithm == Algorithm::Concurrency {
                pipe.hdel(k, lease);
            }
        }
        let r: Vec<i64> = tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
            .await
            .map_err(|_| BackendError::Redis("timed out".into()))?
            .map_err(|e| BackendError::Redis(e.to_string()))?;
        Ok(r.iter().any(|x| *x > 0))
    }
}

/// Six integers per limit, as `check.lua` returns them.
pub fn parse_reply(v: &[i64], limits: usize) -> Result<Decisions, BackendError> {
    if v.len() != limits * 6 {
        return Err(BackendError::Redis(format!(
            "script returned {} values for {limits} limits",
            v.len()
        )));
    }
    Ok(v.chunks(6)
        .map(|c| Decision {
            allowed: c[0] == 1,
            limit: c[1].max(0) as u64,
            remaining: c[2].max(0) as u64,
            retry_after_ms: if c[3] < 0 { NEVER } else { c[3] as u64 },
            reset_ms: c[4].max(0) as u64,
            delay_ms: c[5].max(0) as u64,
        })
        .collect())
}
