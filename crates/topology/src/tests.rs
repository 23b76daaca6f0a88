//! `up` in-process: it starts every part on free ports, and on shutdown leaves the data in blocks.

use super::*;
use fieldlab_store::{Store, StoreOptions};
use std::sync::Mutex;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_everything_and_shutdown_leaves_blocks_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.path().to_path_buf();
    cfg.server.port = 0;
    cfg.mqtt.port = 0;
    let seen: Arc<Mutex<Option<Endpoints>>> = Arc::default();
    let s2 = seen.clone();
    up(cfg, tokio::time::sleep(Duration::from_secs(3)), move |e| {
        *s2.lock().unwrap() = Some(e.clone());
    })
    .await
    .unwrap();
    let e = seen.lock().unwrap().clone().expect("on_ready was called");
    assert_ne!(e.http.port(), 0);
    assert!(e.embedded_broker);
    assert!(e.mqtt_url.starts_with("mqtt://127.0.0.1:"));
    // The head was written as a block at shutdown, so the WAL has nothing left to replay.
    let blocks = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .count();
    assert_eq!(blocks, 1, "one block from the shutdown flush");
    let (store, rec) = Store::open(StoreOptions::new(dir.path())).unwrap();
    assert_eq!(rec.wal_points, 0);
    assert!(
        rec.block_points >= 3,
        "the default fleet sent data: {rec:?}"
    );
    let devices: std::collections::BTreeSet<String> = store
        .series(None)
        .into_iter()
        .map(|s| s.device_id)
        .collect();
    // The default fleet: the three legacy demo devices and one per lab station.
    assert_eq!(devices.len(), 9, "{devices:?}");
}

/// With auth off OPC UA is anonymous: beyond loopback it needs allow_open_network. With auth
/// on it takes fieldlab users only, and needs nothing more.
#[cfg(feature = "opcua")]
#[test]
fn an_exposed_opcua_server_needs_auth_or_allow_open_network() {
    let mut cfg = Config::default();
    cfg.opcua.host = "0.0.0.0".into();
    cfg.auth.allow_open_network = false;
    let e = check_exposure(&cfg).unwrap_err().to_string();
    assert!(e.contains("opcua.host = 0.0.0.0"), "{e}");
    cfg.auth.allow_open_network = true;
    check_exposure(&cfg).unwrap();
    cfg.auth.allow_open_network = false;
    cfg.auth.enabled = true;
    check_exposure(&cfg).unwrap();
    cfg.auth.enabled = false;
    cfg.opcua.enabled = false;
    check_exposure(&cfg).unwrap();
}
