//! A virtual proxy's upstream pool: its nodes (static addresses, and DNS names re-resolved so
//! a Kubernetes headless service's pods come and go), how a node is chosen, passive health,
//! and the pooled HTTP client that talks to them.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;
use rustls::pki_types::ServerName;

/// How often DNS names are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Most nodes one request without a body is tried on.
const MAX_ATTEMPTS: usize = 3;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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

/// One upstream address.
#[derive(Debug)]
pub struct Member {
    pub address: SocketAddr,
    outstanding: AtomicUsize,
    consecutive_failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Member {
    fn new(address: SocketAddr) -> Self {
        Self {
            address,
            outstanding: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
        }
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| now < until)
    }

    fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure to connect; ejects the node after too many in a row.
    fn record_connect_failure(&self, settings: &UpstreamSettings) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= settings.eject_after_failures {
            *self
                .ejected_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(Instant::now() + settings.ejection_time);
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

/// A response body that keeps its request counted until it has been read.
#[derive(Debug)]
pub struct CountedBody {
    inner: Incoming,
    _in_flight: InFlight,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
        let now = Instant::now();
        let members = self.members.load();
        let ejected = members
            .iter()
            .filter(|member| member.is_ejected(now))
            .count();
        (members.len() - ejected, ejected)
    }

    /// Chooses a node, skipping ejected ones (unless all are) and those in `tried`.
    pub fn pick(&self, affinity: Option<&str>, tried: &[SocketAddr]) -> Option<Arc<Member>> {
        let members = self.members.load();
        let now = Instant::now();
        let untried: Vec<&Arc<Member>> = members
            .iter()
            .filter(|m| !tried.contains(&m.address))
            .collect();
        let healthy: Vec<&Arc<Member>> = untried
            .iter()
            .copied()
            .filter(|m| !m.is_ejected(now))
            .collect();
        // With every node ejected, trying one beats refusing everyone.
        let candidates = if healthy.is_empty() { untried } else { healthy };
        if candidates.is_empty() {
            return None;
        }
        let chosen = match (self.settings.strategy, affinity) {
            (Strategy::StickySession, Some(key)) => candidates
                .iter()
                .max_by_key(|member| rendezvous_score(key, member.address))
                .copied(),
            (Strategy::LeastOutstanding, _) if candidates.len() > 1 => {
                let mut rng = rand::rng();
                let first = candidates[rng.random_range(0..candidates.len())];
                let second = candidates[rng.random_range(0..candidates.len())];
                Some(if second.outstanding() < first.outstanding() {
                    second
                } else {
                    first
                })
            }
            _ => {
                let index = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
                Some(candidates[index])
            }
        };
        chosen.cloned()
    }

    /// Sends a request to a node. A request without a body that could not reach a node is
    /// tried on another; anything else that failed is the caller's 502 or 504.
    pub async fn send(
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
            *request.uri_mut() = upstream_uri(request.uri(), member.address, self.settings.tls);
            *request.version_mut() = upstream_version(self.settings.http2);
            let in_flight = InFlight::new(member.clone());
            let outcome =
                tokio::time::timeout(self.settings.response_timeout, self.client.request(request))
                    .await;
            match outcome {
                Ok(Ok(response)) => {
                    member.record_success();
                    let response = response.map(|inner| CountedBody {
                        inner,
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

/// The request's path and query, addressed to `address`.
fn upstream_uri(uri: &Uri, address: SocketAddr, tls: bool) -> Uri {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(address.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"))
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
