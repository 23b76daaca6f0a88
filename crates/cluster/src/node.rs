//! One replica in the cluster: its membership, its partition leases, and the readers of the
//! partitions it owns.
//!
//! Every `lease / 5` the replica
//! 1. renews its member record `member.<id>` (its URL and the partitions it has caught up on)
//!    in the key-value bucket, whose entries expire `lease` after their last write;
//! 2. reads the member list and computes the desired owner of every partition ([`assign`]);
//! 3. for each partition: renews its lease `owner.<p>` if it holds it (compare-and-set on the
//!    revision, so a lease that lapsed and was taken is never taken back), hands it over to the
//!    desired owner once that one has caught up (compare-and-set to the new owner's id: no
//!    moment without an owner), or creates it if it is free and desired here;
//! 4. reads (with an ordered consumer from its own offset) every partition it holds or is
//!    desired to hold — the latter to catch up before the hand-over.
//!
//! Ownership decides who answers reads for a partition's devices. Reading does not need it:
//! each replica reads the log from its own offset, so two replicas reading one partition for a
//! moment cannot disturb each other's order. Leases not renewed within 4/5 of `lease` are
//! dropped locally before they lapse in NATS, so two replicas never both claim to own.

use crate::assign::assign;
use crate::offsets::Offsets;
use crate::{topic_of, ClusterConfig, ClusterError, BUCKET, SUBJECT_PREFIX};
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy, kv, stream};
use fieldlab_core::backoff::Backoff;
use fieldlab_core::cluster::ClusterView;
use fieldlab_ingest::{Committed, LogMsg};
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What [`crate::node::start`] hands the caller: the running node, the messages to feed to
/// [`fieldlab_ingest::start_log`], and the callback ingest calls after each durable batch.
pub struct Started {
    pub cluster: Cluster,
    pub rx: mpsc::Receiver<LogMsg>,
    pub committed: Committed,
}

/// The running node. [`Cluster::stop`] hands back its leases.
pub struct Cluster {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// A replica's record in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct MemberRecord {
    url: String,
    /// Which process wrote it (two processes with one replica id would take turns).
    #[serde(default)]
    instance: String,
    /// Partitions this replica has read up to the log's end (ready to be handed over).
    ready: Vec<u32>,
}

/// What `/api/v1/cluster` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub me: String,
    pub members: Vec<MemberStatus>,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// The replica holding the lease, as last seen.
    pub owner: Option<String>,
    /// The replica that should hold it, by the current member list.
    pub desired: Option<String>,
    /// Is this replica reading the partition?
    pub reading: bool,
    /// Newest stream sequence durable in this replica's store.
    pub committed: u64,
    /// Has this replica read the partition up to the log's end (as last seen)?
    pub caught_up: bool,
    /// Messages still to read, as NATS last reported (0 when not reading).
    pub pending: u64,
}

#[derive(Debug)]
struct Shared {
    me: String,
    url: String,
    n: u32,
    data_dir: PathBuf,
    owned: RwLock<BTreeSet<u32>>,
    /// (id, url) of live members, this one included, sorted by id.
    members: RwLock<Vec<(String, String)>>,
    owners: RwLock<BTreeMap<u32, String>>,
    desired: RwLock<BTreeMap<u32, String>>,
    reading: RwLock<BTreeSet<u32>>,
    offsets: Mutex<Offsets>,
    saved: Mutex<Instant>,
    /// Newest sequence handed to ingest, per partition (ahead of `offsets` by what is in
    /// flight): a reader restarted meanwhile resumes after it, not after the committed one.
    sent: Mutex<BTreeMap<u32, u64>>,
    /// The sequence that was the log's end when a reader last saw nothing pending.
    target: Mutex<BTreeMap<u32, u64>>,
    /// Partitions whose reader has caught up since it started.
    caught: Mutex<BTreeSet<u32>>,
    /// Messages of each partition still to read after the last one read (as NATS reported).
    pending: Mutex<BTreeMap<u32, u64>>,
    metrics: Metrics,
    /// A misconfiguration seen while running (two replicas with one id, partitions that do
    /// not match the NATS mapping): `/ready` reports it until it is fixed and restarted.
    problem: Mutex<Option<String>>,
    /// This process's instance of the replica id (tells a restarted replica from a twin).
    instance: String,
    /// Revision of this replica's last member record write.
    member_rev: Mutex<u64>,
}

