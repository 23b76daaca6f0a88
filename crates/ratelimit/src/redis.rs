//! Redis backend: one atomic Lua script per check, on the Redis server's clock.
//!
//! Why a script: read-decide-write must be atomic across instances, or N instances allow N
//! times the limit (the legacy limiter's bug). The script (`check.lua`) runs the same integer arithmetic
//! as `algo.rs` for every limit of a policy, writes only if all pass, and is sent with EVALSHA
//! (loaded with SCRIPT LOAD on connect, and again on NOSCRIPT after a Redis restart): one round
//! trip per check. All keys of a check carry the hash tag `{key}`, so they live in one Redis
//! Cluster slot.
//!
//! A policy of one token bucket or one GCRA limit (most policies) runs `single.lua` instead:
//! the same arithmetic specialised to that limit (its constants are in the script text, so the
//! command carries only the key, and the units when they are not 1) and replying with one integer that
//! [`TokenBucket::decision`] / [`Gcra::decision`] turn into the decision. On Redis 7 that cuts
//! the server's work per check by about a third (the generic script's eight arguments and
//! six-integer reply cost more than its arithmetic). One script per distinct limit, up to
//! [`MAX_SINGLE_SCRIPTS`]; past that, checks use the generic script (same decisions).
//!
//! A token bucket or GCRA limit with a whole number of ms per unit (1000/s, 100/min, ...; see
//! [`Limit::expiry_state`]) has one instant as its whole state: when the bucket is full again,
//! the GCRA tat. Redis keeps that instant as the key's expiry (key `..:v3`, empty value), so the
//! key's PTTL is how far it is ahead of the server clock: one call reads clock and state, one
//! PEXPIRE (or SET .. PX) writes it, and Redis drops the key when it holds nothing. That is two
//! calls and no parsing per check instead of TIME + GET + PSETEX of a string: about 27% fewer
//! server instructions (callgrind, `bench/redis-script-cost.sh`). Redis 7.0 reads its clock
//! afresh in PTTL and in PEXPIRE, so when a millisecond ends between the two (a few µs apart)
//! the check charges 1 ms more than exact: stricter, never looser. With a test clock
//! (`now_ms`), the scripts use PEXPIRETIME and PXAT instead (Redis >= 7.0).
//!
//! Every key this backend and [`crate::shared`] use starts with `fieldlab:rl:`: the counters
//! `fieldlab:rl:{key}:...` ([`RedisBackend::keys`]), the shared rules `fieldlab:rl:rules` and
//! their channel `fieldlab:rl:rules:changed` (see [`crate::shared`]).
//!
//! Connection: a `ConnectionManager` (multiplexed, reconnects with exponential back-off), or
//! several, round robin ([`RedisBackend::with_connections`]). While
//! no connection can be made, checks fail fast with [`BackendError::Unavailable`] and a new
//! attempt is made at most once per back-off step (100 ms doubling up to 5 s).

use crate::algo::{Algorithm, Gcra, Limit, TokenBucket, NEVER};
use crate::{BackendError, Decision, Decisions, Policy};
use fieldlab_core::backoff::Backoff;
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The check script, shared with tests and the benchmark.
pub const SCRIPT: &str = include_str!("check.lua");

/// The body of the script for a policy of one token bucket or GCRA limit; [`single_script`]
/// puts the limit's constants before it.
pub const SINGLE_SCRIPT: &str = include_str!("single.lua");

/// At most this many specialised scripts per backend (each distinct limit has one; Redis keeps
/// loaded scripts until SCRIPT FLUSH, so their number stays bounded by this).
pub const MAX_SINGLE_SCRIPTS: usize = 256;

/// A loaded-on-demand script specialised to one limit.
struct SingleScript {
    text: String,
    script: redis::Script,
    /// The limit's state is its key's expiry ([`Limit::expiry_state`]); the reply is in ms.
    expiry: bool,
}

