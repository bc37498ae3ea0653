//! A virtual proxy's upstream pool: its nodes (static addresses, and DNS names re-resolved so
//! a Kubernetes headless service's pods come and go), how a node is chosen, passive health,
//! and the clients that talk to them: inline HTTP/1.1 connections (`connections.rs`) for
//! plain-HTTP nodes, hyper-util's pooled client for TLS, HTTP/2 and upgrades.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;
use rustls::pki_types::ServerName;

use super::connections::{self, IdleConnections, InlineBody};
use crate::body::ProxyBody;

/// How often DNS names are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Most nodes one request is tried on when nodes cannot be reached.
const MAX_ATTEMPTS: usize = 3;
const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastOutstanding,
    /// Rendezvous hashing on the session, so a session stays on its node while it is healthy.
    StickySession,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub nodes: Vec<String>,
    /// Speak TLS to the nodes.
    pub tls: bool,
    /// Checked against the nodes' certificates; default: each node's DNS name, or its IP.
    pub tls_server_name: Option<String>,
    pub strategy: Strategy,
    pub http2: bool,
    pub eject_after_failures: u32,
    pub ejection_time: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// Ejection deadlines are kept as milliseconds since this instant, so that checking one on
/// every pick is an atomic load rather than a lock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn millis_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX)
}

/// One upstream address.
#[derive(Debug)]
pub struct Member {
    pub address: SocketAddr,
    /// `address` as a URI authority, made once rather than formatted per request.
    authority: http::uri::Authority,
    outstanding: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Ejected until this many milliseconds after `EPOCH`; 0 when never ejected.
    ejected_until_ms: AtomicU64,
    /// Kept-alive inline connections (plain-HTTP pools only).
    idle: Arc<IdleConnections>,
}

impl Member {
    fn new(address: SocketAddr) -> Self {
        let authority = address
            .to_string()
            .parse()
            .unwrap_or_else(|_| http::uri::Authority::from_static("localhost"));
        Self {
            address,
            authority,
            outstanding: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            idle: Arc::default(),
        }
    }

    fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure to connect; ejects the node after too many in a row.
    fn record_connect_failure(&self, settings: &UpstreamSettings) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= settings.eject_after_failures {
            let until = millis_since_epoch(Instant::now() + settings.ejection_time);
            self.ejected_until_ms.store(until, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.address, "upstream node ejected after connect failures");
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// Counts a request against its member until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Member>);

impl InFlight {
    fn new(member: Arc<Member>) -> Self {
        member.outstanding.fetch_add(1, Ordering::Relaxed);
        Self(member)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body from either client.
#[derive(Debug)]
// The inline body carries its connection and is much the larger; boxing it would cost an
// allocation per request to save bytes in a value that lives only as long as a response.
#[allow(clippy::large_enum_variant)]
enum UpstreamBody {
    Inline(InlineBody),
    Pooled(Incoming),
}

/// A response body that keeps its request counted until it has been read.
#[derive(Debug)]
pub struct CountedBody {
    inner: UpstreamBody,
    _in_flight: InFlight,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.inner {
            UpstreamBody::Inline(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Pooled(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            UpstreamBody::Inline(body) => body.is_end_stream(),
            UpstreamBody::Pooled(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            UpstreamBody::Inline(body) => body.size_hint(),
            UpstreamBody::Pooled(body) => body.size_hint(),
        }
    }
}

/// Why a request found no answer upstream; shown to clients only as a status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream node is configured")]
    NoNodes,
    #[error("cannot connect to upstream {0}")]
    Connect(SocketAddr),
    #[error("upstream {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("upstream {address} failed: {detail}")]
    Failed { address: SocketAddr, detail: String },
}

#[derive(Debug)]
pub struct UpstreamPool {
    settings: UpstreamSettings,
    members: ArcSwap<Vec<Arc<Member>>>,
    next: AtomicUsize,
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    /// The DNS name each resolved address came from, to verify its certificate against.
    names: Arc<ArcSwap<HashMap<IpAddr, String>>>,
    resolver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for UpstreamPool {
    fn drop(&mut self) {
        if let Some(task) = self
            .resolver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl UpstreamPool {
    /// Creates the pool; DNS names are resolved in the background from now on. `tls` is the
    /// node's client configuration for upstreams that speak TLS.
    pub fn new(settings: UpstreamSettings, tls: Arc<rustls::ClientConfig>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        // https URIs only when the pool speaks TLS; the connector leaves http ones alone.
        connector.enforce_http(false);
        let names: Arc<ArcSwap<HashMap<IpAddr, String>>> = Arc::default();
        let resolver = ServerNames {
            fixed: settings.tls_server_name.clone(),
            by_address: names.clone(),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .with_server_name_resolver(resolver)
            .enable_http1();
        let connector = if settings.http2 {
            builder.enable_http2().wrap_connector(connector)
        } else {
            builder.wrap_connector(connector)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(settings.http2)
            .build(connector);
        let static_members: Vec<Arc<Member>> = settings
            .nodes
            .iter()
            .filter_map(|node| node.parse::<SocketAddr>().ok())
            .map(|address| Arc::new(Member::new(address)))
            .collect();
        let has_names = settings
            .nodes
            .iter()
            .any(|node| node.parse::<SocketAddr>().is_err());
        let pool = Arc::new(Self {
            settings,
            members: ArcSwap::from_pointee(static_members),
            next: AtomicUsize::new(0),
            client,
            names,
            resolver: Mutex::new(None),
        });
        if has_names && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(resolve_forever(Arc::downgrade(&pool)));
            *pool.resolver.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        pool
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members.load_full()
    }

    /// (healthy, ejected) node counts, for metrics.
    pub fn health(&self) -> (usize, usize) {
        let now = millis_since_epoch(Instant::now());
        let members = self.members.load();
        let ejected = members
            .iter()
            .filter(|member| member.is_ejected(now))
            .count();
        (members.len() - ejected, ejected)
    }

    /// Chooses a node, skipping ejected ones (unless all are) and those in `tried`. Runs on
    /// every request, so it counts and indexes rather than collecting candidates.
    pub fn pick(&self, affinity: Option<&str>, tried: &[SocketAddr]) -> Option<Arc<Member>> {
        let members = self.members.load();
        let now = millis_since_epoch(Instant::now());
        let untried = |member: &&Arc<Member>| !tried.contains(&member.address);
        let healthy = members
            .iter()
            .filter(untried)
            .filter(|member| !member.is_ejected(now))
            .count();
        // With every node ejected, trying one beats refusing everyone.
        let only_healthy = healthy > 0;
        let count = if only_healthy {
            healthy
        } else {
            members.iter().filter(untried).count()
        };
        if count == 0 {
            return None;
        }
        let candidates = || {
            members
                .iter()
                .filter(untried)
                .filter(move |member| !(only_healthy && member.is_ejected(now)))
        };
        let nth = |index: usize| candidates().nth(index);
        let chosen = match (self.settings.strategy, affinity) {
            (Strategy::StickySession, Some(key)) => {
                candidates().max_by_key(|member| rendezvous_score(key, member.address))
            }
            (Strategy::LeastOutstanding, _) if count > 1 => {
                let mut rng = rand::rng();
                let first = nth(rng.random_range(0..count));
                let second = nth(rng.random_range(0..count));
                match (first, second) {
                    (Some(first), Some(second)) if second.outstanding() < first.outstanding() => {
                        Some(second)
                    }
                    (first, _) => first,
                }
            }
            _ => nth(self.next.fetch_add(1, Ordering::Relaxed) % count),
        };
        // A node ejected by another request since the count can leave the index past the
        // end: any untried node beats refusing the request.
        chosen
            .or_else(|| members.iter().find(|member| untried(member)))
            .cloned()
    }

    /// Sends a request to a node. A request that could not reach a node is tried on another
    /// (up to `MAX_ATTEMPTS`); anything else that failed is the caller's 502 or 504.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        affinity: Option<&str>,
    ) -> Result<(Response<CountedBody>, SocketAddr), UpstreamError> {
        if self.settings.tls || self.settings.http2 {
            return self.send_pooled(request, affinity).await;
        }
        let (mut parts, body) = request.into_parts();
        parts.uri = origin_form(&parts.uri);
        parts.version = http::Version::HTTP_11;
        // An HTTP/1.1 request needs a Host; a client that sent none (HTTP/1.0) gets the
        // node's address, as hyper-util's client would put there.
        let client_host = parts.headers.contains_key(http::header::HOST);
        let mut request = Request::from_parts(parts, body);
        let mut tried = [UNSPECIFIED; MAX_ATTEMPTS];
        for attempt in 0..MAX_ATTEMPTS {
            let member = self
                .pick(affinity, &tried[..attempt])
                .ok_or(UpstreamError::NoNodes)?;
            tried[attempt] = member.address;
            if !client_host && let Ok(host) = http::HeaderValue::from_str(member.authority.as_str())
            {
                request.headers_mut().insert(http::header::HOST, host);
            }
            let in_flight = InFlight::new(member.clone());
            let exchange = connections::send(
                &member.idle,
                member.address,
                self.settings.connect_timeout,
                request,
            );
            match tokio::time::timeout(self.settings.response_timeout, exchange).await {
                Ok(Ok(response)) => {
                    member.record_success();
                    let response = response.map(|body| CountedBody {
                        inner: UpstreamBody::Inline(body),
                        _in_flight: in_flight,
                    });
                    return Ok((response, member.address));
                }
                // Nothing was sent, so even a request with a body can go to another node.
                Ok(Err(connections::SendError::Connect(unsent, error))) => {
                    member.record_connect_failure(&self.settings);
                    tracing::debug!(upstream = %member.address, %error, "connect failed");
                    if attempt + 1 >= MAX_ATTEMPTS.min(self.members.load().len()) {
                        return Err(UpstreamError::Connect(member.address));
                    }
                    request = *unsent;
                }
                Ok(Err(connections::SendError::Failed(detail))) => {
                    return Err(UpstreamError::Failed {
                        address: member.address,
                        detail,
                    });
                }
                Err(_) => return Err(UpstreamError::Timeout(member.address)),
            }
        }
        Err(UpstreamError::NoNodes)
    }

    /// Sends an upgrade (WebSocket) request: hyper-util's client hands the upgraded
    /// connection over, which the inline connections do not.
    pub async fn send_upgrade(
        &self,
        request: Request<ProxyBody>,
        affinity: Option<&str>,
    ) -> Result<(Response<CountedBody>, SocketAddr), UpstreamError> {
        self.send_pooled(request, affinity).await
    }

    /// Sends through hyper-util's pooled client. A request without a body that could not
    /// reach a node is tried on another.
    async fn send_pooled(
        &self,
        request: Request<ProxyBody>,
        affinity: Option<&str>,
    ) -> Result<(Response<CountedBody>, SocketAddr), UpstreamError> {
        let replayable = request.body().is_end_stream();
        let (parts, body) = request.into_parts();
        let mut body = Some(body);
        let mut tried = Vec::new();
        loop {
            let member = self.pick(affinity, &tried).ok_or(UpstreamError::NoNodes)?;
            tried.push(member.address);
            let attempt_body = match body.take() {
                Some(body) => body,
                None => http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            };
            let mut request = Request::from_parts(clone_parts(&parts), attempt_body);
            *request.uri_mut() = upstream_uri(request.uri(), &member, self.settings.tls);
            *request.version_mut() = upstream_version(self.settings.http2);
            let in_flight = InFlight::new(member.clone());
            let outcome =
                tokio::time::timeout(self.settings.response_timeout, self.client.request(request))
                    .await;
            match outcome {
                Ok(Ok(response)) => {
                    member.record_success();
                    let response = response.map(|inner| CountedBody {
                        inner: UpstreamBody::Pooled(inner),
                        _in_flight: in_flight,
                    });
                    return Ok((response, member.address));
                }
                Ok(Err(error)) if error.is_connect() => {
                    member.record_connect_failure(&self.settings);
                    let more = tried.len() < MAX_ATTEMPTS.min(self.members.load().len());
                    if !(replayable && more) {
                        return Err(UpstreamError::Connect(member.address));
                    }
                    tracing::debug!(upstream = %member.address, "connect failed; trying another node");
                }
                Ok(Err(error)) => {
                    return Err(UpstreamError::Failed {
                        address: member.address,
                        detail: error.to_string(),
                    });
                }
                Err(_) => return Err(UpstreamError::Timeout(member.address)),
            }
        }
    }
}

use http_body_util::BodyExt as _;

/// The request head again, for a retry (extensions do not carry over).
fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let (mut cloned, ()) = Request::new(()).into_parts();
    cloned.method = parts.method.clone();
    cloned.uri = parts.uri.clone();
    cloned.version = parts.version;
    cloned.headers = parts.headers.clone();
    cloned
}

/// The protocol spoken to upstreams is the pool's, whatever the client spoke: an HTTP/2
/// browser request goes to an HTTP/1.1 engine as HTTP/1.1.
fn upstream_version(http2: bool) -> http::Version {
    if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    }
}

/// The request's path and query, addressed to `member` (absolute form, which hyper-util's
/// client routes by).
fn upstream_uri(uri: &Uri, member: &Member, tls: bool) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(member.authority.clone());
    parts.path_and_query = Some(path_and_query(uri));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// The request's path and query alone (origin form), as an HTTP/1.1 request line carries
/// it. HTTP/2 clients' requests arrive in absolute form.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path_and_query(uri));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

fn path_and_query(uri: &Uri) -> http::uri::PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
}

/// The name a node's certificate must carry: the configured one, else the DNS name its
/// address was resolved from, else the address itself.
#[derive(Debug, Clone)]
struct ServerNames {
    fixed: Option<String>,
    by_address: Arc<ArcSwap<HashMap<IpAddr, String>>>,
}

impl hyper_rustls::ResolveServerName for ServerNames {
    fn resolve(
        &self,
        uri: &Uri,
    ) -> Result<ServerName<'static>, Box<dyn std::error::Error + Sync + Send>> {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = match (&self.fixed, host.parse::<IpAddr>()) {
            (Some(fixed), _) => fixed.clone(),
            (None, Ok(ip)) => self
                .by_address
                .load()
                .get(&ip)
                .cloned()
                .unwrap_or_else(|| ip.to_string()),
            (None, Err(_)) => host.to_owned(),
        };
        Ok(ServerName::try_from(name)?)
    }
}

fn rendezvous_score(key: &str, address: SocketAddr) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    address.hash(&mut hasher);
    hasher.finish()
}

async fn resolve_forever(pool: Weak<UpstreamPool>) {
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let mut addresses: Vec<SocketAddr> = Vec::new();
        let mut names = HashMap::new();
        for node in &strong.settings.nodes {
            match node.parse::<SocketAddr>() {
                Ok(address) => addresses.push(address),
                Err(_) => match tokio::net::lookup_host(node.as_str()).await {
                    Ok(resolved) => {
                        let host = node
                            .rsplit_once(':')
                            .map_or(node.as_str(), |(host, _)| host);
                        for address in resolved {
                            names.insert(address.ip(), host.to_owned());
                            addresses.push(address);
                        }
                    }
                    // Keep what is known; a failed lookup is no reason to drop live nodes.
                    Err(error) => {
                        tracing::warn!(%node, %error, "cannot resolve upstream");
                        addresses.extend(
                            strong
                                .members
                                .load()
                                .iter()
                                .map(|member| member.address)
                                .filter(|address| {
                                    !strong.settings.nodes.contains(&address.to_string())
                                }),
                        );
                    }
                },
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        if !names.is_empty() {
            strong.names.store(Arc::new(names));
        }
        let current = strong.members.load_full();
        let unchanged = current.len() == addresses.len()
            && current.iter().zip(&addresses).all(|(m, a)| m.address == *a);
        if !unchanged {
            // Members that stay keep their health and load counters.
            let members = addresses
                .iter()
                .map(|address| {
                    current
                        .iter()
                        .find(|member| member.address == *address)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Member::new(*address)))
                })
                .collect();
            strong.members.store(Arc::new(members));
        }
        drop(strong);
        tokio::time::sleep(RESOLVE_INTERVAL).await;
    }
}

/// Jitter-free helper for tests: how requests spread over members.
#[cfg(test)]
mod tests {
    use super::*;

    fn pool(strategy: Strategy, nodes: &[&str]) -> Arc<UpstreamPool> {
        UpstreamPool::new(
            UpstreamSettings {
                nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
                tls: false,
                tls_server_name: None,
                strategy,
                http2: false,
                eject_after_failures: 2,
                ejection_time: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(1),
            },
            crate::upstream_tls::client_config(None).expect("default upstream TLS"),
        )
    }

    const NODES: [&str; 3] = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];

    #[tokio::test]
    async fn round_robin_visits_every_node_in_turn() {
        let pool = pool(Strategy::RoundRobin, &NODES);
        let picks: Vec<u16> = (0..6)
            .map(|_| pool.pick(None, &[]).unwrap().address.port())
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
    }

    #[tokio::test]
    async fn sticky_sessions_stay_put_and_move_only_when_their_node_goes() {
        let pool = pool(Strategy::StickySession, &NODES);
        let home = pool.pick(Some("session-a"), &[]).unwrap();
        for _ in 0..10 {
            assert_eq!(
                pool.pick(Some("session-a"), &[]).unwrap().address,
                home.address
            );
        }
        home.record_connect_failure(pool.settings());
        home.record_connect_failure(pool.settings());
        let moved = pool.pick(Some("session-a"), &[]).unwrap();
        assert_ne!(
            moved.address, home.address,
            "an ejected node gets no sticky traffic"
        );
    }

    #[tokio::test]
    async fn least_outstanding_prefers_idle_nodes() {
        let pool = pool(Strategy::LeastOutstanding, &NODES[..2]);
        let members = pool.members();
        let _busy: Vec<InFlight> = (0..10).map(|_| InFlight::new(members[0].clone())).collect();
        let idle_picks = (0..200)
            .filter(|_| pool.pick(None, &[]).unwrap().address == members[1].address)
            .count();
        // Two random choices pick the busy node only when both draws land on it: ~1 in 4.
        assert!(idle_picks > 120, "{idle_picks}");
    }

    #[tokio::test]
    async fn ejected_nodes_are_skipped_until_all_are_ejected() {
        let pool = pool(Strategy::RoundRobin, &NODES[..2]);
        let members = pool.members();
        members[0].record_connect_failure(pool.settings());
        members[0].record_connect_failure(pool.settings());
        for _ in 0..4 {
            assert_eq!(pool.pick(None, &[]).unwrap().address, members[1].address);
        }
        members[1].record_connect_failure(pool.settings());
        members[1].record_connect_failure(pool.settings());
        assert!(pool.pick(None, &[]).is_some(), "all ejected: still try one");
    }
}