/// `fieldlab_cluster_*` gauges, updated at every tick of the node.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    members: prometheus_client::metrics::gauge::Gauge,
    owned: prometheus_client::metrics::gauge::Gauge,
    reading: prometheus_client::metrics::gauge::Gauge,
    pending: prometheus_client::metrics::gauge::Gauge,
}

impl Metrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "fieldlab_cluster_members",
            "Live replicas of the cluster, as this replica sees them",
            self.members.clone(),
        );
        r.register(
            "fieldlab_cluster_partitions_owned",
            "Partitions whose lease this replica holds (it answers for their devices)",
            self.owned.clone(),
        );
        r.register(
            "fieldlab_cluster_partitions_reading",
            "Partitions this replica reads (owned, or about to be handed over to it)",
            self.reading.clone(),
        );
        r.register(
            "fieldlab_cluster_pending_messages",
            "Messages of the partitions this replica reads that it has not read yet (its lag)",
            self.pending.clone(),
        );
    }
}

impl ClusterView for Shared {
    fn me(&self) -> String {
        self.me.clone()
    }

    fn owns(&self, device_id: &str) -> bool {
        self.owned
            .read()
            .contains(&crate::partition(device_id, self.n))
    }

    fn peers(&self) -> Vec<String> {
        self.members
            .read()
            .iter()
            .filter(|(id, _)| *id != self.me)
            .map(|(_, url)| url.clone())
            .collect()
    }
}

impl Shared {
    fn committed(&self, p: u32) -> u64 {
        self.offsets.lock().committed.get(&p).copied().unwrap_or(0)
    }

    /// Ingest made these positions durable.
    fn commit(&self, positions: &[(u32, u64)]) {
        {
            let mut o = self.offsets.lock();
            for (p, seq) in positions {
                let c = o.committed.entry(*p).or_insert(0);
                *c = (*c).max(*seq);
            }
        }
        // At most a few writes a second; the node's tick writes the rest.
        if self.saved.lock().elapsed() >= Duration::from_millis(200) {
            self.save();
        }
    }

    fn save(&self) {
        let o = self.offsets.lock().clone();
        *self.saved.lock() = Instant::now();
        if let Err(e) = o.save(&self.data_dir) {
            tracing::warn!(error = %e, "cannot write cluster/offsets.json (a restart reads more of the log again)");
        }
    }

    fn resume_from(&self, p: u32) -> u64 {
        let sent = self.sent.lock().get(&p).copied().unwrap_or(0);
        self.committed(p).max(sent) + 1
    }

    /// Has the reader of `p` read it to the log's end (once) since it started? Stays true
    /// while it keeps reading: a busy partition is rarely at its very end, and `/ready` must
    /// not flap with every message.
    fn caught_up(&self, p: u32) -> bool {
        if self.caught.lock().contains(&p) {
            return true;
        }
        let done = self
            .target
            .lock()
            .get(&p)
            .is_some_and(|t| self.committed(p) >= *t);
        if done {
            self.caught.lock().insert(p);
        }
        done
    }
}

/// A cheap handle on the running node, for the HTTP server and `/ready`.
#[derive(Clone, Debug)]
pub struct Handle(Arc<Shared>);

impl Cluster {
    /// This replica's view, for the HTTP server.
    pub fn view(&self) -> Arc<dyn ClusterView> {
        self.shared.clone()
    }

    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    pub fn status(&self) -> Status {
        self.handle().status()
    }

    pub fn settled(&self) -> Result<(), String> {
        self.handle().settled()
    }

    /// Register the `fieldlab_cluster_*` gauges.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        self.shared.metrics.register(r);
    }

    /// Stop reading, save the offsets, and hand back the leases and the member record so the
    /// others take over at once (not after the lease lapses).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        self.shared.save();
    }
}

impl Handle {
    pub fn status(&self) -> Status {
        let s = &self.0;
        let owners = s.owners.read().clone();
        let desired = s.desired.read().clone();
        let reading = s.reading.read().clone();
        Status {
            me: s.me.clone(),
            members: s
                .members
                .read()
                .iter()
                .map(|(id, url)| MemberStatus {
                    id: id.clone(),
                    url: url.clone(),
                })
                .collect(),
            partitions: (0..s.n)
                .map(|p| PartitionStatus {
                    partition: p,
                    owner: owners.get(&p).cloned(),
                    desired: desired.get(&p).cloned(),
                    reading: reading.contains(&p),
                    committed: s.committed(p),
                    caught_up: s.caught_up(p),
                    pending: if reading.contains(&p) {
                        s.pending.lock().get(&p).copied().unwrap_or(0)
                    } else {
                        0
                    },
                })
                .collect(),
        }
    }

