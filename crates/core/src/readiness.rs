//! Readiness of the parts of a running fieldlab, for `/ready` and the startup banner.
//!
//! Each part (store, broker, ingest, emulator) flips its own flag; `/ready` answers 200 only
//! when every *required* part is up. Parts that are not configured are not required.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Readiness {
    parts: Arc<RwLock<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a part that must be up before fieldlab is ready (initially down).
    pub fn require(&self, part: &'static str) {
        self.parts.write().entry(part).or_insert(false);
    }

    pub fn set(&self, part: &'static str, up: bool) {
        self.parts.write().insert(part, up);
    }

    pub fn is_ready(&self) -> bool {
        self.parts.read().values().all(|v| *v)
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.parts.read().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_required_part_is_up() {
        let r = Readiness::new();
        r.require("store");
        r.require("ingest");
        assert!(!r.is_ready());
        r.set("store", true);
        assert!(!r.is_ready());
        r.set("ingest", true);
        assert!(r.is_ready());
        r.set("store", false);
        assert!(!r.is_ready());
    }
}
