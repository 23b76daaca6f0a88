//! Each algorithm against a simple reference model built from the full request history
//! (proptest), plus the behaviours the legacy limiter got wrong.

use crate::algo::*;
use proptest::prelude::*;

/// Requests: (time step ms, units). Times are non-decreasing.
fn reqs() -> impl Strategy<Value = Vec<(i64, u64)>> {
    proptest::collection::vec((0i64..400, 0u64..4), 1..120)
}

fn run(l: &Limit, reqs: &[(i64, u64)], mut model: impl FnMut(i64, u64, &[(i64, u64)]) -> bool) {
    let t0 = 1_700_000_000_000i64;
    let mut s = l.state(t0);
    let mut t = t0;
    let mut granted: Vec<(i64, u64)> = Vec::new();
    for (i, &(dt, n)) in reqs.iter().enumerate() {
        t += dt;
        let want = model(t, n, &granted);
        let d = s.check(l, t, n, i as u64);
        assert_eq!(d.allowed, want, "request {i} ({n} at +{}) of {l:?}", t - t0);
        if d.allowed {
            granted.push((t, n));
        }
    }
}

/// Closed form of a bucket of `cap` units refilled `rate` units per time unit, each request
/// costing `cost` units per token: the content just before request j is
/// `min over k <= j of (cap + rate*(t_j - t_k) - cost * units granted in [t_k, t_j))`, with
/// k ranging over the start and every earlier request. Independent of the iterative code.
fn bucket_model(
    cap: i128,
    rate: i128,
    cost: i128,
    t0: i64,
) -> impl FnMut(i64, u64, &[(i64, u64)]) -> bool {
    let mut times: Vec<i64> = vec![t0];
    move |t, n, granted| {
        times.push(t);
        let mut content = i128::MAX;
        for &tk in &times {
            let used: i128 = granted
                .iter()
                .filter(|g| g.0 >= tk)
                .map(|g| g.1 as i128)
                .sum();
            content = content.min(cap + rate * (t - tk) as i128 - cost * used);
        }
        n as i128 * cost <= content
    }
}