    /// Has this replica settled into the cluster: every partition has an owner, it holds every
    /// partition meant for it, and has read each to the log's end? `Err` says what is missing
    /// (for `/ready`: a replica still catching up answers for less than its share).
    pub fn settled(&self) -> Result<(), String> {
        let s = &self.0;
        if let Some(p) = s.problem.lock().clone() {
            return Err(p);
        }
        let (owners, desired, owned) = (s.owners.read(), s.desired.read(), s.owned.read());
        if owners.len() < s.n as usize {
            return Err(format!(
                "cluster: {} of {} partitions have an owner yet",
                owners.len(),
                s.n
            ));
        }
        for (p, d) in desired.iter() {
            if *d == s.me && !owned.contains(p) {
                return Err(format!("cluster: partition {p} not taken over yet"));
            }
        }
        if let Some(p) = owned.iter().find(|p| !s.caught_up(**p)) {
            return Err(format!(
                "cluster: still reading partition {p} up to the log's end"
            ));
        }
        Ok(())
    }
}

/// Join the cluster: connect to NATS, make sure the stream and the lease bucket exist, and
/// start the node. `url` is where the other replicas reach this one's HTTP API.
pub async fn start(
    cfg: &ClusterConfig,
    me: String,
    url: String,
    data_dir: &Path,
    channel: usize,
) -> Result<Started, ClusterError> {
    let nats_url = cfg.nats_url.clone().unwrap_or_default();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("fieldlab-{me}"))
        .connection_timeout(Duration::from_secs(5));
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(c), Some(k)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(c.clone(), k.clone());
    }
    let client = opts
        .connect(&nats_url)
        .await
        .map_err(|e| ClusterError::Connect {
            url: fieldlab_core::redact::url(&nats_url),
            error: e.to_string(),
        })?;
    let js = jetstream::new(client);
    let js_err = |what: &str| {
        let what = what.to_string();
        move |e: async_nats::Error| ClusterError::JetStream {
            what,
            error: e.to_string(),
        }
    };
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            max_age: cfg.retention.into(),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("the stream")(e.into()))?;
    let created = stream
        .info()
        .await
        .map_err(|e| js_err("the stream's info")(e.into()))?
        .created
        .unix_timestamp_nanos()
        .to_string();
    let lease: Duration = cfg.lease.into();
    // The lease bucket. Its stream is created here with the settings a key-value bucket has
    // (what `create_key_value` would send): async-nats 0.52 first asks for the account's info,
    // whose 2.9 answer it cannot parse.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{BUCKET}"),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        max_age: lease,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| js_err("the lease bucket")(e.into()))?;
    let kv = js
        .get_key_value(BUCKET)
        .await
        .map_err(|e| js_err("the lease bucket")(e.into()))?;
    let shared = Arc::new(Shared {
        me,
        url,
        n: cfg.partitions,
        data_dir: data_dir.to_path_buf(),
        owned: Default::default(),
        members: Default::default(),
        owners: Default::default(),
        desired: Default::default(),
        reading: Default::default(),
        offsets: Mutex::new(Offsets::load(data_dir, &created)),
        saved: Mutex::new(Instant::now()),
        sent: Default::default(),
        target: Default::default(),
        caught: Default::default(),
        pending: Default::default(),
        metrics: Metrics::default(),
        problem: Mutex::new(None),
        instance: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ),
        member_rev: Mutex::new(0),
    });
    let (tx, rx) = mpsc::channel(channel.max(1));
    let committed: Committed = {
        let s = shared.clone();
        Arc::new(move |c: &[(u32, u64)]| s.commit(c))
    };
    let cancel = CancellationToken::new();
    let node = Node {
        shared: shared.clone(),
        js,
        kv,
        stream: cfg.stream.clone(),
        tx,
        lease,
        held: BTreeMap::new(),
        readers: BTreeMap::new(),
    };
    let task = tokio::spawn(node.run(cancel.clone()));
    Ok(Started {
        cluster: Cluster {
            shared,
            cancel,
            task,
        },
        rx,
        committed,
    })
}

struct Node {
    shared: Arc<Shared>,
    js: jetstream::Context,
    kv: kv::Store,
    stream: String,
    tx: mpsc::Sender<LogMsg>,
    lease: Duration,
    /// Leases held: partition -> (revision, last successful renewal).
    held: BTreeMap<u32, (u64, Instant)>,
    readers: BTreeMap<u32, (CancellationToken, JoinHandle<()>)>,
}