/// The text of the script specialised to `l`, or `None` when `l` is not a token bucket or
/// GCRA limit, or is out of the range where its arithmetic is exact (then the generic script
/// decides it, identically).
pub fn single_script(l: &Limit) -> Option<String> {
    l.validate().ok()?;
    let (code, a, b, ttl) = match (l.algorithm, l.expiry_state()) {
        // The state is the key's expiry: no TTL of its own.
        (Algorithm::TokenBucket, Some((t, b))) => (3, t, b, 0),
        (Algorithm::Gcra, Some((t, b))) => (4, t, b, 0),
        (Algorithm::TokenBucket, None) => {
            let cap = l.burst * l.period_ms;
            let b = cap.div_ceil(l.limit);
            (1, cap, b, b + 1000)
        }
        (Algorithm::Gcra, None) => {
            let t = l.interval_us() as u64;
            (2, t, l.burst * t, (l.burst * t).div_ceil(1000) + 1000)
        }
        _ => return None,
    };
    Some(format!(
        "local alg, lim, per, burst, a, b, ttl = {code}, {}, {}, {}, {a}, {b}, '{ttl}'\n{SINGLE_SCRIPT}",
        l.limit, l.period_ms, l.burst,
    ))
}

pub struct RedisBackend {
    client: redis::Client,
    script: redis::Script,
    /// Scripts specialised to one limit, by limit (see [`single_script`]).
    singles: RwLock<HashMap<Limit, Arc<SingleScript>>>,
    /// Off: every check runs the generic script.
    use_singles: bool,
    timeout: Duration,
    /// How many multiplexed connections checks are spread over (round robin).
    connections: usize,
    conns: tokio::sync::RwLock<Option<Box<[ConnectionManager]>>>,
    next: AtomicUsize,
    /// When the next connection attempt may start, and the current back-off.
    retry: Mutex<(Instant, Backoff)>,
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
        let mut info: redis::ConnectionInfo = url.parse().map_err(|e| {
            // The URL may carry a password (`redis://:PASSWORD@host`): never print it.
            let shown = match (url.find("://"), url.rfind('@')) {
                (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
                _ => url.to_string(),
            };
            format!("`{shown}` is not a Redis URL ({e}); write redis://HOST:PORT")
        })?;
        if let Some(p) = password {
            info.redis.password = Some(p.to_string());
        }
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        Ok(RedisBackend {
            client,
            script: redis::Script::new(SCRIPT),
            singles: RwLock::new(HashMap::new()),
            use_singles: true,
            timeout,
            connections: 1,
            conns: tokio::sync::RwLock::new(None),
            next: AtomicUsize::new(0),
            retry: Mutex::new((Instant::now(), Backoff::new(BACKOFF_MIN, BACKOFF_MAX))),
        })
    }

    /// Spread checks over `n` multiplexed connections (default 1: every concurrent check of
    /// this instance is pipelined on one connection). Each check is still one EVALSHA, one
    /// round trip, on one connection.
    pub fn with_connections(mut self, n: usize) -> RedisBackend {
        self.connections = n.max(1);
        self
    }

    /// Off: every check runs the generic script, also for single token bucket and GCRA limits
    /// (the decisions are the same; tests compare the two scripts this way).
    pub fn with_single_scripts(mut self, on: bool) -> RedisBackend {
        self.use_singles = on;
        self
    }

    /// The SHA1 the generic script runs under (what `redis-benchmark` and `SCRIPT EXISTS`
    /// see).
    pub fn script_hash(&self) -> &str {
        self.script.get_hash()
    }

    /// The per-command timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client, for a connection of another kind (the rules' pub/sub subscription).
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The specialised script for `policy`, if it is a single token bucket or GCRA limit and
    /// the cache has room.
    fn single(&self, policy: &Policy) -> Option<Arc<SingleScript>> {
        let [l] = policy.limits.as_slice() else {
            return None;
        };
        if !self.use_singles {
            return None;
        }
        if !matches!(l.algorithm, Algorithm::TokenBucket | Algorithm::Gcra) {
            return None;
        }
        if let Some(s) = self.singles.read().get(l) {
            return Some(s.clone());
        }
        let text = single_script(l)?;
        let mut w = self.singles.write();
        if w.len() >= MAX_SINGLE_SCRIPTS && !w.contains_key(l) {
            return None;
        }
        let s = w.entry(*l).or_insert_with(|| {
            Arc::new(SingleScript {
                script: redis::Script::new(&text),
                text,
                expiry: l.expiry_state().is_some(),
            })
        });
        Some(s.clone())
    }

