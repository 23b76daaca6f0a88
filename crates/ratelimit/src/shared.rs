//! Rules shared through Redis: one rule set for every replica on one Redis.
//!
//! Why: with the `redis` and `hybrid` backends the counters live in Redis, so replicas hold a
//! limit together; but rules set through the API lived in one replica's `rules.json`, and the
//! others went on deciding with the old rules (three replicas, a 100-token rule PUT to one, 900
//! checks over all three: 202 allowed). With those backends the rules live in Redis beside the
//! counters, versioned. Every replica keeps them locally (a check reads only the local copy: no
//! extra round trip on the hot path) and replaces them when the version in Redis changes.
//! `rules.json` is for the memory backend only (see [`crate::limiter`]).
//!
//! Keys, under the prefix of the counters (`fieldlab:rl:`; a counter key always goes on with
//! `{`, see [`crate::redis::RedisBackend::keys`], so the two never meet):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `fieldlab:rl:rules` ([`RULES_KEY`]) | hash | `doc`: the whole rule set as JSON (`default`, `keys`, `patterns`: the shape of `rules.json`); `version`: an integer, one more with each change |
//! | `fieldlab:rl:rules:changed` ([`RULES_CHANNEL`]) | pub/sub channel | the new version, published with each change |
//!
//! - **A change** is a compare-and-set in one Lua script ([`CAS_SCRIPT`]): it is written, the
//!   version incremented and the new version published only if the version it was made on is
//!   still current; otherwise it is made again on the current set (or refused, for a request
//!   with `If-Match`). So two replicas changing rules at once both get their change in.
//! - **The initial set**: when the hash is absent (first start, or Redis restarted without
//!   persistence), a replica writes the rules it knows (at start, those of `fieldlab.yaml`,
//!   with the changes of an existing `rules.json` over them); the same compare-and-set lets
//!   only one replica's set in. Its version continues from what that replica knew, so versions
//!   keep increasing.
//! - **Propagation**: each replica subscribes to the channel and also reads the version every
//!   [`POLL`] (one `HGET`), in a thread of its own; when it differs from the local one, it reads
//!   the set (`HMGET`) and puts it in use. A change is in use everywhere within about the
//!   notification's latency, at worst one poll interval.
//! - **Redis unreachable**: the replica keeps its last known rules, logs a warning once, sets
//!   `fieldlab_ratelimit_rules_stale` to 1 (and `in_sync: false` in the config listing), and
//!   reads the current set as soon as Redis answers again. Changes through its API are refused
//!   (503) meanwhile: they could not reach the other replicas.

use crate::redis::{timed, RedisBackend};
use crate::BackendError;
use futures::StreamExt;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

/// The hash of the shared rules: fields `doc` (JSON) and `version`.
pub const RULES_KEY: &str = "fieldlab:rl:rules";

/// Each change publishes its new version here.
pub const RULES_CHANNEL: &str = "fieldlab:rl:rules:changed";

/// How often a replica reads the version, whatever the notifications say.
pub const POLL: Duration = Duration::from_millis(300);

/// Compare-and-set of the rule set. `KEYS[1]`: the hash; ARGV: the expected version (0: the
/// hash is absent), the new document, a floor for the new version, the channel. Returns
/// `{1, new version}` or `{0, current version}`.
pub const CAS_SCRIPT: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then return {0, v} end
local nv = math.max(v, tonumber(ARGV[3])) + 1
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', nv)
redis.call('PUBLISH', ARGV[4], nv)
return {1, nv}
"#;

/// The outcome of a compare-and-set.
pub(crate) enum Cas {
    /// Written; the new version.
    Done(u64),
    /// Someone else changed the rules first.
    Stale,
}

fn err(e: redis::RedisError) -> BackendError {
    BackendError::Redis(e.to_string())
}

/// The version in Redis; None when there are no rules there yet.
pub(crate) async fn version(
    c: &mut ConnectionManager,
    t: Duration,
) -> Result<Option<u64>, BackendError> {
    let cmd = redis::cmd("HGET").arg(RULES_KEY).arg("version").to_owned();
    timed(t, cmd.query_async(c)).await?.map_err(err)
}

/// The version and document in Redis; None when there are no rules there yet.
pub(crate) async fn read(
    c: &mut ConnectionManager,
    t: Duration,
) -> Result<Option<(u64, String)>, BackendError> {
    let cmd = redis::cmd("HMGET")
        .arg(RULES_KEY)
        .arg("version")
        .arg("doc")
        .to_owned();
    let (v, doc): (Option<u64>, Option<String>) =
        timed(t, cmd.query_async(c)).await?.map_err(err)?;
    Ok(v.zip(doc))
}

/// Write `doc` if the version is still `expect`; the new version is at least `floor + 1`.
pub(crate) async fn cas(
    c: &mut ConnectionManager,
    t: Duration,
    expect: u64,
    doc: &str,
    floor: u64,
) -> Result<Cas, BackendError> {
    let script = redis::Script::new(CAS_SCRIPT);
    let mut inv = script.key(RULES_KEY);
    inv.arg(expect).arg(doc).arg(floor).arg(RULES_CHANNEL);
    let (done, v): (i64, u64) = timed(t, inv.invoke_async(c)).await?.map_err(err)?;
    Ok(if done == 1 { Cas::Done(v) } else { Cas::Stale })
}

