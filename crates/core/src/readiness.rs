//! Readiness of the parts of a running fieldlab, for `/ready` and the startup banner.
//!
//! Each part (store, broker, ingest, emulator) flips its own flag; `/ready` answers 200 only
//! when every *required* part is up. Parts that are not configured are not required.
//!
//! A part can also be down *with a reason* ([`Readiness::fail`]), and a part can have a live
//! check ([`Readiness::check`]): a function asked each time readiness is read (the store's
//! `Store::health`, which fails while its disk does). A part is up when its flag is up and its
//! check passes; `/ready` shows the reason of each part that is down.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A live check: `Err(reason)` while the part cannot do its job.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone, Default)]
struct Part {
    up: bool,
    reason: Option<String>,
    check: Option<Check>,
}

/// Whether one part is up, and if not, why (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartStatus {
    pub up: bool,
    pub reason: Option<String>,
}

#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<RwLock<BTreeMap<&'static str, Part>>>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.status()).finish()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare a part that must be up before fieldlab is ready (initially down).
    pub fn require(&self, part: &'static str) {
        self.parts.write().entry(part).or_default();
    }

    /// Mark a part up or down (a reason given by [`Readiness::fail`] is cleared).
    pub fn set(&self, part: &'static str, up: bool) {
        let mut parts = self.parts.write();
        let p = parts.entry(part).or_default();
        p.up = up;
        p.reason = None;
    }

    /// Mark a part down, saying why.
    pub fn fail(&self, part: &'static str, reason: impl Into<String>) {
        let mut parts = self.parts.write();
        let p = parts.entry(part).or_default();
        p.up = false;
        p.reason = Some(reason.into());
    }

    /// Ask `check` whenever readiness is read: the part is down (with the check's reason) while
    /// it fails, whatever its flag says.
    pub fn check(
        &self,
        part: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.parts.write().entry(part).or_default().check = Some(Arc::new(check));
    }

    pub fn is_ready(&self) -> bool {
        self.status().values().all(|s| s.up)
    }

    /// Up or down per part.
    pub fn snapshot(&self) -> BTreeMap<&'static str, bool> {
        self.status().into_iter().map(|(k, s)| (k, s.up)).collect()
    }

    /// Up or down per part, with the reason of each part that is down (when one is known).
    pub fn status(&self) -> BTreeMap<&'static str, PartStatus> {
        // Checks run outside the lock: they may take their own.
        let parts: Vec<(&'static str, Part)> = self
            .parts
            .read()
            .iter()
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        parts
            .into_iter()
            .map(|(k, p)| {
                let failed = p.check.as_ref().and_then(|c| c().err());
                let status = match failed {
                    Some(reason) => PartStatus {
                        up: false,
                        reason: Some(reason),
                    },
                    None => PartStatus {
                        up: p.up,
                        reason: if p.up { None } else { p.reason },
                    },
                };
                (k, status)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

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

    #[test]
    fn reasons_and_live_checks() {
        let r = Readiness::new();
        r.set("store", true);
        r.fail("broker", "connection refused");
        let s = r.status();
        assert_eq!(s["broker"].reason.as_deref(), Some("connection refused"));
        assert!(s["store"].up && s["store"].reason.is_none());
        r.set("broker", true);
        assert!(r.is_ready());
        let disk_full = Arc::new(AtomicBool::new(true));
        let d = disk_full.clone();
        r.check("store", move || {
            if d.load(Ordering::Relaxed) {
                Err("No space left on device".into())
            } else {
                Ok(())
            }
        });
        assert!(!r.is_ready());
        assert_eq!(
            r.status()["store"],
            PartStatus {
                up: false,
                reason: Some("No space left on device".into())
            }
        );
        assert!(!r.snapshot()["store"]);
        disk_full.store(false, Ordering::Relaxed);
        assert!(r.is_ready());
        // The flag still counts: shutting down marks the store down whatever its check says.
        r.set("store", false);
        assert!(!r.is_ready());
    }
}
