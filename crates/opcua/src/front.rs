//! The OPC UA port's front door: per-client-address limits that async-opcua cannot apply.
//!
//! Why it exists: async-opcua 0.19 accepts on its own `TcpListener` and tells an
//! `AuthManager` nothing about the client (no address, no connection), so a password guesser
//! could open connection after connection and try user after user, held back only by the
//! per-user limiter. fieldlab therefore owns the public listener and relays each accepted
//! connection to the library's listener on loopback (`tokio::io::copy_bidirectional`),
//! after checking the client's address:
//!
//! - **new connections per address**: a keyed GCRA (`governor`) of
//!   [`CONNECT_BURST`] connections, refilled one per [`CONNECT_PERIOD`]; IPv6 counts by its /64
//!   (fieldlab-auth's [`address_key`]);
//! - **open connections per address** at most [`MAX_OPEN_PER_ADDRESS`], and at most
//!   [`MAX_OPEN`] in all;
//! - **failed sign-ins per connection**: at most [`MAX_FAILURES_PER_CONNECTION`] (see
//!   [`ConnectionFailures`], used by [`crate::access`]); after that every sign-in on that
//!   connection is refused without a password check;
//! - **failed sign-ins per address**: [`Relayed`] remembers which client each relayed
//!   loopback connection carries, and the patched async-opcua (vendor/README.md) tells the
//!   sign-in check its connection's peer, so fieldlab-auth's failure limiter counts OPC UA
//!   failures per client address (`auth.login.per_address`, doubling lockouts) exactly as it
//!   does for the token endpoint and MQTT.
//!
//! Together: one address gets at most `CONNECT_BURST + t / CONNECT_PERIOD` connections in `t`,
//! at most `MAX_FAILURES_PER_CONNECTION` guesses on each, and is locked out after
//! `auth.login.per_address` failures whatever user names it tries; the per-user limiter and
//! the bounded argon2 pool of fieldlab-auth apply on top. A refused connection is closed at once (the client sees the TCP connection end
//! before its Hello is answered) and counted in [`FrontStats`].

use fieldlab_auth::login::address_key;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// New connections one address may open at once before the refill rate applies.
pub const CONNECT_BURST: u32 = 60;
/// One more connection per address per this period once the burst is spent.
pub const CONNECT_PERIOD: Duration = Duration::from_secs(1);
/// Connections one address may hold open at the same time.
pub const MAX_OPEN_PER_ADDRESS: usize = 32;
/// Connections open in all (async-opcua's own session limit applies behind this).
pub const MAX_OPEN: usize = 1024;
/// Failed sign-ins one connection may make; later ones are refused without a check.
pub const MAX_FAILURES_PER_CONNECTION: u32 = 3;
/// Addresses the connection limiter remembers; beyond this (after dropping the idle ones) new
/// addresses are refused until some go idle, so memory stays bounded whatever clients do.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// What the front door refused, for logs and tests.
#[derive(Debug, Default)]
pub struct FrontStats {
    pub accepted: AtomicU64,
    pub refused_rate: AtomicU64,
    pub refused_open: AtomicU64,
}

/// Failed sign-ins per OPC UA connection. async-opcua runs a connection, its sign-ins
/// included, in one tokio task, so the task id names the connection.
#[derive(Default)]
pub struct ConnectionFailures {
    inner: Mutex<HashMap<tokio::task::Id, (u32, Instant)>>,
}

/// How long a connection's failure count is remembered (a connection idle longer than this
/// has been closed by the library's session timeout anyway).
const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Connections whose failures are remembered at most.
const MAX_TRACKED_CONNECTIONS: usize = 16_384;

impl ConnectionFailures {
    /// Whether the current connection has used up its failed sign-ins. Outside a tokio task
    /// (never the case inside async-opcua) nothing is counted.
    pub fn exhausted(&self) -> bool {
        let Some(id) = tokio::task::try_id() else {
            return false;
        };
        self.inner
            .lock()
            .get(&id)
            .is_some_and(|(n, _)| *n >= MAX_FAILURES_PER_CONNECTION)
    }