proptest! {
    #[test]
    fn token_bucket_matches_its_closed_form(limit in 1u64..20, period in 1u64..3000, burst in 1u64..20, r in reqs()) {
        let l = Limit::new(Algorithm::TokenBucket, limit, period).with_burst(burst);
        let t0 = 1_700_000_000_000i64;
        run(&l, &r, bucket_model((burst * period) as i128, limit as i128, period as i128, t0));
    }

    #[test]
    fn gcra_matches_the_bucket_closed_form_in_microseconds(limit in 1u64..20, period in 1u64..3000, burst in 1u64..10, r in reqs()) {
        let l = Limit::new(Algorithm::Gcra, limit, period).with_burst(burst);
        let t = l.interval_us() as i128;
        let t0 = 1_700_000_000_000i64;
        let mut m = bucket_model(burst as i128 * t, 1000, t, t0);
        run(&l, &r, move |now, n, g| m(now, n, g));
    }

    #[test]
    fn fixed_window_counts_per_aligned_window(limit in 1u64..10, window in 1u64..2000, r in reqs()) {
        let l = Limit::new(Algorithm::FixedWindow, limit, window);
        let w = window as i64;
        run(&l, &r, |t, n, g| {
            let used: u64 = g.iter().filter(|x| x.0.div_euclid(w) == t.div_euclid(w)).map(|x| x.1).sum();
            used + n <= limit
        });
    }

    #[test]
    fn sliding_log_counts_the_last_window(limit in 1u64..10, window in 1u64..2000, r in reqs()) {
        let l = Limit::new(Algorithm::SlidingLog, limit, window);
        let w = window as i64;
        run(&l, &r, |t, n, g| {
            let used: u64 = g.iter().filter(|x| x.0 > t - w).map(|x| x.1).sum();
            used + n <= limit
        });
    }

    #[test]
    fn sliding_counter_matches_the_weighted_formula(limit in 1u64..10, window in 1u64..2000, r in reqs()) {
        let l = Limit::new(Algorithm::SlidingCounter, limit, window);
        let w = window as i64;
        run(&l, &r, |t, n, g| {
            let k = t.div_euclid(w);
            let count = |win: i64| -> u64 { g.iter().filter(|x| x.0.div_euclid(w) == win).map(|x| x.1).sum() };
            let e = (t - k * w) as u64;
            count(k - 1) * (window - e) + (count(k) + n) * window <= limit * window
        });
    }

    #[test]
    fn leaky_bucket_is_a_fifo_queue_with_bounded_wait(limit in 1u64..20, period in 1u64..3000, max_delay in 0u64..3000, r in reqs()) {
        let l = Limit::new(Algorithm::LeakyBucket, limit, period).with_max_delay(max_delay);
        let t_us = l.interval_us();
        // The queue is busy until max over accepted k of (t_k + work accepted since t_k),
        // the classic closed form of a single-server FIFO queue.
        let mut accepted: Vec<(i64, u64)> = Vec::new();
        let t0 = 1_700_000_000_000i64;
        let mut s = l.state(t0);
        let mut t = t0;
        for (i, &(dt, n)) in r.iter().enumerate() {
            t += dt;
            let now = t * 1000;
            let busy = accepted.iter().map(|&(tk, _)| {
                tk * 1000 + t_us * accepted.iter().filter(|a| a.0 >= tk).map(|a| a.1 as i64).sum::<i64>()
            }).max();
            let wait = busy.map_or(0, |b| (b - now).max(0));
            let want = wait <= max_delay as i64 * 1000;
            let d = s.check(&l, t, n, i as u64);
            prop_assert_eq!(d.allowed, want, "request {} wait {}us", i, wait);
            if d.allowed {
                prop_assert_eq!(d.delay_ms, (wait as u64).div_ceil(1000));
                accepted.push((t, n));
            }
        }
    }

    #[test]
    fn concurrency_counts_unexpired_unreleased_leases(limit in 1u64..6, lease_ms in 1u64..2000,
        ops in proptest::collection::vec((0i64..400, 0u64..3, any::<bool>()), 1..150)) {
        let l = Limit::new(Algorithm::Concurrency, limit, lease_ms);
        let mut s = l.state(0);
        // model: (id, expiry, units, released)
        let mut leases: Vec<(u64, i64, u64, bool)> = Vec::new();
        let mut t = 0;
        for (i, &(dt, n, release_oldest)) in ops.iter().enumerate() {
            t += dt;
            if release_oldest {
                if let Some(x) = leases.iter_mut().find(|x| !x.3 && x.1 > t) {
                    x.3 = true;
                    prop_assert!(s.release(x.0));
                }
            }
            let used: u64 = leases.iter().filter(|x| !x.3 && x.1 > t).map(|x| x.2).sum();
            let d = s.check(&l, t, n, i as u64);
            prop_assert_eq!(d.allowed, used + n <= limit);
            if d.allowed && n > 0 {
                leases.push((i as u64, t + lease_ms as i64, n, false));
            }
        }
    }

    /// All must pass, and a rejected composite consumes nothing: its states afterwards are
    /// those of a zero-unit check.
    #[test]
    fn composite_consumes_nothing_when_one_limit_rejects(r in reqs(), a in 1u64..8, b in 1u64..8) {
        let limits = [
            Limit::new(Algorithm::TokenBucket, a, 1000),
            Limit::new(Algorithm::SlidingLog, b, 700),
            Limit::new(Algorithm::FixedWindow, a + b, 1500),
        ];
        let t0 = 1_700_000_000_000i64;
        let mut states: Vec<State> = limits.iter().map(|l| l.state(t0)).collect();
        let mut t = t0;
        for (i, &(dt, n)) in r.iter().enumerate() {
            t += dt;
            let alone: Vec<bool> = limits.iter().zip(states.clone()).map(|(l, mut s)| s.check(l, t, n, 0).allowed).collect();
            let mut idle = states.clone();
            for (l, s) in limits.iter().zip(idle.iter_mut()) { s.check(l, t, 0, u64::MAX); }
            let ds = check_all(&limits, &mut states, t, n, i as u64);
            let all = ds.iter().all(|d| d.allowed);
            prop_assert_eq!(all, alone.iter().all(|x| *x));
            if !all {
                prop_assert_eq!(&states, &idle);
            }
        }
    }
}

#[test]
fn idle_bucket_grants_exactly_capacity_not_one_more() {
    let l = Limit::new(Algorithm::TokenBucket, 1, 1000).with_burst(10);
    let mut s = l.state(0);
    let granted = (0..20)
        .filter(|_| s.check(&l, 3_600_000, 1, 0).allowed)
        .count();
    assert_eq!(granted, 10);
    let d = s.check(&l, 3_600_000, 1, 0);
    assert!(!d.allowed);
    assert_eq!((d.retry_after_ms, d.remaining), (1000, 0));
}

