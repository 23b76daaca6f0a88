//! The detector LRU is sized by [`fieldlab_watch::SERIES_STATE_BYTES`] a series: memory is
//! bounded by `ingest.state_memory_mb` only if one series' live detector really takes no more.
//! This counts the bytes a warmed-up default detector holds (every window full: two days read
//! every 10 s, past the seasonal day, the calibrations' 2000 ticks and the trend's 1000
//! minutes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts the bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The most bytes `spec`'s live detector holds over two days read every 10 s of `f(i)`.
fn most_bytes(spec: &str, f: impl Fn(u64) -> f64) -> isize {
    // What the first training of the process sets up once (candle's and rayon's pools and
    // caches) is not a series' state: one throwaway training first.
    {
        let mut ae = fieldlab_detect::build("autoencoder").unwrap();
        for i in 0..700u64 {
            ae.score(i as i64 * 10_000, f(i));
        }
    }
    let before = LIVE.load(Ordering::Relaxed);
    let mut d = fieldlab_detect::build_live(spec).unwrap();
    let mut most = 0;
    for i in 0..2 * 8640u64 {
        d.score(i as i64 * 10_000, f(i));
        most = most.max(LIVE.load(Ordering::Relaxed) - before);
    }
    drop(d);
    most
}

/// A uniform number in [0, 1) from `i` (a hash: no allocation).
fn unit(i: u64) -> f64 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64
}

#[test]
fn a_warmed_up_default_detector_fits_the_bytes_the_lru_assumes() {
    let room = |i: u64| {
        let t = i as f64 * 10.0;
        21.0 + 1.5 * (t / 86_400.0 * std::f64::consts::TAU).sin() + 0.3 * unit(i)
    };
    // Every value new: as many distinct shapes as a series can show.
    let wild = |i: u64| 1000.0 * unit(i) + if i.is_multiple_of(97) { 1e6 } else { 0.0 };
    for (name, most) in [
        ("a room temperature", most_bytes("ensemble", room)),
        ("uniform noise with spikes", most_bytes("ensemble", wild)),
    ] {
        println!(
            "default detector, {name}: at most {most} bytes over two days at 10 s; the LRU assumes {}",
            fieldlab_watch::SERIES_STATE_BYTES
        );
        assert!(
            (most as usize) <= fieldlab_watch::SERIES_STATE_BYTES,
            "{name}: {most} bytes > SERIES_STATE_BYTES"
        );
    }
}