    /// A connection (made on first use, on the caller's runtime; see the back-off above).
    pub(crate) async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        let pick = |cs: &[ConnectionManager]| {
            let i = if cs.len() == 1 {
                0
            } else {
                self.next.fetch_add(1, Ordering::Relaxed) % cs.len()
            };
            cs[i].clone()
        };
        if let Some(cs) = self.conns.read().await.as_ref() {
            return Ok(pick(cs));
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
        let mut guard = self.conns.write().await;
        if let Some(cs) = guard.as_ref() {
            return Ok(pick(cs));
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
        let connect = async {
            let mut cs = Vec::with_capacity(self.connections);
            for _ in 0..self.connections {
                cs.push(
                    ConnectionManager::new_with_config(self.client.clone(), cfg.clone()).await?,
                );
            }
            // Load the script up front, so checks are EVALSHA from the first one.
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async(&mut cs[0])
                .await?;
            Ok::<_, redis::RedisError>(cs)
        };
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(100)) * 2, connect).await
        {
            Ok(Ok(cs)) => {
                {
                    let mut r = self.retry.lock();
                    r.0 = Instant::now();
                    r.1.reset();
                }
                tracing::info!(connections = cs.len(), "connected to redis");
                let c = pick(&cs);
                *guard = Some(cs.into_boxed_slice());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => Err(self.failed("connect timed out".into())),
        }
    }

    /// Record a failed attempt: the next one waits one back-off step (doubling up to 5 s).
    fn failed(&self, why: String) -> BackendError {
        let mut r = self.retry.lock();
        r.0 = Instant::now() + r.1.next_delay();
        BackendError::Unavailable(why)
    }

    /// Redis keys of `key` under `policy`: `fieldlab:rl:{key}:<policy>:<i>:<algorithm>:v2`
    /// (v2: the state of the rate algorithms is one string; v1 was a hash), and `..:v3` for a
    /// token bucket or GCRA limit whose state is the key's expiry ([`Limit::expiry_state`]),
    /// so neither form is ever read as the other.
    pub fn keys(policy: &Policy, key: &str) -> Vec<String> {
        (0..policy.limits.len())
            .map(|i| {
                let mut k = String::new();
                let expiry = policy.limits[i].expiry_state().is_some();
                Self::push_key(&mut k, policy, key, i, expiry);
                k
            })
            .collect()
    }

    /// `expiry`: limit `i`'s state is its key's expiry ([`Limit::expiry_state`]).
    fn push_key(out: &mut String, policy: &Policy, key: &str, i: usize, expiry: bool) {
        use std::fmt::Write;
        let v = if expiry { 3 } else { 2 };
        let alg = policy.limits[i].algorithm.as_str();
        let _ = write!(out, "fieldlab:rl:{{{key}}}:{}:{i}:{alg}:v{v}", policy.name);
    }

    /// The EVALSHA command of one check, exactly as [`RedisBackend::check`] sends it (the
    /// specialised script for a single token bucket or GCRA limit, else the generic one).
    /// `now_ms`: `None` = Redis server clock.
    pub fn command(
        &self,
        policy: &Policy,
        key: &str,
        n: u64,
        lease: u64,
        now_ms: Option<i64>,
    ) -> redis::Cmd {
        match self.single(policy) {
            Some(s) => Self::single_command(&s, policy, key, n, now_ms),
            None => self.generic_command(policy, key, n, lease, now_ms),
        }
    }