    /// Counts a failed sign-in on the current connection.
    pub fn record_failure(&self) {
        let Some(id) = tokio::task::try_id() else {
            return;
        };
        let now = Instant::now();
        let mut m = self.inner.lock();
        if m.len() >= MAX_TRACKED_CONNECTIONS && !m.contains_key(&id) {
            m.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_MEMORY);
            if m.len() >= MAX_TRACKED_CONNECTIONS {
                // Still full: forget the oldest entry (bounded memory beats a perfect count;
                // the per-address connection rate still bounds that address).
                if let Some(oldest) = m.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                    m.remove(&oldest);
                }
            }
        }
        let e = m.entry(id).or_insert((0, now));
        e.0 += 1;
        e.1 = now;
    }
}

/// The client behind each relayed connection, by the local port of the relay's loopback
/// socket (what async-opcua sees as the peer). Entries live as long as their relay, so there
/// are at most [`MAX_OPEN`].
#[derive(Default)]
pub struct Relayed {
    by_port: Mutex<HashMap<u16, IpAddr>>,
}

impl Relayed {
    /// The client address of a connection async-opcua accepted from `peer`: the relayed
    /// client's when `peer` is one of the front door's loopback sockets, else `peer`'s own.
    pub fn client_of(&self, peer: SocketAddr) -> IpAddr {
        if peer.ip().is_loopback() {
            if let Some(ip) = self.by_port.lock().get(&peer.port()) {
                return *ip;
            }
        }
        peer.ip()
    }
}

/// Forgets a relayed connection's client when the relay ends.
struct RelayedEntry<'a> {
    relayed: &'a Relayed,
    port: u16,
}

impl Drop for RelayedEntry<'_> {
    fn drop(&mut self) {
        self.relayed.by_port.lock().remove(&self.port);
    }
}

/// The per-address connection checks.
pub struct Front {
    /// Who is behind each relayed connection (shared with the sign-in check).
    pub relayed: Arc<Relayed>,
    rate: DefaultKeyedRateLimiter<String>,
    open: Mutex<HashMap<String, usize>>,
    pub stats: FrontStats,
}

/// One open relayed connection: gives its slot back when dropped.
struct OpenSlot {
    front: Arc<Front>,
    key: String,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut open = self.front.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Default for Front {
    fn default() -> Self {
        Front::new()
    }
}

impl Front {
    pub fn new() -> Front {
        let quota = Quota::with_period(CONNECT_PERIOD)
            .expect("CONNECT_PERIOD is not zero")
            .allow_burst(NonZeroU32::new(CONNECT_BURST).expect("CONNECT_BURST is not zero"));
        Front {
            relayed: Arc::default(),
            rate: RateLimiter::keyed(quota),
            open: Mutex::new(HashMap::new()),
            stats: FrontStats::default(),
        }
    }

    /// Admits a connection from `ip`, or says why not.
    fn admit(self: &Arc<Front>, ip: IpAddr) -> Result<OpenSlot, &'static str> {
        let key = address_key(ip);
        {
            let open = self.open.lock();
            let total: usize = open.values().sum();
            if total >= MAX_OPEN {
                self.stats.refused_open.fetch_add(1, Ordering::Relaxed);
                return Err("too many OPC UA connections are open");
            }
            if open.get(&key).copied().unwrap_or(0) >= MAX_OPEN_PER_ADDRESS {
                self.stats.refused_open.fetch_add(1, Ordering::Relaxed);
                return Err("too many OPC UA connections are open from this address");
            }
        }
        if self.rate.len() >= MAX_TRACKED_ADDRESSES {
            self.rate.retain_recent();
            self.rate.shrink_to_fit();
            if self.rate.len() >= MAX_TRACKED_ADDRESSES {
                self.stats.refused_rate.fetch_add(1, Ordering::Relaxed);
                return Err("too many client addresses are connecting");
            }
        }
        if self.rate.check_key(&key).is_err() {
            self.stats.refused_rate.fetch_add(1, Ordering::Relaxed);
            return Err("too many new OPC UA connections from this address");
        }
        *self.open.lock().entry(key.clone()).or_default() += 1;
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(OpenSlot {
            front: self.clone(),
            key,
        })
    }

