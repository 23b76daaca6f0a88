//! The limiter's clock: wall-clock milliseconds since the Unix epoch, read once per decision.
//!
//! Why not `SystemTime::now()` alone: on this class of machine (a VM, TSC clocksource) a
//! `clock_gettime(CLOCK_REALTIME)` costs ~55 ns, more than the rest of an in-process decision.
//! Here each call reads the CPU's time-stamp counter through `quanta` (~15 ns; quanta falls
//! back to the OS monotonic clock where the TSC is not invariant) and adds the elapsed time to
//! a wall-clock anchor. Each thread re-anchors on `SystemTime` every [`REANCHOR_NS`], so the
//! answer follows NTP slews and steps within that time and drifts from `SystemTime` by at most
//! the counter's frequency error over one interval (a few µs). Every decision still reads the
//! clock itself: nothing is cached between decisions but the anchor.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// How long one thread's anchor is trusted: 50 ms.
pub const REANCHOR_NS: u64 = 50_000_000;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// (raw counter at the anchor, epoch µs at the anchor); raw `u64::MAX` = no anchor yet.
#[derive(Clone, Copy)]
struct Anchor {
    raw: u64,
    epoch_us: i64,
}

thread_local! {
    static ANCHOR: Cell<Anchor> = const { Cell::new(Anchor { raw: u64::MAX, epoch_us: 0 }) };
}

fn system_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Wall-clock milliseconds since the Unix epoch (see the module docs).
#[inline]
pub fn now_ms() -> i64 {
    now_us().div_euclid(1000)
}

/// Wall-clock microseconds since the Unix epoch.
#[inline]
pub fn now_us() -> i64 {
    let clock = CLOCK.get_or_init(quanta::Clock::new);
    let raw = clock.raw();
    ANCHOR.with(|cell| {
        let a = cell.get();
        if raw >= a.raw {
            let ns = clock.delta_as_nanos(a.raw, raw);
            if ns < REANCHOR_NS {
                return a.epoch_us + (ns / 1000) as i64;
            }
        }
        // No anchor yet, its interval is over, or the counter went back (another socket's
        // TSC): take a new one. The counter is read after SystemTime, so the anchor is late by
        // at most the time between the two reads (well under a microsecond).
        let epoch_us = system_us();
        let raw = clock.raw();
        cell.set(Anchor { raw, epoch_us });
        epoch_us
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock_within_a_millisecond() {
        for i in 0..2_000 {
            let before = system_us();
            let ours = now_us();
            let after = system_us();
            // Within the bracket, up to the drift over one anchor interval and the rounding of
            // the anchor (both far below 1 ms).
            assert!(
                ours >= before - 1_000 && ours <= after + 1_000,
                "call {i}: {before} <= {ours} <= {after}"
            );
            if i % 200 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(7));
            }
        }
        let ms = now_ms();
        let sys = system_us() / 1000;
        assert!((sys - ms).abs() <= 1, "{ms} vs {sys}");
    }

    #[test]
    fn reanchors_after_the_interval() {
        let a = now_us();
        std::thread::sleep(std::time::Duration::from_nanos(REANCHOR_NS * 2));
        let b = now_us();
        let sys = system_us();
        assert!(
            b - a >= (REANCHOR_NS * 2 / 1000) as i64 - 1_000,
            "{a} -> {b}"
        );
        assert!((sys - b).abs() < 1_000, "{b} vs {sys}");
    }
}