    /// `EVALSHA <single> 1 <key> [<n> [<now_ms>]]`: `n` is left out when it is 1 and the
    /// server clock is used (the common check; each argument costs the script about 1 µs).
    fn single_command(
        s: &SingleScript,
        policy: &Policy,
        key: &str,
        n: u64,
        now_ms: Option<i64>,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        let mut k = String::with_capacity(key.len() + policy.name.len() + 40);
        Self::push_key(&mut k, policy, key, 0, s.expiry);
        cmd.arg(s.script.get_hash()).arg(1).arg(k.as_str());
        if n != 1 || now_ms.is_some() {
            cmd.arg(n);
        }
        if let Some(t) = now_ms {
            cmd.arg(t);
        }
        cmd
    }

    /// The generic script's command. Built in one buffer (the `redis` crate's `Cmd`), no
    /// intermediate strings but the key names.
    fn generic_command(
        &self,
        policy: &Policy,
        key: &str,
        n: u64,
        lease: u64,
        now_ms: Option<i64>,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(policy.limits.len());
        let mut k = String::with_capacity(key.len() + policy.name.len() + 40);
        let expiry: smallvec::SmallVec<[bool; 4]> = policy
            .limits
            .iter()
            .map(|l| l.expiry_state().is_some())
            .collect();
        for (i, &e) in expiry.iter().enumerate() {
            k.clear();
            Self::push_key(&mut k, policy, key, i, e);
            cmd.arg(k.as_str());
        }
        match now_ms {
            Some(t) => cmd.arg(t),
            None => cmd.arg(""),
        };
        cmd.arg(n).arg(lease);
        for (l, &e) in policy.limits.iter().zip(&expiry) {
            // + 10: the state is the key's expiry.
            cmd.arg(l.algorithm.code() + if e { 10 } else { 0 })
                .arg(l.limit)
                .arg(l.period_ms)
                .arg(l.burst)
                .arg(l.max_delay_ms);
        }
        cmd
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
        let single = self.single(policy);
        let (cmd, text) = match &single {
            Some(s) => (
                Self::single_command(s, policy, key, n, now_ms),
                s.text.as_str(),
            ),
            None => (self.generic_command(policy, key, n, lease, now_ms), SCRIPT),
        };
        let t = self.timeout;
        let mut res: Result<redis::Value, redis::RedisError> =
            timed(t, cmd.query_async(&mut conn)).await?;
        if matches!(&res, Err(e) if e.kind() == redis::ErrorKind::NoScriptError) {
            // First use of a specialised script, or Redis restarted (or SCRIPT FLUSH): load
            // the script and try once more.
            let load = redis::cmd("SCRIPT").arg("LOAD").arg(text).to_owned();
            res = match timed(t, load.query_async::<redis::Value>(&mut conn)).await? {
                Ok(_) => timed(t, cmd.query_async(&mut conn)).await?,
                Err(e) => Err(e),
            };
        }
        let v = res.map_err(|e| BackendError::Redis(e.to_string()))?;
        match single {
            Some(s) => parse_single(&v, &policy.limits[0], n, s.expiry),
            None => parse_value(&v, policy.limits.len()),
        }
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
        let r: Vec<i64> = timed(self.timeout, pipe.query_async(&mut conn))
            .await?
            .map_err(|e| BackendError::Redis(e.to_string()))?;
        Ok(r.iter().any(|x| *x > 0))
    }
}