#[test]
fn steady_traffic_at_the_rate_is_never_starved() {
    for alg in [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::LeakyBucket,
    ] {
        let l = Limit::new(alg, 10, 1000).with_burst(1);
        let mut s = l.state(0);
        assert!(
            (0..1000).all(|i| s.check(&l, i * 100, 1, 0).allowed),
            "{alg:?}"
        );
    }
}

#[test]
fn oversized_requests_are_refused_forever_and_take_nothing() {
    for alg in [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingCounter,
        Algorithm::Concurrency,
    ] {
        let l = Limit::new(alg, 5, 1000);
        let mut s = l.state(0);
        let d = s.check(&l, 0, 6, 1);
        assert!(!d.allowed && d.retry_after_ms == NEVER, "{alg:?}: {d:?}");
        assert_eq!(s.check(&l, 0, 5, 2).remaining, 0, "{alg:?}");
    }
}

#[test]
fn leaky_bucket_delays_then_rejects() {
    // 10/s = one every 100 ms; wait at most 250 ms.
    let l = Limit::new(Algorithm::LeakyBucket, 10, 1000).with_max_delay(250);
    let mut s = l.state(0);
    let delays: Vec<Option<u64>> = (0..5)
        .map(|_| {
            let d = s.check(&l, 0, 1, 0);
            d.allowed.then_some(d.delay_ms)
        })
        .collect();
    assert_eq!(delays, [Some(0), Some(100), Some(200), None, None]);
    let d = s.check(&l, 0, 1, 0);
    assert_eq!(
        d.retry_after_ms, 50,
        "the queue has room again once 50 ms have drained"
    );
    assert!(s.check(&l, 50, 1, 0).allowed);
}

#[test]
fn fixed_window_resets_on_the_clock_boundary() {
    let l = Limit::new(Algorithm::FixedWindow, 2, 1000);
    let mut s = l.state(0);
    assert!(s.check(&l, 1999, 2, 0).allowed);
    let d = s.check(&l, 1999, 1, 0);
    assert!(!d.allowed);
    assert_eq!(d.retry_after_ms, 1);
    assert!(s.check(&l, 2000, 2, 0).allowed);
}

#[test]
fn concurrency_leases_expire() {
    let l = Limit::new(Algorithm::Concurrency, 1, 5000);
    let mut s = l.state(0);
    assert!(s.check(&l, 0, 1, 7).allowed);
    let d = s.check(&l, 10, 1, 8);
    assert!(!d.allowed);
    assert_eq!(d.retry_after_ms, 4990);
    assert!(s.check(&l, 5000, 1, 9).allowed, "lease 7 expired");
    assert!(s.release(9));
    assert!(s.check(&l, 5001, 1, 10).allowed);
}

#[test]
fn time_going_backwards_grants_nothing_extra() {
    let l = Limit::new(Algorithm::TokenBucket, 1, 1000).with_burst(1);
    let mut s = l.state(10_000);
    assert!(s.check(&l, 10_000, 1, 0).allowed);
    assert!(!s.check(&l, 5_000, 1, 0).allowed);
    assert!(!s.check(&l, 10_500, 1, 0).allowed);
    assert!(s.check(&l, 11_000, 1, 0).allowed);
}

/// What Redis keeps is the rule: a state that holds nothing is deleted there, and a rejected
/// check writes nothing. The in-process code gives the same decisions, also when a clock steps
/// back (the two backends take turns on a key in tests/redis.rs).
#[test]
fn a_state_that_holds_nothing_is_no_state_and_a_rejection_changes_nothing() {
    // GCRA: a 0-unit check at 1000 ms holds nothing; at 999 ms the key is fresh again.
    let g = Limit::new(Algorithm::Gcra, 1990, 1).with_burst(1);
    let mut s = g.state(1000);
    assert_eq!(s.check(&g, 1000, 0, 0).reset_ms, 0);
    let d = s.check(&g, 999, 0, 0);
    assert_eq!((d.remaining, d.reset_ms), (1, 0));
    // Token bucket: a full bucket has no clock, so a first request stamped before the state's
    // creation refills from its own time.
    let t = Limit::new(Algorithm::TokenBucket, 3950, 1).with_burst(2);
    let mut s = t.state(10_000);
    assert!(s.check(&t, 9_391, 1, 0).allowed);
    assert_eq!(s.check(&t, 9_392, 0, 0).remaining, 2);
    // A rejection keeps the state it saw: the refill up to 500 ms is not stored, so a clock
    // stepping back to 200 ms sees 200 ms of refill, not 500.
    let t = Limit::new(Algorithm::TokenBucket, 1, 1000).with_burst(1);
    let mut s = t.state(0);
    assert!(s.check(&t, 0, 1, 0).allowed);
    assert!(!s.check(&t, 500, 1, 0).allowed);
    assert_eq!(s.check(&t, 200, 0, 0).reset_ms, 800);
    // Leaky bucket: an empty queue is no queue.
    let q = Limit::new(Algorithm::LeakyBucket, 1, 1000).with_max_delay(0);
    let mut s = q.state(0);
    assert_eq!(s.check(&q, 1000, 0, 0).reset_ms, 0);
    assert_eq!(s.check(&q, 999, 0, 0).reset_ms, 0);
}

