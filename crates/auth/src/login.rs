//! Password checks an attacker cannot turn into a memory storm, a guessing machine or a user
//! directory.
//!
//! Why it exists: one argon2id check takes ~19 MiB and tens of milliseconds of CPU. 150
//! concurrent MQTT CONNECTs with a wrong password each got their own blocking thread and their
//! own 19 MiB (2.7-3.0 GB peak RSS); wrong passwords were never throttled; and an unknown user
//! was answered in a fifth of the time of a known one. Every password check of fieldlab (the
//! token endpoint, MQTT CONNECT, OPC UA user logins) goes through [`LoginGuard`]:
//!
//! - a bounded pool: at most `auth.login.workers` argon2 checks at once (a semaphore in front
//!   of `spawn_blocking`); a check that cannot start within `auth.login.queue_wait` is refused
//!   ([`crate::AuthError::Busy`]), so memory is bounded by configuration, not by clients;
//! - a failure limiter ([`FailureLimiter`]) per user name and per client address: an attempt
//!   is counted before it is checked (so a burst of concurrent guesses cannot all pass the
//!   gate before the first one fails) and given back when it succeeds; past the limit the
//!   key is locked out for a window that doubles with each lockout
//!   ([`crate::AuthError::Throttled`] with the time to wait);
//! - a dummy hash: an unknown or revoked user costs one argon2 check like a known one, so
//!   the answer's timing does not tell who exists.
//!
//! Why not `fieldlab-ratelimit`'s in-process limiter: it counts admissions of a rate (checked
//! and charged in one step), where this needs a count of failures that is charged before the
//! check, given back on success, and locks out with exponential back-off; expressing that on
//! top of it would need a second store for the back-off anyway.

use crate::users::User;
use crate::{AuthError, LoginConfig};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Keys the failure limiter remembers at most (user names and addresses together): about
/// 100 bytes each, so a few MiB whatever names and addresses clients send.
pub const MAX_KEYS: usize = 65_536;

/// Settings of a [`FailureLimiter`]; a limit of 0 is off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_user: u32,
    pub per_address: u32,
    pub window: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Attempts not (yet) known to have succeeded in the current window.
    count: u32,
    window_start: Instant,
    /// Lockouts since the last success; the next one lasts `window * 2^strikes`.
    strikes: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Counts failed logins per key (`user:NAME`, `addr:IP`) and locks keys out with exponential
/// back-off. Memory is bounded by [`MAX_KEYS`].
#[derive(Debug)]
pub struct FailureLimiter {
    limits: Limits,
    map: Mutex<HashMap<String, Entry>>,
    max_keys: usize,
}