type Step<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Node {
    async fn run(mut self, cancel: CancellationToken) {
        let tick = self.lease / 5;
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "cluster: cannot renew membership and leases (NATS unreachable?); retrying");
            }
            // A lease not renewed for 4/5 of its life is given up here before it lapses there.
            let limit = self.lease * 4 / 5;
            let before = self.held.len();
            self.held.retain(|_, (_, ok)| ok.elapsed() < limit);
            if self.held.len() < before {
                tracing::warn!("cluster: leases not renewed in time were given up");
            }
            *self.shared.owned.write() = self.held.keys().copied().collect();
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = cancel.cancelled() => break,
            }
        }
        self.leave().await;
    }

    async fn step(&mut self) -> Step<()> {
        let me = self.shared.me.clone();
        let n = self.shared.n;
        let ready: Vec<u32> = self
            .readers
            .keys()
            .copied()
            .filter(|p| self.shared.caught_up(*p))
            .collect();
        let record = MemberRecord {
            url: self.shared.url.clone(),
            instance: self.shared.instance.clone(),
            ready,
        };
        let key = format!("member.{me}");
        // Someone else wrote this replica's record since its last write: another running
        // process has the same replica id (a restarted replica's old record just lapses).
        let last = *self.shared.member_rev.lock();
        if let Some(e) = self.kv.entry(key.clone()).await? {
            if let Ok(other) = serde_json::from_slice::<MemberRecord>(&e.value) {
                if last != 0 && e.revision != last && other.instance != self.shared.instance {
                    let msg = format!(
                        "cluster: another running replica uses the id `{me}` (at {}); give each replica its own cluster.replica_id",
                        other.url
                    );
                    tracing::error!("{msg}");
                    *self.shared.problem.lock() = Some(msg);
                }
            }
        }
        let rev = self
            .kv
            .put(key, serde_json::to_vec(&record)?.into())
            .await?;
        *self.shared.member_rev.lock() = rev;
        // The live members (their records lapse `lease` after their last renewal).
        let mut members: BTreeMap<String, MemberRecord> = BTreeMap::new();
        let mut keys = self.kv.keys().await?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            names.push(k?);
        }
        for k in names {
            let Some(id) = k.strip_prefix("member.") else {
                continue;
            };
            if let Some(e) = self.kv.entry(k.clone()).await? {
                if e.operation == kv::Operation::Put {
                    if let Ok(r) = serde_json::from_slice::<MemberRecord>(&e.value) {
                        members.insert(id.to_string(), r);
                    }
                }
            }
        }
        members.insert(me.clone(), record);
        let ids: Vec<String> = members.keys().cloned().collect();
        let desired = assign(n, &ids);
        let mut owners = BTreeMap::new();
        for p in 0..n {
            let want = desired[p as usize].map(|i| ids[i].clone());
            let key = format!("owner.{p}");
            let holder = self
                .kv
                .entry(key.clone())
                .await?
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.revision));
            match holder {
                Some((h, rev)) if h == me => {
                    let next = match &want {
                        Some(w) if *w != me && members[w].ready.contains(&p) => w.clone(),
                        _ => me.clone(),
                    };
                    match self.kv.update(&key, next.clone().into(), rev).await {
                        Ok(r) if next == me => {
                            self.held.insert(p, (r, Instant::now()));
                            owners.insert(p, me.clone());
                        }
                        Ok(_) => {
                            tracing::info!(partition = p, to = %next, "cluster: partition handed over");
                            self.held.remove(&p);
                            owners.insert(p, next);
                        }
                        Err(e) => {
                            tracing::warn!(partition = p, error = %e, "cluster: lease lost");
                            self.held.remove(&p);
                        }
                    }
                }
                Some((h, _)) => {
                    if self.held.remove(&p).is_some() {
                        tracing::warn!(partition = p, holder = %h, "cluster: lease taken by another replica");
                    }
                    owners.insert(p, h);
                }
                None => {
                    self.held.remove(&p);
                    if want.as_deref() == Some(me.as_str()) {
                        if let Ok(r) = self.kv.create(&key, me.clone().into()).await {
                            tracing::info!(partition = p, "cluster: partition taken");
                            self.held.insert(p, (r, Instant::now()));
                            owners.insert(p, me.clone());
                        }
                    }
                }
            }
        }
        // Read what is held, and what is desired here (to catch up before the hand-over).
        let mut read: BTreeSet<u32> = self.held.keys().copied().collect();
        for p in 0..n {
            if desired[p as usize].is_some_and(|i| ids[i] == me) {
                read.insert(p);
            }
        }
        let stale: Vec<u32> = self
            .readers
            .iter()
            .filter(|(p, (_, h))| !read.contains(p) || h.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if let Some((c, h)) = self.readers.remove(&p) {
                c.cancel();
                let _ = h.await;
            }
        }
        for p in &read {
            if !self.readers.contains_key(p) {
                // A new reader must catch up anew before it counts as caught up.
                self.shared.caught.lock().remove(p);
                self.shared.target.lock().remove(p);
                let c = CancellationToken::new();
                let h = tokio::spawn(read_partition(
                    self.shared.clone(),
                    self.js.clone(),
                    self.stream.clone(),
                    *p,
                    self.tx.clone(),
                    c.clone(),
                ));
                self.readers.insert(*p, (c, h));
            }
        }
        *self.shared.members.write() = members
            .iter()
            .map(|(id, r)| (id.clone(), r.url.clone()))
            .collect();
        *self.shared.owners.write() = owners;
        *self.shared.desired.write() = (0..n)
            .filter_map(|p| desired[p as usize].map(|i| (p, ids[i].clone())))
            .collect();
        let m = &self.shared.metrics;
        m.members.set(members.len() as i64);
        m.owned.set(self.held.len() as i64);
        m.reading.set(read.len() as i64);
        m.pending.set(
            self.shared
                .pending
                .lock()
                .iter()
                .filter(|(p, _)| read.contains(p))
                .map(|(_, n)| *n as i64)
                .sum(),
        );
        *self.shared.reading.write() = read;
        self.shared.save();
        Ok(())
    }

    /// Stop the readers, then hand back the leases and the member record.
    async fn leave(&mut self) {
        for (_, (c, h)) in std::mem::take(&mut self.readers) {
            c.cancel();
            let _ = h.await;
        }
        for (p, (rev, _)) in std::mem::take(&mut self.held) {
            let _ = self
                .kv
                .delete_expect_revision(format!("owner.{p}"), Some(rev))
                .await;
        }
        let _ = self.kv.delete(format!("member.{}", self.shared.me)).await;
        self.shared.owned.write().clear();
    }
}