/// A token bucket's tokens at `t` are what it held at its last check, refilled for the time
/// since: a clock that steps back takes that refill back, down to empty and no further (as in
/// Redis, where such a bucket is the instant it is full again, kept as its key's expiry).
#[test]
fn a_clock_stepping_back_takes_back_refill_down_to_empty() {
    // 1 token per second, capacity 2: one taken at 10 s leaves 1 (full again at 11 s).
    let l = Limit::new(Algorithm::TokenBucket, 1, 1000).with_burst(2);
    let mut s = l.state(10_000);
    assert!(s.check(&l, 10_000, 1, 0).allowed);
    // At 9.5 s the bucket is 1.5 s short of full: half a token, so one is refused.
    let d = s.check(&l, 9_500, 1, 0);
    assert!(!d.allowed);
    assert_eq!((d.remaining, d.reset_ms, d.retry_after_ms), (0, 1500, 500));
    // Far back it is empty, never less: full 2 s later, one token 1 s later.
    let d = s.check(&l, 0, 0, 0);
    assert!(d.allowed);
    assert_eq!((d.remaining, d.reset_ms), (0, 2000));
    // That 0-unit check stored "empty at 0 s"; going forward again refills from there.
    assert_eq!(s.check(&l, 1_000, 0, 0).remaining, 1);
    assert!(s.check(&l, 2_000, 2, 0).allowed);
}

#[test]
fn a_whole_number_of_ms_per_unit_makes_the_state_one_instant() {
    let tb = |lim, per, burst| Limit::new(Algorithm::TokenBucket, lim, per).with_burst(burst);
    let g = |lim, per, burst| Limit::new(Algorithm::Gcra, lim, per).with_burst(burst);
    assert_eq!(tb(1000, 1000, 1000).expiry_state(), Some((1, 1000)));
    assert_eq!(tb(100, 60_000, 50).expiry_state(), Some((600, 30_000)));
    assert_eq!(tb(3, 1000, 5).expiry_state(), None);
    assert_eq!(g(100, 1000, 50).expiry_state(), Some((10, 500)));
    // GCRA rounds its interval up to a µs: 2000 per 1999 ms is 999.5 µs -> 1000 µs = 1 ms.
    assert_eq!(g(2000, 1999, 1).expiry_state(), Some((1, 1)));
    assert_eq!(g(3, 10, 5).expiry_state(), None);
    for alg in [
        Algorithm::FixedWindow,
        Algorithm::LeakyBucket,
        Algorithm::SlidingLog,
    ] {
        assert_eq!(Limit::new(alg, 10, 1000).expiry_state(), None);
    }
    assert_eq!(tb(0, 1000, 1).expiry_state(), None, "invalid: no panic");
}

#[test]
fn an_instant_too_far_for_lua_numbers_stays_a_string() {
    let l = Limit::new(Algorithm::TokenBucket, 1, 10_000_000_000).with_burst(1000);
    assert!(l.validate().is_ok());
    assert_eq!(l.expiry_state(), None);
}

/// The config parser, the API and the OpenAPI document read one table of names (strum's);
/// [`Algorithm::ALL`] lists the same algorithms in the same order, and serde spells them so.
#[test]
fn one_table_of_algorithm_names() {
    assert_eq!(
        Algorithm::names(),
        Algorithm::ALL.map(Algorithm::as_str).to_vec()
    );
    for a in Algorithm::ALL {
        assert_eq!(Algorithm::parse(a.as_str()), Some(a));
        assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        assert_eq!(
            serde_json::from_value::<Algorithm>(a.as_str().into()).unwrap(),
            a
        );
    }
    assert_eq!(Algorithm::parse("sliding_window"), None);
    let e = serde_json::from_value::<Algorithm>("sliding_window".into()).unwrap_err();
    assert!(
        e.to_string().contains("is not one of: token_bucket, gcra"),
        "{e}"
    );
}