/// The limiter key of a client address: IPv4 as is, IPv6 by its /64 (one host usually owns
/// a whole /64, so counting single IPv6 addresses would count nothing).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("addr:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let s = v6.segments();
                format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The limiter key of a user name (names longer than any valid one are cut: they exist for no
/// one, and must not make the table's keys as long as a client likes).
pub fn user_key(name: &str) -> String {
    let mut end = name.len().min(128);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("user:{}", &name[..end])
}

impl FailureLimiter {
    pub fn new(limits: Limits) -> FailureLimiter {
        FailureLimiter::with_max_keys(limits, MAX_KEYS)
    }

    pub fn with_max_keys(limits: Limits, max_keys: usize) -> FailureLimiter {
        FailureLimiter {
            limits,
            map: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(2),
        }
    }

    fn limit_of(&self, key: &str) -> u32 {
        if key.starts_with("user:") {
            self.limits.per_user
        } else {
            self.limits.per_address
        }
    }

    fn backoff(&self, strikes: u32) -> Duration {
        let f = 1u32 << strikes.min(16);
        self.limits
            .window
            .saturating_mul(f)
            .min(self.limits.max_backoff.max(self.limits.window))
    }

    /// Start an attempt for all `keys` at `now`: refused (with how long to wait) when any of
    /// them is locked out or has used its attempts in this window; else one attempt is counted
    /// on each, to be given back by [`FailureLimiter::succeeded`].
    pub fn begin(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let mut map = self.map.lock();
        let mut wait = Duration::ZERO;
        for k in keys {
            let limit = self.limit_of(k);
            if limit == 0 {
                continue;
            }
            let Some(e) = map.get_mut(k.as_str()) else {
                continue;
            };
            if let Some(until) = e.locked_until {
                if until > now {
                    wait = wait.max(until - now);
                    continue;
                }
                e.locked_until = None;
                e.count = 0;
                e.window_start = now;
            }
            if now.duration_since(e.window_start) >= self.limits.window {
                e.count = 0;
                e.window_start = now;
            }
            // Lockouts are forgotten after a quiet `max_backoff` (plus a window).
            if now.duration_since(e.last) >= self.limits.max_backoff + self.limits.window {
                e.strikes = 0;
            }
            if e.count >= limit {
                let d = self.backoff(e.strikes);
                e.strikes = e.strikes.saturating_add(1);
                e.locked_until = Some(now + d);
                e.last = now;
                wait = wait.max(d);
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for k in keys {
            if self.limit_of(k) == 0 {
                continue;
            }
            if !map.contains_key(k.as_str()) && map.len() >= self.max_keys {
                Self::make_room(&mut map, now, self.limits, self.max_keys);
            }
            let e = map.entry(k.clone()).or_insert(Entry {
                count: 0,
                window_start: now,
                strikes: 0,
                locked_until: None,
                last: now,
            });
            e.count += 1;
            e.last = now;
        }
        Ok(())
    }

    /// The attempt begun on `keys` succeeded: its user's count and lockouts are cleared, the
    /// address gets its attempt back.
    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.map.lock();
        for k in keys {
            if k.starts_with("user:") {
                map.remove(k.as_str());
            } else {
                self.give_back(&mut map, k);
            }
        }
    }

    /// The attempt begun on `keys` was not checked (the pool was busy): it counts for no one.
    pub fn not_checked(&self, keys: &[String]) {
        let mut map = self.map.lock();
        for k in keys {
            self.give_back(&mut map, k);
        }
    }

    fn give_back(&self, map: &mut HashMap<String, Entry>, k: &str) {
        if let Some(e) = map.get_mut(k) {
            e.count = e.count.saturating_sub(1);
        }
    }

    /// Forget keys that hold nothing any more; if that is not enough, the least recently used
    /// half (forgetting a key is the same as it never having failed).
    fn make_room(map: &mut HashMap<String, Entry>, now: Instant, l: Limits, max: usize) {
        map.retain(|_, e| {
            e.locked_until.is_some_and(|u| u > now)
                || now.duration_since(e.window_start) < l.window
                || (e.strikes > 0 && now.duration_since(e.last) < l.max_backoff + l.window)
        });
        if map.len() >= max {
            let mut ages: Vec<Instant> = map.values().map(|e| e.last).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, e| e.last > cut);
        }
    }

    /// Keys remembered (tests, metrics).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bounded argon2 pool, the failure limiter and the dummy hash.
#[derive(Debug)]
pub struct LoginGuard {
    pool: Arc<tokio::sync::Semaphore>,
    workers: usize,
    queue_wait: Duration,
    limiter: FailureLimiter,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

/// A valid argon2id hash of a random password nobody knows, with the parameters of real ones:
/// what an unknown user's password is checked against.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw = crate::random_b64(24);
        crate::users::hash_password(&pw).expect("hashing a random password works")
    })
}

/// Check `password` for the user `name` in `file` in constant time with respect to whether
/// the user exists: unknown and revoked users are checked against a dummy hash.
pub fn check_password_uniform<'a>(
    file: &'a crate::UserFile,
    name: &str,
    password: &str,
) -> Option<&'a User> {
    let u = file.user(name).filter(|u| !u.revoked);
    let phc: &str = match u {
        Some(u) => &u.password_hash,
        None => dummy_hash(),
    };
    let ok = crate::users::verify_password(password, phc);
    u.filter(|_| ok)
}

