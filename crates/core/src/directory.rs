//! The device directory: every device fieldlab knows, whether it emulates it or only sees its
//! telemetry.
//!
//! The emulator registers its devices when it starts them; ingest marks a device as seen on every
//! parsed message; at start-up the store's series catalog seeds it, so devices seen before a
//! restart are still listed. `GET /api/v1/devices` and `active_devices_count` read it.

use parking_lot::RwLock;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceEntry {
    pub device_id: String,
    pub device_type: String,
    /// `true` when this fieldlab process emulates the device.
    pub emulated: bool,
    /// Last time (epoch ms, time of receipt) a message of the device was ingested.
    pub last_seen_ms: Option<i64>,
    /// Highest sequence number seen from the device.
    pub last_seq: Option<u64>,
    /// Messages ingested from the device by this process.
    pub messages: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceDirectory {
    inner: Arc<RwLock<BTreeMap<String, DeviceEntry>>>,
}

impl DeviceDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry<'a>(
        map: &'a mut BTreeMap<String, DeviceEntry>,
        device_id: &str,
        device_type: &str,
    ) -> &'a mut DeviceEntry {
        map.entry(device_id.to_string())
            .or_insert_with(|| DeviceEntry {
                device_id: device_id.to_string(),
                device_type: device_type.to_string(),
                emulated: false,
                last_seen_ms: None,
                last_seq: None,
                messages: 0,
            })
    }

    /// Record an emulated device (before it sends anything).
    pub fn register_emulated(&self, device_id: &str, device_type: &str) {
        let mut map = self.inner.write();
        let e = Self::entry(&mut map, device_id, device_type);
        e.emulated = true;
        e.device_type = device_type.to_string();
    }

    /// An emulated device was deleted: it is no longer emulated, and a device that never sent
    /// anything is forgotten (one with data stays known through its data).
    pub fn unregister_emulated(&self, device_id: &str) {
        let mut map = self.inner.write();
        if let Some(e) = map.get_mut(device_id) {
            e.emulated = false;
            if e.messages == 0 && e.last_seen_ms.is_none() {
                map.remove(device_id);
            }
        }
    }

    /// Record a device known from stored data (start-up), with the time of its newest point.
    pub fn register_stored(&self, device_id: &str, device_type: &str, newest_ms: i64) {
        let mut map = self.inner.write();
        let e = Self::entry(&mut map, device_id, device_type);
        e.last_seen_ms = Some(e.last_seen_ms.map_or(newest_ms, |t| t.max(newest_ms)));
    }

    /// Record one ingested message.
    pub fn seen(&self, device_id: &str, device_type: &str, seq: Option<u64>, at_ms: i64) {
        self.seen_many(device_id, device_type, seq, 1, at_ms)
    }

    /// Record `n` ingested messages of one device at once, `seq` the newest of their sequence
    /// numbers (a gateway's batch).
    pub fn seen_many(
        &self,
        device_id: &str,
        device_type: &str,
        seq: Option<u64>,
        n: u64,
        at_ms: i64,
    ) {
        let mut map = self.inner.write();
        let e = Self::entry(&mut map, device_id, device_type);
        if !device_type.is_empty() && e.device_type != device_type {
            e.device_type = device_type.to_string();
        }
        e.last_seen_ms = Some(e.last_seen_ms.map_or(at_ms, |t| t.max(at_ms)));
        if let Some(s) = seq {
            e.last_seq = Some(e.last_seq.map_or(s, |x| x.max(s)));
        }
        e.messages += n;
    }

    pub fn list(&self) -> Vec<DeviceEntry> {
        self.inner.read().values().cloned().collect()
    }

    pub fn get(&self, device_id: &str) -> Option<DeviceEntry> {
        self.inner.read().get(device_id).cloned()
    }

    /// Devices whose last message arrived at or after `since_ms`.
    pub fn active_since(&self, since_ms: i64) -> usize {
        self.inner
            .read()
            .values()
            .filter(|e| e.last_seen_ms.is_some_and(|t| t >= since_ms))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_emulated_device_is_forgotten_unless_it_has_data() {
        let d = DeviceDirectory::new();
        d.register_emulated("quiet", "TemperatureSensor");
        d.register_emulated("talked", "TemperatureSensor");
        d.seen("talked", "TemperatureSensor", Some(1), 1_000);
        d.unregister_emulated("quiet");
        d.unregister_emulated("talked");
        assert!(d.get("quiet").is_none());
        let t = d.get("talked").unwrap();
        assert!(!t.emulated && t.messages == 1);
    }

    #[test]
    fn merges_emulated_stored_and_seen() {
        let d = DeviceDirectory::new();
        d.register_emulated("t1", "TemperatureSensor");
        d.register_stored("old", "PressureValve", 50);
        d.seen("t1", "TemperatureSensor", Some(3), 100);
        d.seen("t1", "TemperatureSensor", Some(2), 90);
        let t1 = d.get("t1").unwrap();
        assert!(t1.emulated);
        assert_eq!(t1.last_seen_ms, Some(100));
        assert_eq!(t1.last_seq, Some(3));
        assert_eq!(t1.messages, 2);
        assert_eq!(d.list().len(), 2);
        assert_eq!(d.active_since(60), 1);
    }
}
