//! The Redis backend against a real `redis-server` (Debian package; `scripts/test.sh` installs
//! it): the Lua script decides exactly as the in-process code, keys carry hash tags, the server
//! clock is used, and an unreachable Redis fails open or closed per policy. The rules too are
//! shared through Redis: a change on one replica is in use on the others within a second.

use fieldlab_ratelimit::redis::RedisBackend;
use fieldlab_ratelimit::{check_all, Algorithm, Limit, Limiter, Policy, State};
use fieldlab_ratelimit::{
    FailMode, RatelimitBackend, RatelimitConfig, RatelimitLimitSpec, RatelimitPolicySpec,
};
use fieldlab_testkit::TempRedis;
use proptest::prelude::*;
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn backend(r: &TempRedis) -> RedisBackend {
    RedisBackend::new(&r.url(), None, Duration::from_secs(2)).unwrap()
}

/// The test clock (ms): 2096, ahead of the server's. A token bucket or GCRA limit whose state
/// is its key's expiry is written with an absolute expiry on a test clock; one in the server's
/// past would expire at once.
const TEST_CLOCK_MS: i64 = 4_000_000_000_000;

fn limit_strategy() -> impl Strategy<Value = Limit> {
    (0usize..7, 1u64..8, 1u64..1500, 1u64..6, 0u64..1500).prop_map(|(a, lim, per, burst, md)| {
        Limit::new(Algorithm::ALL[a], lim, per)
            .with_burst(burst)
            .with_max_delay(md)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Same requests, same clock: the Lua script and algo.rs give identical decisions, for
    /// single limits and composites of up to three.
    #[test]
    fn lua_decides_exactly_as_the_in_process_code(
        limits in proptest::collection::vec(limit_strategy(), 1..4),
        reqs in proptest::collection::vec((0i64..300, 0u64..4), 1..60),
    ) {
        let server = REDIS.with(|r| r.port);
        let b = RedisBackend::new(&format!("redis://127.0.0.1:{server}"), None, Duration::from_secs(2)).unwrap();
        let name = format!("p{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let policy = Policy { limits: limits.clone(), ..Policy::single(&name, limits[0]) };
        let t0 = TEST_CLOCK_MS;
        let mut states: Vec<State> = limits.iter().map(|l| l.state(t0)).collect();
        let mut t = t0;
        let rt = rt();
        for (i, &(dt, n)) in reqs.iter().enumerate() {
            t += dt;
            let want = check_all(&limits, &mut states, t, n, i as u64);
            let got = rt.block_on(b.check(&policy, "k", n, i as u64, Some(t))).unwrap();
            prop_assert_eq!(got, want, "request {} ({} units at +{} ms)", i, n, t - t0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// One token bucket or one GCRA limit, with wide limits and periods: the script
    /// specialised to the limit (single.lua) and the generic script (check.lua), taking turns
    /// at random on one key, give decisions identical to algo.rs (so they also read and write
    /// the key's state alike).
    #[test]
    fn the_single_limit_script_decides_exactly_as_the_in_process_code(
        gcra in any::<bool>(),
        whole in any::<bool>(),
        lim in 1u64..1_000_000,
        per in 1u64..3_600_000,
        burst in prop_oneof![1u64..6, 1u64..10_000],
        reqs in proptest::collection::vec((-1_000i64..5_000, 0u64..12, any::<bool>()), 1..80),
    ) {
        let server = REDIS.with(|r| r.port);
        let url = format!("redis://127.0.0.1:{server}");
        let single = RedisBackend::new(&url, None, Duration::from_secs(2)).unwrap();
        let generic = RedisBackend::new(&url, None, Duration::from_secs(2))
            .unwrap()
            .with_single_scripts(false);
        let name = format!("f{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let alg = if gcra { Algorithm::Gcra } else { Algorithm::TokenBucket };
        // Half the cases: a whole number of ms per unit, so the state is the key's expiry.
        let (lim, per) = if whole { (lim % 1000 + 1, (lim % 1000 + 1) * (per % 3600 + 1)) } else { (lim, per) };
        let limit = Limit::new(alg, lim, per).with_burst(burst);
        prop_assert!(!whole || limit.expiry_state().is_some());
        let policy = Policy::single(&name, limit);
        let t0 = TEST_CLOCK_MS;
        let mut state = vec![limit.state(t0)];
        let mut t = t0;
        let rt = rt();
        for (i, &(dt, n, use_single)) in reqs.iter().enumerate() {
            t += dt;
            let want = check_all(&[limit], &mut state, t, n, 0);
            let b = if use_single { &single } else { &generic };
            let got = rt.block_on(b.check(&policy, "k", n, 0, Some(t))).unwrap();
            prop_assert_eq!(got, want, "request {} ({} units at +{} ms, single {})", i, n, t - t0, use_single);
        }
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
thread_local! {
    static REDIS: TempRedis = TempRedis::start().unwrap();
}

#[test]
fn keys_carry_hash_tags_and_the_server_clock_is_used() {
    let r = TempRedis::start().unwrap();
    let b = backend(&r);
    let p = Policy {
        limits: vec![
            Limit::new(Algorithm::FixedWindow, 3, 60_000),
            Limit::new(Algorithm::SlidingLog, 5, 60_000),
        ],
        ..Policy::single("hz", Limit::new(Algorithm::FixedWindow, 3, 60_000))
    };
    for k in RedisBackend::keys(&p, "user:1") {
        assert!(k.starts_with("fieldlab:rl:{user:1}:"), "{k}");
    }
    let rt = rt();
    let allowed: Vec<bool> = (0..5)
        .map(|i| {
            rt.block_on(b.check(&p, "user:1", 1, i, None))
                .unwrap()
                .iter()
                .all(|d| d.allowed)
        })
        .collect();
    assert_eq!(allowed, [true, true, true, false, false]);
    // The rejected requests consumed nothing from the sliding log (composite all-or-nothing).
    let d = rt.block_on(b.check(&p, "user:1", 0, 9, None)).unwrap();
    assert_eq!(d[1].remaining, 2);
    // The state lives in Redis with an expiry, not forever.
    let client = redis::Client::open(r.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&RedisBackend::keys(&p, "user:1")[0])
        .query(&mut c)
        .unwrap();
    assert!(ttl > 0 && ttl <= 61_000, "ttl {ttl}");
}

/// A token bucket and a GCRA limit of one unit per 400 ms, burst 3, on the server clock: their
/// state is the key's expiry (`:v3` keys, PTTL), the single-limit and the generic script read
/// and write it alike, and it refills with the server's time.
#[test]
fn a_state_kept_as_the_keys_expiry_runs_on_the_server_clock() {
    let r = TempRedis::start().unwrap();
    let single = backend(&r);
    let generic = backend(&r).with_single_scripts(false);
    let client = redis::Client::open(r.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let rt = rt();
    for alg in [Algorithm::TokenBucket, Algorithm::Gcra] {
        let l = Limit::new(alg, 5, 2000).with_burst(3);
        assert_eq!(l.expiry_state(), Some((400, 1200)));
        let p = Policy::single(alg.as_str(), l);
        let key = RedisBackend::keys(&p, "dev").remove(0);
        assert!(key.ends_with(":v3"), "{key}");
        let check = |b: &RedisBackend, n| rt.block_on(b.check(&p, "dev", n, 0, None)).unwrap()[0];
        let t0 = Instant::now();
        // Three units, by the two scripts in turn; the fourth is refused by either.
        for (i, b) in [&single, &generic, &single].into_iter().enumerate() {
            let d = check(b, 1);
            assert!(d.allowed, "{alg:?} unit {i}: {d:?}");
            assert_eq!(d.remaining, 2 - i as u64, "{alg:?} unit {i}: {d:?}");
        }
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
        let value: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert!(
            (800..=1200).contains(&ttl) && value.is_empty(),
            "{ttl} {value:?}"
        );
        for b in [&single, &generic] {
            let d = check(b, 1);
            assert!(!d.allowed, "{alg:?}: {d:?}");
            assert!((1..=400).contains(&d.retry_after_ms), "{alg:?}: {d:?}");
            assert!((800..=1200).contains(&d.reset_ms), "{alg:?}: {d:?}");
        }
        // More than the burst is never granted.
        assert_eq!(check(&single, 4).retry_after_ms, fieldlab_ratelimit::NEVER);
        // Redis's clock refills: 400 ms after the first unit (plus slack), one unit again.
        std::thread::sleep(Duration::from_millis(500).saturating_sub(t0.elapsed()));
        assert!(check(&generic, 1).allowed, "{alg:?} after 500 ms");
        assert!(
            !check(&single, 1).allowed,
            "{alg:?}: only one unit came back"
        );
        // Full again: the key is gone (a state that holds nothing is no state).
        std::thread::sleep(Duration::from_millis(1300));
        let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut c).unwrap();
        assert_eq!(exists, 0, "{alg:?}");
        assert_eq!(check(&single, 0).remaining, 3, "{alg:?}");
    }
}

fn limiter(url: &str, fail: FailMode) -> Limiter {
    let mut cfg = RatelimitConfig {
        backend: RatelimitBackend::Redis,
        redis_url: url.to_string(),
        redis_timeout: "200ms".parse().unwrap(),
        ..RatelimitConfig::default()
    };
    cfg.default.fail = fail;
    cfg.default.limits[0].limit = 2;
    Limiter::of_config(cfg).unwrap()
}

#[test]
fn unreachable_redis_fails_open_or_closed_per_policy_and_reconnects() {
    let port = fieldlab_testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let rt = rt();
    let open = limiter(&url, FailMode::Open);
    let closed = limiter(&url, FailMode::Closed);
    let o = rt.block_on(open.check("k", 1));
    assert!(o.allowed && o.backend_error.is_some(), "{o:?}");
    assert_eq!(open.metrics().fail_open.get(), 1);
    let c = rt.block_on(closed.check("k", 1));
    assert!(!c.allowed && c.backend_error.is_some());
    assert_eq!(closed.metrics().fail_open.get(), 0);
    assert!(closed.metrics().redis_errors.get() >= 1);

    // Redis comes up on that port: the limiter reconnects (back-off) and enforces again.
    let restarted = TempRedis::start_on(port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let o = rt.block_on(closed.check("k2", 1));
        if o.backend_error.is_none() {
            assert!(o.allowed);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reconnected: {:?}",
            o.backend_error
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rt.block_on(closed.check("k2", 1)).allowed);
    let third = rt.block_on(closed.check("k2", 1));
    assert!(
        !third.allowed && third.backend_error.is_none(),
        "limit 2 enforced: {third:?}"
    );
    drop(restarted);
}

#[test]
fn hybrid_answers_keys_known_over_limit_locally() {
    use fieldlab_ratelimit::hybrid::HybridBackend;
    let r = TempRedis::start().unwrap();
    let h = HybridBackend::new(backend(&r), 100);
    let p = Policy::single(
        "h",
        Limit::new(Algorithm::TokenBucket, 1, 3_600_000).with_burst(2),
    );
    let rt = rt();
    let now = fieldlab_core::time::now_ms();
    let got: Vec<bool> = (0..5)
        .map(|i| rt.block_on(h.check(&p, "k", 1, i, now)).unwrap()[0].allowed)
        .collect();
    assert_eq!(got, [true, true, false, false, false]);
    assert_eq!(
        h.local_hits(),
        2,
        "after the first rejection, no round trip"
    );
    // Another key is unaffected; after the retry-after passes, Redis is asked again.
    assert!(rt.block_on(h.check(&p, "other", 1, 9, now)).unwrap()[0].allowed);
    let later = now + 3_600_000;
    let d = rt.block_on(h.check(&p, "k", 1, 10, later)).unwrap();
    assert_eq!(h.local_hits(), 2);
    assert!(!d[0].allowed, "Redis's own clock has not moved an hour");
    // A change of the rules empties the cache: Redis is asked again.
    assert!(!rt.block_on(h.check(&p, "k", 1, 11, now)).unwrap()[0].allowed);
    assert_eq!(h.local_hits(), 3);
    h.forget();
    assert!(!rt.block_on(h.check(&p, "k", 1, 12, now)).unwrap()[0].allowed);
    assert_eq!(h.local_hits(), 3, "asked Redis after forget");
}

// ---- Rules shared through Redis (`fieldlab_ratelimit::shared`) ----

fn shared_limiter(url: &str) -> Limiter {
    let cfg = RatelimitConfig {
        backend: RatelimitBackend::Redis,
        redis_url: url.to_string(),
        redis_timeout: "200ms".parse().unwrap(),
        ..RatelimitConfig::default()
    };
    Limiter::of_config(cfg).unwrap()
}

/// A token bucket of `n` an hour, full at start: over a test's few seconds, exactly `n` units.
fn per_hour(n: u64) -> RatelimitPolicySpec {
    RatelimitPolicySpec {
        limits: vec![RatelimitLimitSpec::new(
            Algorithm::TokenBucket,
            n,
            "1h".parse().unwrap(),
        )],
        ..RatelimitPolicySpec::default()
    }
}

/// Wait until `ok` holds, at most `within`; the time it took.
fn within(within: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

/// Three limiters on one Redis; a 30-token rule set on the first; within a second the other
/// two decide with it; 90 checks round robin over the three allow exactly 30. (With the rule
/// on the first alone, the other two would allow 60 more under the default policy.)
#[test]
fn a_rule_set_on_one_replica_holds_on_all_three() {
    let r = TempRedis::start().unwrap();
    let ls: Vec<Limiter> = (0..3).map(|_| shared_limiter(&r.url())).collect();
    let v0 = ls[0].rules_version();
    assert!(v0 >= 1, "the initial set is in redis at a version");
    for l in &ls {
        assert_eq!(l.rules_sync(), Some((true, None)));
        assert_eq!(l.rules_version(), v0, "all three read the same initial set");
        assert_eq!(l.rules().resolve("k").name, "default");
    }
    let rt = rt();
    let v = rt.block_on(ls[0].set_key("k", per_hour(30), None)).unwrap();
    assert!(v > v0, "{v} > {v0}");
    let took = within(
        Duration::from_secs(1),
        "replicas 2 and 3 see the rule",
        || {
            ls.iter()
                .all(|l| l.rules_version() == v && l.rules().resolve("k").name == "key:k")
        },
    );
    eprintln!("the rule was in use on all three after {took:?}");
    let allowed = (0..90)
        .filter(|i| {
            let o = rt.block_on(ls[i % 3].check("k", 1));
            assert!(o.backend_error.is_none(), "{o:?}");
            o.allowed
        })
        .count();
    assert_eq!(allowed, 30);
}

/// A change on replica 2 is in use on replica 3 within a second, and one on replica 3 on
/// replica 1; every change increases the version; If-Match refuses a change made on an old
/// version; two changes at once both get in (compare-and-set, made again on the newer set).
#[test]
fn changes_on_any_replica_reach_the_others_with_increasing_versions() {
    let r = TempRedis::start().unwrap();
    let ls: Vec<Limiter> = (0..3).map(|_| shared_limiter(&r.url())).collect();
    let rt = rt();
    let v0 = ls[2].rules_version();

    let v1 = rt
        .block_on(ls[1].set_key("dev:1", per_hour(5), None))
        .unwrap();
    assert!(v1 > v0);
    assert_eq!(
        ls[1].rules_version(),
        v1,
        "in use at once where it was made"
    );
    within(
        Duration::from_secs(1),
        "replica 3 sees replica 2's change",
        || ls[2].rules_version() == v1,
    );
    let granted = (0..8)
        .filter(|_| rt.block_on(ls[2].check("dev:1", 1)).allowed)
        .count();
    assert_eq!(granted, 5, "replica 3 decides with replica 2's rule");

    let v2 = rt
        .block_on(ls[2].set_pattern("dev:*", per_hour(2), None))
        .unwrap();
    assert!(v2 > v1);
    within(
        Duration::from_secs(1),
        "replica 1 sees replica 3's change",
        || ls[0].rules_version() == v2 && ls[0].rules().resolve("dev:9").name == "pattern:dev:*",
    );

    // If-Match on an old version: refused, nothing changed.
    let e = rt
        .block_on(ls[0].set_key("x", per_hour(1), Some(v1)))
        .unwrap_err();
    assert!(
        matches!(e, fieldlab_ratelimit::ConfigChangeError::Conflict { current } if current == v2),
        "{e:?}"
    );
    // On the current one: made.
    let v3 = rt
        .block_on(ls[0].set_key("x", per_hour(1), Some(v2)))
        .unwrap();
    assert!(v3 > v2);

    // Two replicas change different keys at once: both changes are kept.
    let (a, b) = rt.block_on(async {
        tokio::join!(
            ls[0].set_key("a", per_hour(1), None),
            ls[1].set_key("b", per_hour(1), None)
        )
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a > v3 && b > v3 && a != b, "{a} {b}");
    let top = a.max(b);
    within(Duration::from_secs(1), "every replica has both", || {
        ls.iter().all(|l| {
            let rules = l.rules();
            l.rules_version() == top
                && rules.resolve("a").name == "key:a"
                && rules.resolve("b").name == "key:b"
                && rules.resolve("x").name == "key:x"
        })
    });
    // Deleting is a change like any other.
    let v4 = rt
        .block_on(ls[2].delete_key("dev:1", None))
        .unwrap()
        .expect("there was such a key");
    assert!(v4 > top);
    within(
        Duration::from_secs(1),
        "replica 1 sees the deletion",
        || ls[0].rules().resolve("dev:1").name == "pattern:dev:*",
    );
    let c = ls[0].config_json();
    assert_eq!(c["version"], v4, "{c}");
    assert_eq!(c["store"]["kind"], "redis", "{c}");
    assert_eq!(c["keys"]["a"]["source"], "redis", "{c}");
}

/// A TCP proxy in front of Redis that can cut every connection and refuse new ones (one
/// replica losing Redis while the others keep it).
struct Cuttable {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Cuttable {
    fn to(target: u16) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut held = conns2.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cuttable { port, up, conns }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A replica that cannot reach Redis keeps deciding with its last known rules, says so
/// (`rules_sync`, the `rules_stale` gauge), refuses changes (they could not reach the others),
/// and when Redis answers again picks up the change another replica made meanwhile.
#[test]
fn a_replica_cut_off_from_redis_keeps_its_rules_and_catches_up() {
    let r = TempRedis::start().unwrap();
    let proxy = Cuttable::to(r.port);
    let cut_off = shared_limiter(&proxy.url());
    let other = shared_limiter(&r.url());
    let rt = rt();
    let v1 = rt.block_on(other.set_key("k", per_hour(3), None)).unwrap();
    within(
        Duration::from_secs(1),
        "the rule reaches the other replica",
        || cut_off.rules_version() == v1,
    );
    assert_eq!(cut_off.metrics().rules_stale.get(), 0);
    assert_eq!(cut_off.metrics().rules_version.get(), v1 as i64);

    proxy.cut();
    within(
        Duration::from_secs(3),
        "the cut-off replica notices",
        || cut_off.rules_sync().is_some_and(|(ok, _)| !ok),
    );
    assert_eq!(cut_off.metrics().rules_stale.get(), 1);
    assert!(cut_off.config_json()["store"]["error"].is_string());
    let e = rt
        .block_on(cut_off.set_key("k", per_hour(1), None))
        .unwrap_err();
    assert!(
        matches!(e, fieldlab_ratelimit::ConfigChangeError::Unavailable(_)),
        "{e:?}"
    );
    // A change made meanwhile on the other replica.
    let v2 = rt.block_on(other.set_key("k", per_hour(7), None)).unwrap();
    assert!(v2 > v1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(cut_off.rules_version(), v1, "last known rules kept");
    assert_eq!(
        cut_off.rules().resolve("k").limits[0].limit,
        3,
        "and decided with"
    );

    proxy.restore();
    let took = within(
        Duration::from_secs(10),
        "caught up after Redis returned",
        || cut_off.rules_version() == v2,
    );
    eprintln!("caught up {took:?} after the connection was restored");
    assert_eq!(cut_off.rules().resolve("k").limits[0].limit, 7);
    within(Duration::from_secs(1), "in sync again", || {
        cut_off.rules_sync() == Some((true, None))
    });
    assert_eq!(cut_off.metrics().rules_stale.get(), 0);
}

/// Redis restarted empty (no persistence): a replica writes the rules it knows back, at a
/// higher version than before, and a replica started afterwards decides with them.
#[test]
fn rules_survive_a_redis_restart_through_the_replicas() {
    let r = TempRedis::start().unwrap();
    let url = r.url();
    let port = r.port;
    let first = shared_limiter(&url);
    let rt = rt();
    let v1 = rt
        .block_on(first.set_key("kept", per_hour(4), None))
        .unwrap();
    drop(r);
    let restarted = TempRedis::start_on(port).unwrap();
    within(
        Duration::from_secs(15),
        "the rules are back in redis",
        || {
            let Ok(c) = redis::Client::open(url.as_str()) else {
                return false;
            };
            let Ok(mut c) = c.get_connection() else {
                return false;
            };
            let v: Option<u64> = redis::cmd("HGET")
                .arg(fieldlab_ratelimit::shared::RULES_KEY)
                .arg("version")
                .query(&mut c)
                .unwrap_or(None);
            v.is_some_and(|v| v > v1)
        },
    );
    let later = shared_limiter(&url);
    assert_eq!(later.rules().resolve("kept").name, "key:kept");
    assert!(later.rules_version() > v1);
    drop(restarted);
}