/// Read partition `p` from this replica's offset into ingest, in log order, until cancelled;
/// reconnects (from where it stopped) after errors.
async fn read_partition(
    shared: Arc<Shared>,
    js: jetstream::Context,
    stream: String,
    p: u32,
    tx: mpsc::Sender<LogMsg>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::jittered(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match read_once(&shared, &js, &stream, p, &tx, &cancel).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cluster: reading the partition failed; resuming");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    }
}

async fn read_once(
    shared: &Shared,
    js: &jetstream::Context,
    stream: &str,
    p: u32,
    tx: &mpsc::Sender<LogMsg>,
    cancel: &CancellationToken,
) -> Step<()> {
    let from = shared.resume_from(p);
    let s = js.get_stream(stream).await?;
    let mut consumer = s
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{SUBJECT_PREFIX}.{p}.>"),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        shared.target.lock().insert(p, from - 1);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::select! {
            m = messages.next() => m,
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(m) = next else {
            return Err("the consumer ended".into());
        };
        let m = m?;
        let info = m.info()?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let received_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let Some((_, topic)) = topic_of(m.subject.as_str()) else {
            continue;
        };
        // The device must be on the partition this replica computes for it, or reads would
        // look for it on the wrong replica: cluster.partitions differs from the mapping's N.
        if let Some(id) = topic.split('/').nth(2) {
            if crate::partition(id, shared.n) != p {
                let msg = format!(
                    "cluster: device `{id}` arrived on partition {p}, but with cluster.partitions = {} it belongs on {}; make cluster.partitions equal N of partition(N,2) in the NATS mapping (`fieldlab config nats-mapping`)",
                    shared.n,
                    crate::partition(id, shared.n)
                );
                if shared.problem.lock().is_none() {
                    tracing::error!("{msg}");
                }
                *shared.problem.lock() = Some(msg);
            }
        }
        let msg = LogMsg {
            topic,
            payload: m.payload.to_vec(),
            partition: p,
            seq,
            received_ms,
        };
        tokio::select! {
            r = tx.send(msg) => r.map_err(|_| "ingest stopped")?,
            _ = cancel.cancelled() => return Ok(()),
        }
        shared.sent.lock().insert(p, seq);
        shared.pending.lock().insert(p, pending);
        if pending == 0 {
            shared.target.lock().insert(p, seq);
        }
    }
}
