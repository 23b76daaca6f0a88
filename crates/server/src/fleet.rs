//! Any replica answers for the whole fleet: its own devices from its store, the others' by
//! asking their owners.
//!
//! Why it exists: with several `fieldlab up` replicas each owns whole partitions of the device
//! streams and keeps its devices' data in its own compressed store (the NATS stream is the
//! durable log; there is no shared database). A client, the UI or a load balancer may reach
//! any replica, and must see every device exactly once. So a fleet endpoint answers with
//! this replica's share, restricted to the devices it [`ClusterView::owns`], merged with each
//! peer's share, fetched with the same method, path and query plus
//! `fieldlab-scope: local` ([`SCOPE_HEADER`]) and the caller's credentials. A request that
//! carries that header is answered from the local share only and never fans out again.
//!
//! Each device is answered by exactly one replica, so merging is a union of per-device parts
//! (the handlers sort and cut them as a single replica would). No fleet endpoint aggregates
//! across devices (query and export buckets are per series, quality scores per device), so no
//! partial aggregates are merged; one that did would have to merge sums, counts, minima and
//! maxima (a mean as sum / count) and could not merge percentiles exactly.
//!
//! A peer that does not answer (refused, timed out, 5xx) makes the whole answer a 503 naming
//! it, with `Retry-After: 1`: never a silently partial answer. Ownership moves within seconds
//! when a replica dies, and the peer list stops naming it. A peer's 4xx (credentials it
//! refuses, say) is passed on as it came.
//!
//! Without a [`ClusterView`] (`AppState::cluster` is `None`) nothing here changes an answer:
//! every device is owned, there are no peers.

use crate::{AppState, Problem};
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fieldlab_core::cluster::{ClusterView, SCOPE_HEADER, SCOPE_LOCAL};
use serde::de::DeserializeOwned;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long a peer may take to answer its share.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The caller's credentials, passed on to the peers so they decide as this replica did.
const FORWARDED: [header::HeaderName; 3] = [
    header::AUTHORIZATION,
    header::HeaderName::from_static("x-api-key"),
    header::COOKIE,
];

/// The one HTTP client of all fan-outs (connections to peers are pooled).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client with default TLS roots")
    })
}

/// Who answers a request: this replica alone (no cluster, or a peer asking for its share),
/// or the fleet. An extractor: handlers take it beside their other arguments.
#[derive(Clone)]
pub struct Scope {
    cluster: Option<Arc<dyn ClusterView>>,
    fan_out: bool,
    uri: Uri,
    credentials: HeaderMap,
    /// What the peers' shares of this answer may hold in memory together (bytes).
    budget: usize,
}

impl FromRequestParts<AppState> for Scope {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let local = parts
            .headers
            .get(SCOPE_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(SCOPE_LOCAL.as_bytes()));
        let mut credentials = HeaderMap::new();
        // Only a request that fans out passes them on.
        let fan_out = s.cluster.is_some() && !local;
        for name in FORWARDED.iter().filter(|_| fan_out) {
            for v in parts.headers.get_all(name) {
                credentials.append(name.clone(), v.clone());
            }
        }
        Ok(Scope {
            cluster: s.cluster.clone(),
            fan_out,
            uri: parts.uri.clone(),
            credentials,
            budget: s.fleet_answer_max,
        })
    }
}

/// One peer's answer to a share request (any status but 5xx).
pub struct Share {
    pub peer: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Share {
    /// A successful share as `T`; a refusal (4xx) is passed on as the peer gave it.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, Failure> {
        if !self.status.is_success() {
            return Err(self.passed_on());
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| unavailable(&self.peer, &format!("it answered unreadable JSON: {e}")))
    }

    /// The peer's answer as this replica's (its status, content type and body).
    pub fn passed_on(self) -> Failure {
        let mut r = (self.status, self.body).into_response();
        if let Some(ct) = self.headers.get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        Failure(r)
    }
}

impl Scope {
    /// Part of a cluster (the answer is restricted to owned devices)?
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Does this request's answer include the peers' shares?
    pub fn fans_out(&self) -> bool {
        self.fan_out
    }