    /// Accepts on `public` and relays admitted connections to `inner` until `cancel`.
    pub async fn run(
        self: Arc<Front>,
        public: TcpListener,
        inner: SocketAddr,
        cancel: CancellationToken,
    ) {
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            let (client, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = prune.tick() => {
                    self.rate.retain_recent();
                    continue;
                }
                r = public.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "OPC UA: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match self.admit(peer.ip()) {
                Ok(s) => s,
                Err(why) => {
                    tracing::info!(%peer, "OPC UA connection refused: {why}");
                    drop(client);
                    continue;
                }
            };
            let cancel = cancel.clone();
            let relayed = self.relayed.clone();
            tokio::spawn(async move {
                let _slot = slot;
                relay(client, peer.ip(), inner, &relayed, cancel).await;
            });
        }
    }
}

async fn relay(
    mut client: TcpStream,
    client_ip: IpAddr,
    inner: SocketAddr,
    relayed: &Relayed,
    cancel: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let mut server = match TcpStream::connect(inner).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "OPC UA: the server behind the front door is not reachable");
            return;
        }
    };
    let _ = server.set_nodelay(true);
    // Registered before any byte is relayed, so before the client can reach a sign-in.
    let _entry = match server.local_addr() {
        Ok(a) => {
            relayed.by_port.lock().insert(a.port(), client_ip);
            Some(RelayedEntry {
                relayed,
                port: a.port(),
            })
        }
        Err(_) => None,
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_the_refill_rate() {
        let f = Arc::new(Front::new());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..CONNECT_BURST {
            // Each connection closes at once: only the rate counts here.
            drop(f.admit(a).expect("within the burst"));
        }
        assert_eq!(
            f.admit(a).err(),
            Some("too many new OPC UA connections from this address"),
            "beyond the burst"
        );
        // Another address is not affected.
        assert!(f.admit("10.0.0.2".parse().unwrap()).is_ok());
        // IPv6 counts by its /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..CONNECT_BURST {
            drop(f.admit(v6a).unwrap());
        }
        assert!(f.admit(v6b).is_err());
        assert_eq!(f.stats.refused_rate.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn open_connections_per_address_are_capped_and_given_back() {
        let f = Arc::new(Front::new());
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        // Spend no rate tokens on this check: fill the open count directly.
        f.open
            .lock()
            .insert(address_key(a), MAX_OPEN_PER_ADDRESS - 1);
        let s = f.admit(a).expect("the last open slot");
        assert_eq!(
            f.admit(a).err(),
            Some("too many OPC UA connections are open from this address")
        );
        drop(s);
        assert!(
            f.admit(a).is_ok(),
            "a closed connection gives its slot back"
        );
    }

    #[test]
    fn relayed_connections_name_their_client() {
        let r = Relayed::default();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        r.by_port.lock().insert(40_000, client);
        let entry = RelayedEntry {
            relayed: &r,
            port: 40_000,
        };
        assert_eq!(r.client_of("127.0.0.1:40000".parse().unwrap()), client);
        // Another loopback port, or a direct peer, is its own client.
        assert_eq!(
            r.client_of("127.0.0.1:40001".parse().unwrap()),
            IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(
            r.client_of("198.51.100.1:40000".parse().unwrap()),
            IpAddr::from([198, 51, 100, 1])
        );
        drop(entry);
        assert_eq!(
            r.client_of("127.0.0.1:40000".parse().unwrap()),
            IpAddr::from([127, 0, 0, 1]),
            "forgotten when the relay ends"
        );
    }

    #[tokio::test]
    async fn failures_count_per_connection_task() {
        let fails = Arc::new(ConnectionFailures::default());
        let f = fails.clone();
        tokio::spawn(async move {
            for _ in 0..MAX_FAILURES_PER_CONNECTION {
                assert!(!f.exhausted());
                f.record_failure();
            }
            assert!(f.exhausted());
        })
        .await
        .unwrap();
        // Another connection (task) starts with none.
        let f = fails.clone();
        tokio::spawn(async move { assert!(!f.exhausted()) })
            .await
            .unwrap();
    }
}
