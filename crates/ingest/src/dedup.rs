//! Store a redelivered message once: a bounded memory of recent `(seq, ts)` per device.
//!
//! MQTT QoS 1 is at-least-once: a broker redelivers what was not acknowledged, and devices
//! retry. A reading whose device, sequence number and sample time were seen recently is a
//! duplicate; it is acknowledged but not stored or forwarded again. The sample time is part of
//! the key so that a device that restarted its counter is not mistaken for a duplicate.
//!
//! Memory is bounded per device: the last `window` pairs (FIFO). A duplicate older than the
//! window is stored again, which the store absorbs (same series and time = replace) and so do
//! the sinks (idempotent upserts) — the window only keeps counts and fan-out exact.

use std::collections::{HashMap, HashSet, VecDeque};

/// Recent `(seq, ts_ms)` pairs of every device seen.
#[derive(Debug, Default)]
pub struct Dedup {
    window: usize,
    devices: HashMap<String, Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<(u64, i64)>,
    set: HashSet<(u64, i64)>,
}

impl Dedup {
    /// `window` = 0 turns de-duplication off.
    pub fn new(window: usize) -> Self {
        Dedup {
            window,
            devices: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.window > 0
    }

    /// Was this reading seen recently?
    pub fn seen(&self, device: &str, seq: u64, ts_ms: i64) -> bool {
        self.devices
            .get(device)
            .is_some_and(|r| r.set.contains(&(seq, ts_ms)))
    }

    /// Remember a reading (call only once it is durable, so a failed write is redelivered).
    pub fn remember(&mut self, device: &str, seq: u64, ts_ms: i64) {
        if self.window == 0 {
            return;
        }
        let r = match self.devices.get_mut(device) {
            Some(r) => r,
            None => self.devices.entry(device.to_string()).or_default(),
        };
        if !r.set.insert((seq, ts_ms)) {
            return;
        }
        r.order.push_back((seq, ts_ms));
        if r.order.len() > self.window {
            if let Some(old) = r.order.pop_front() {
                r.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window_per_device() {
        let mut d = Dedup::new(3);
        for seq in 0..5 {
            assert!(!d.seen("a", seq, seq as i64));
            d.remember("a", seq, seq as i64);
            assert!(d.seen("a", seq, seq as i64));
        }
        // Only the last three are remembered.
        assert!(!d.seen("a", 1, 1));
        assert!(d.seen("a", 2, 2) && d.seen("a", 4, 4));
        // Another device, or the same seq at another time (counter restarted), is new.
        assert!(!d.seen("b", 4, 4));
        assert!(!d.seen("a", 4, 99));
        assert_eq!(d.devices["a"].order.len(), 3);
        assert_eq!(d.devices["a"].set.len(), 3);
    }

    #[test]
    fn zero_window_is_off() {
        let mut d = Dedup::new(0);
        d.remember("a", 1, 1);
        assert!(!d.seen("a", 1, 1));
        assert!(!d.enabled());
    }
}