impl LoginGuard {
    pub fn from_config(c: &LoginConfig) -> LoginGuard {
        let ms = |d: fieldlab_core::config::HumanDuration| d.get().max(Duration::from_millis(1));
        let workers = if c.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
        } else {
            c.workers
        };
        LoginGuard::new(
            workers,
            ms(c.queue_wait),
            Limits {
                per_user: c.per_user,
                per_address: c.per_address,
                window: ms(c.window),
                max_backoff: ms(c.max_backoff),
            },
        )
    }

    pub fn new(workers: usize, queue_wait: Duration, limits: Limits) -> LoginGuard {
        let workers = workers.max(1);
        LoginGuard {
            pool: Arc::new(tokio::sync::Semaphore::new(workers)),
            workers,
            queue_wait,
            limiter: FailureLimiter::new(limits),
            in_flight: Arc::default(),
            peak: Arc::default(),
        }
    }

    pub fn limiter(&self) -> &FailureLimiter {
        &self.limiter
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The most argon2 checks that ever ran at once (never above [`LoginGuard::workers`]).
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Check a password for `name` from `client`: limiter, pool, argon2 (against the dummy
    /// hash for unknown users). `users` reads the current users file on the blocking thread.
    pub async fn check<F>(
        &self,
        name: &str,
        password: &str,
        client: Option<IpAddr>,
        users: F,
    ) -> Result<User, AuthError>
    where
        F: FnOnce() -> Result<Arc<crate::UserFile>, AuthError> + Send + 'static,
    {
        let mut keys = vec![user_key(name)];
        if let Some(ip) = client {
            keys.push(address_key(ip));
        }
        if let Err(wait) = self.limiter.begin(&keys, Instant::now()) {
            tracing::warn!(user = %name, client = ?client, retry_after_s = wait.as_secs(),
                "login refused: too many failed attempts");
            return Err(AuthError::Throttled { retry_after: wait });
        }
        let permit =
            match tokio::time::timeout(self.queue_wait, self.pool.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    self.limiter.not_checked(&keys);
                    tracing::warn!(user = %name, client = ?client,
                        "login refused: every password check worker is busy");
                    return Err(AuthError::Busy {
                        retry_after: Duration::from_secs(1),
                    });
                }
            };
        let (name_owned, pw) = (name.to_string(), password.to_string());
        let (in_flight, peak) = (self.in_flight.clone(), self.peak.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::Relaxed);
            let out = users().map(|f| check_password_uniform(&f, &name_owned, &pw).cloned());
            in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            out
        })
        .await
        .map_err(|e| AuthError::Internal(format!("password check failed: {e}")))?;
        match checked {
            Ok(Some(u)) => {
                self.limiter.succeeded(&keys);
                Ok(u)
            }
            Ok(None) => {
                tracing::info!(user = %name, client = ?client, "login failed: unknown user, wrong password, or revoked user");
                Err(AuthError::Unauthenticated(
                    "unknown user, wrong password, or revoked user".into(),
                ))
            }
            Err(e) => {
                self.limiter.not_checked(&keys);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: u32, per_address: u32) -> Limits {
        Limits {
            per_user,
            per_address,
            window: Duration::from_secs(60),
            max_backoff: Duration::from_secs(900),
        }
    }

    fn keys(u: &str, a: &str) -> Vec<String> {
        vec![user_key(u), format!("addr:{a}")]
    }

    #[test]
    fn failures_lock_out_with_doubling_back_off_and_success_clears_the_user() {
        let l = FailureLimiter::new(limits(3, 100));
        let t0 = Instant::now();
        let k = keys("ann", "10.0.0.1");
        for _ in 0..3 {
            l.begin(&k, t0).unwrap();
        }
        let w = l.begin(&k, t0).unwrap_err();
        assert_eq!(w, Duration::from_secs(60), "first lockout: one window");
        // Locked: still refused a little later, without counting.
        let w = l.begin(&k, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(w, Duration::from_secs(50));
        // After the lockout: three more tries, then twice as long.
        let t1 = t0 + Duration::from_secs(61);
        for _ in 0..3 {
            l.begin(&k, t1).unwrap();
        }
        assert_eq!(l.begin(&k, t1).unwrap_err(), Duration::from_secs(120));
        let t2 = t1 + Duration::from_secs(121);
        for _ in 0..3 {
            l.begin(&k, t2).unwrap();
        }
        assert_eq!(l.begin(&k, t2).unwrap_err(), Duration::from_secs(240));
        // Another user from another address is not affected.
        l.begin(&keys("bob", "10.0.0.2"), t2).unwrap();
        // A success clears the user's count and lockouts.
        let t3 = t2 + Duration::from_secs(241);
        l.begin(&k, t3).unwrap();
        l.succeeded(&k);
        for _ in 0..3 {
            l.begin(&k, t3).unwrap();
        }
        assert_eq!(l.begin(&k, t3).unwrap_err(), Duration::from_secs(60));
    }

    #[test]
    fn the_back_off_is_capped_and_the_address_limit_spans_users() {
        let l = FailureLimiter::new(Limits {
            max_backoff: Duration::from_secs(90),
            ..limits(1, 3)
        });
        let t = Instant::now();
        let k = keys("ann", "10.0.0.1");
        l.begin(&k, t).unwrap();
        assert_eq!(l.begin(&k, t).unwrap_err(), Duration::from_secs(60));
        let t = t + Duration::from_secs(60);
        l.begin(&k, t).unwrap();
        assert_eq!(
            l.begin(&k, t).unwrap_err(),
            Duration::from_secs(90),
            "capped"
        );
        // Spraying user names from one address: the address limit holds.
        let a = Instant::now();
        for u in ["u1", "u2", "u3"] {
            l.begin(&keys(u, "10.9.9.9"), a).unwrap();
        }
        assert!(l.begin(&keys("u4", "10.9.9.9"), a).is_err());
        // Zero is off.
        let off = FailureLimiter::new(limits(0, 0));
        for _ in 0..1000 {
            off.begin(&k, a).unwrap();
        }
        assert!(off.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let l = FailureLimiter::with_max_keys(limits(5, 5), 100);
        let t = Instant::now();
        for i in 0..10_000 {
            let _ = l.begin(
                &keys(&format!("u{i}"), &format!("10.0.{}.{}", i / 256, i % 256)),
                t,
            );
        }
        assert!(l.len() <= 100, "{}", l.len());
        assert_eq!(user_key(&"x".repeat(10_000)).len(), 5 + 128);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(m), "addr:10.1.2.3");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_bounds_concurrent_checks_and_refuses_what_waits_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::UserDb::open(dir.path()));
        db.update(|f| {
            f.add_user(
                "ann",
                &[fieldlab_core::Role::Operator],
                "correct horse battery",
            )
        })
        .unwrap();
        let guard = Arc::new(LoginGuard::new(2, Duration::from_millis(150), limits(0, 0)));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (g, db) = (guard.clone(), db.clone());
            tasks.push(tokio::spawn(async move {
                g.check("ann", &format!("wrong {i}"), None, move || db.current())
                    .await
            }));
        }
        let (mut busy, mut wrong) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Err(AuthError::Busy { .. }) => busy += 1,
                Err(AuthError::Unauthenticated(_)) => wrong += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(guard.peak_in_flight() <= 2, "{}", guard.peak_in_flight());
        assert!(wrong >= 2, "some were checked: {wrong}");
        assert!(
            busy > 0,
            "40 checks of ~50 ms cannot all start within 150 ms on 2 workers"
        );
        assert!(guard
            .check("ann", "correct horse battery", None, move || db.current())
            .await
            .is_ok());
    }
}