pub(crate) async fn timed<T>(
    t: Duration,
    fut: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<Result<T, redis::RedisError>, BackendError> {
    tokio::time::timeout(t, fut)
        .await
        .map_err(|_| BackendError::Redis("timed out".into()))
}

/// `single.lua`'s reply: `x >= 0` allowed, `-1 - x` rejected, where `x` is how far the limit's
/// instant is ahead of now in ms (`expiry`: the state is the key's expiry), else the tokens
/// left (token bucket) or how far the tat is ahead of now (GCRA, µs).
fn parse_single(
    v: &redis::Value,
    l: &Limit,
    n: u64,
    expiry: bool,
) -> Result<Decisions, BackendError> {
    let &redis::Value::Int(x) = v else {
        return Err(BackendError::Redis(format!(
            "unexpected script reply for one limit: {v:?}"
        )));
    };
    let allowed = x >= 0;
    let x = if allowed { x } else { -1 - x };
    let d = match (l.algorithm, expiry) {
        (Algorithm::Gcra, false) => Gcra::decision(l, l.interval_us(), n, allowed, x),
        (Algorithm::Gcra, true) => Gcra::decision(l, l.interval_us(), n, allowed, x * 1000),
        (_, false) => TokenBucket::decision(l, n, allowed, x as u64),
        // Full again in x ms: short of full by x ms of refill (`limit` scaled units per ms).
        (_, true) => {
            let cap = l.burst * l.period_ms;
            TokenBucket::decision(l, n, allowed, cap.saturating_sub(x as u64 * l.limit))
        }
    };
    Ok(smallvec::smallvec![d])
}

/// The generic script's reply, read straight from the RESP value (no intermediate vector).
fn parse_value(v: &redis::Value, limits: usize) -> Result<Decisions, BackendError> {
    let bad = || {
        BackendError::Redis(format!(
            "unexpected script reply for {limits} limits: {v:?}"
        ))
    };
    let redis::Value::Array(items) = v else {
        return Err(bad());
    };
    if items.len() != limits * 6 {
        return Err(bad());
    }
    let mut out = Decisions::new();
    for c in items.chunks(6) {
        let mut x = [0i64; 6];
        for (slot, item) in x.iter_mut().zip(c) {
            let redis::Value::Int(i) = item else {
                return Err(bad());
            };
            *slot = *i;
        }
        out.push(decision(&x));
    }
    Ok(out)
}

fn decision(c: &[i64; 6]) -> Decision {
    Decision {
        allowed: c[0] == 1,
        limit: c[1].max(0) as u64,
        remaining: c[2].max(0) as u64,
        retry_after_ms: if c[3] < 0 { NEVER } else { c[3] as u64 },
        reset_ms: c[4].max(0) as u64,
        delay_ms: c[5].max(0) as u64,
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
        .map(|c| decision(&[c[0], c[1], c[2], c[3], c[4], c[5]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_scripts_carry_their_limit_and_only_for_token_bucket_and_gcra() {
        // A token every 1 ms: the state is the key's expiry (alg 3), 1 ms per unit, at most
        // 1000 ms ahead. bench/redis-script-cost.sh writes this very line before single.lua.
        let tb = Limit::new(Algorithm::TokenBucket, 1000, 1000).with_burst(1000);
        let text = single_script(&tb).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "local alg, lim, per, burst, a, b, ttl = 3, 1000, 1000, 1000, 1, 1000, '0'"
        );
        assert!(text.ends_with(SINGLE_SCRIPT));
        // A token every 333.3 ms: scaled tokens in a string (alg 1), capacity 5 x 1000,
        // 1667 ms to refill from empty, ttl that + 1 s.
        let tb = Limit::new(Algorithm::TokenBucket, 3, 1000).with_burst(5);
        assert_eq!(
            single_script(&tb).unwrap().lines().next().unwrap(),
            "local alg, lim, per, burst, a, b, ttl = 1, 3, 1000, 5, 5000, 1667, '2667'"
        );
        // GCRA every 10 ms: in the key's expiry (alg 4).
        let g = Limit::new(Algorithm::Gcra, 100, 1000).with_burst(50);
        assert_eq!(
            single_script(&g).unwrap().lines().next().unwrap(),
            "local alg, lim, per, burst, a, b, ttl = 4, 100, 1000, 50, 10, 500, '0'"
        );
        // GCRA: interval 3334 µs (rounded up), tolerance 5 x 3334 µs, ttl 17 ms + 1 s.
        let g = Limit::new(Algorithm::Gcra, 3, 10).with_burst(5);
        let first = single_script(&g).unwrap();
        assert_eq!(
            first.lines().next().unwrap(),
            "local alg, lim, per, burst, a, b, ttl = 2, 3, 10, 5, 3334, 16670, '1017'"
        );
        assert!(single_script(&Limit::new(Algorithm::FixedWindow, 3, 10)).is_none());
        // Out of the exact range: the generic script decides it.
        assert!(single_script(&Limit::new(Algorithm::TokenBucket, 1, u64::MAX / 2)).is_none());
    }
}