    /// Does this replica answer for `device_id` (always, without a cluster)?
    pub fn owns(&self, device_id: &str) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.owns(device_id))
    }

    /// [`Scope::owns`] as an owned closure, for blocking threads.
    pub fn owner(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let c = self.cluster.clone();
        move |d: &str| c.as_ref().is_none_or(|c| c.owns(d))
    }

    /// The answer of the peer that owns a device this replica does not own (the peers that do
    /// not answer 404 for it), passed on as it came; `None` when no peer knows the device or
    /// this request does not fan out.
    pub async fn from_owner(&self) -> Result<Option<Response>, Failure> {
        for share in self.shares(None).await? {
            if share.status != StatusCode::NOT_FOUND {
                return Ok(Some(share.passed_on().0));
            }
        }
        Ok(None)
    }

    /// Every peer's share of this request as `T` (none when this request does not fan out).
    pub async fn peers<T: DeserializeOwned>(&self) -> Result<Vec<T>, Failure> {
        self.shares(None)
            .await?
            .into_iter()
            .map(Share::json)
            .collect()
    }

    /// Every peer's answer to this request's path with the same query, or with `query`
    /// instead; 503 when one does not answer. Empty when this request does not fan out.
    pub async fn shares(&self, query: Option<&[(String, String)]>) -> Result<Vec<Share>, Failure> {
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.fan_out) else {
            return Ok(Vec::new());
        };
        let path_and_query = match query {
            None => self
                .uri
                .path_and_query()
                .map_or(self.uri.path(), |p| p.as_str())
                .to_string(),
            Some(_) => self.uri.path().to_string(),
        };
        // One budget for all shares together, read as they arrive: memory is bounded by
        // `server.fleet_answer_max_size`, not by how much the peers hold.
        let left = Arc::new(std::sync::atomic::AtomicUsize::new(self.budget));
        let budget = self.budget;
        let asks = cluster.peers().into_iter().map(|peer| {
            let left = left.clone();
            let url = format!("{}{path_and_query}", peer.trim_end_matches('/'));
            let mut req = client()
                .get(url)
                .headers(self.credentials.clone())
                .header(SCOPE_HEADER, SCOPE_LOCAL);
            if let Some(q) = query {
                req = req.query(q);
            }
            async move {
                let resp = req
                    .send()
                    .await
                    .map_err(|e| unavailable(&peer, &reason(&e)))?;
                let status = resp.status();
                if status.is_server_error() {
                    return Err(unavailable(&peer, &format!("it answered {status}")));
                }
                let headers = resp.headers().clone();
                let mut body = Vec::new();
                let mut resp = resp;
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| unavailable(&peer, &reason(&e)))?
                {
                    let n = chunk.len();
                    let ok = left
                        .fetch_update(
                            std::sync::atomic::Ordering::AcqRel,
                            std::sync::atomic::Ordering::Acquire,
                            |l| l.checked_sub(n),
                        )
                        .is_ok();
                    if !ok {
                        return Err(too_large(budget));
                    }
                    body.extend_from_slice(&chunk);
                }
                let body = Bytes::from(body);
                Ok(Share {
                    peer,
                    status,
                    headers,
                    body,
                })
            }
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }
}

/// 413: the peers' shares of one answer exceed `server.fleet_answer_max_size`.
pub fn too_large(budget: usize) -> Failure {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "fleet-answer-too-large",
        "The fleet's answer is too large to gather",
        format!(
            "the other replicas' shares of this answer exceed {} MiB (server.fleet_answer_max_size); narrow it (from/to, device_id, field, limit), or ask each replica for its own share with the header `{SCOPE_HEADER}: {SCOPE_LOCAL}`",
            budget >> 20
        ),
    )
    .into()
}

fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", PEER_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "the connection was refused or failed".into()
    } else {
        use std::error::Error;
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    }
}

/// 503 problem+json naming the replica that did not answer, with `Retry-After: 1`.
pub fn unavailable(peer: &str, why: &str) -> Failure {
    tracing::warn!(
        peer,
        why,
        "a replica did not answer its share of a fleet request"
    );
    let mut r = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "replica-unavailable",
        "A replica did not answer",
        format!(
            "the replica at {peer} did not answer its share ({why}); the answer would miss its devices. Its partitions move to a live replica within seconds: retry"
        ),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Failure(r)
}

/// An answer other than the handler's success: a problem of this replica, a peer that did
/// not answer (503), or a peer's refusal passed on.
pub struct Failure(pub Response);

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        Failure(p.into_response())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.0
    }
}