/// What the watcher keeps in step with Redis (the limiter's state).
pub(crate) trait Target: Send + Sync {
    /// The local version and the local rule set as JSON.
    fn local(&self) -> (u64, String);
    /// Put `doc` at `version` in use, unless the local version is no longer `was` (a change
    /// made meanwhile; the next round looks again). Err: the document is not a valid rule set.
    fn install(&self, was: u64, version: u64, doc: &str) -> Result<(), String>;
    fn status(&self) -> &SyncStatus;
}

/// Whether this replica's rules are those in Redis, for logs, metrics and the config listing.
pub struct SyncStatus {
    in_sync: AtomicBool,
    error: Mutex<Option<String>>,
    stale: Gauge,
}

impl SyncStatus {
    pub(crate) fn new(stale: Gauge) -> SyncStatus {
        stale.set(1);
        SyncStatus {
            in_sync: AtomicBool::new(false),
            error: Mutex::new(Some("not read from redis yet".into())),
            stale,
        }
    }

    /// The rules were read from Redis at the last attempt.
    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Relaxed)
    }

    /// Why they were not.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// Record one round; log only when the state changes.
    fn record(&self, r: &Result<u64, BackendError>) {
        let was = self.in_sync.load(Ordering::Relaxed);
        match r {
            Ok(v) => {
                if !was {
                    tracing::info!(
                        version = v,
                        key = RULES_KEY,
                        "rate-limit rules in sync with redis"
                    );
                }
                self.in_sync.store(true, Ordering::Relaxed);
                *self.error.lock() = None;
                self.stale.set(0);
            }
            Err(e) => {
                let mut last = self.error.lock();
                if was || last.as_deref() == Some("not read from redis yet") {
                    tracing::warn!(error = %e, key = RULES_KEY, "cannot read the rate-limit rules from redis; deciding with the last known rules until it answers");
                }
                *last = Some(e.to_string());
                self.in_sync.store(false, Ordering::Relaxed);
                self.stale.set(1);
            }
        }
    }
}

/// Watch the rules in Redis for `target`, on a thread of its own with its own connections
/// (`redis`), until the target is dropped. `first` gets a message after the first round.
pub(crate) fn spawn(
    redis: RedisBackend,
    target: Weak<dyn Target>,
    first: std::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ratelimit-rules".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(watch(redis, target, first));
        })
        .map(drop)
}

async fn watch(redis: RedisBackend, target: Weak<dyn Target>, first: std::sync::mpsc::Sender<()>) {
    let mut first = Some(first);
    let mut sub: Option<redis::aio::PubSub> = None;
    loop {
        let Some(t) = target.upgrade() else {
            return;
        };
        let r = sync_once(&redis, &*t).await;
        t.status().record(&r);
        drop(t);
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        if sub.is_none() && r.is_ok() {
            sub = subscribe(&redis).await;
        }
        let gone = match &mut sub {
            Some(s) => {
                let mut msgs = s.on_message();
                // None: the subscription's connection is gone; poll until it can be made again.
                matches!(tokio::time::timeout(POLL, msgs.next()).await, Ok(None))
            }
            None => {
                tokio::time::sleep(POLL).await;
                false
            }
        };
        if gone {
            sub = None;
        }
    }
}

async fn subscribe(redis: &RedisBackend) -> Option<redis::aio::PubSub> {
    let t = redis.timeout().max(Duration::from_millis(100));
    let go = async {
        let mut ps = redis.client().get_async_pubsub().await?;
        ps.subscribe(RULES_CHANNEL).await?;
        Ok::<_, redis::RedisError>(ps)
    };
    match tokio::time::timeout(t * 2, go).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot subscribe to {RULES_CHANNEL}; polling");
            None
        }
        Err(_) => None,
    }
}

/// One round: read the version; when it differs from the local one, read the set and put it
/// in use; when Redis has none, write the local set as the initial one. The version in use.
async fn sync_once(redis: &RedisBackend, t: &dyn Target) -> Result<u64, BackendError> {
    let to = redis.timeout();
    let mut c = redis.connection().await?;
    let (was, doc) = t.local();
    match version(&mut c, to).await? {
        Some(v) if v == was => return Ok(v),
        Some(_) => {}
        None => {
            // Either ours gets in or another replica's did first: read what is there.
            cas(&mut c, to, 0, &doc, was).await?;
        }
    }
    let (v, doc) = read(&mut c, to)
        .await?
        .ok_or_else(|| BackendError::Redis(format!("{RULES_KEY} vanished while read")))?;
    t.install(was, v, &doc).map_err(|e| {
        BackendError::Redis(format!(
            "the rules in {RULES_KEY} at version {v} are not valid ({e}); keeping the last good ones"
        ))
    })?;
    Ok(v)
}
