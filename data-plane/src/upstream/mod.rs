//! A virtual proxy's upstream pool: its nodes and how a request reaches one of them.
//!
//! `discovery` keeps the members (static addresses, and DNS names re-resolved so that a
//! Kubernetes headless service's pods come and go); `balancing` chooses one; `health`
//! ejects nodes that refuse connections; `retry` is the one attempt policy both clients
//! share, and `clients` their per-attempt sends: the inline HTTP/1.1 connections
//! (`connections`) for plain-HTTP nodes, hyper-util's pooled client for TLS (`tls`), HTTP/2
//! and upgrades. `counted` keeps a request counted against its node until its body is read.
//!
//! A module of its own beside `proxy`, not inside it: the node's configuration (upstream
//! TLS files), the snapshot (building pools), the admin port (node health) and the request
//! path all use it, and it uses none of them.

mod balancing;
mod clients;
pub mod connections;
mod counted;
mod discovery;
mod health;
mod idle;
mod member;
pub mod plain;
mod retry;
mod settings;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};

use self::balancing::Balancer;
use self::clients::{InlineAttempt, PooledAttempt, PooledClient};
pub use self::counted::CountedBody;
use self::discovery::Discovery;
pub use self::member::{InFlight, Member};
use self::retry::Nodes;
pub use self::retry::{Answered, Attempt, AttemptError};
pub use self::settings::{Strategy, UpstreamError, UpstreamSettings};
use crate::body::ProxyBody;

#[derive(Debug)]
pub struct UpstreamPool {
    settings: UpstreamSettings,
    discovery: Discovery,
    balancer: Balancer,
    client: PooledClient,
}

impl UpstreamPool {
    /// Creates the pool; DNS names are resolved in the background from now on. `tls` is the
    /// node's client configuration for upstreams that speak TLS.
    pub fn new(settings: UpstreamSettings, tls: Arc<rustls::ClientConfig>) -> Arc<Self> {
        let discovery = Discovery::start(&settings.nodes);
        let client = clients::pooled_client(&settings, &tls, discovery.names());
        Arc::new(Self {
            balancer: Balancer::new(settings.strategy),
            settings,
            discovery,
            client,
        })
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.discovery.members()
    }

    /// (healthy, ejected) node counts, for metrics.
    pub fn health(&self) -> (usize, usize) {
        let now = health::now_ms();
        let members = self.discovery.current();
        let ejected = members
            .iter()
            .filter(|member| member.is_ejected(now))
            .count();
        (members.len() - ejected, ejected)
    }

    /// Chooses a node, skipping ejected ones (unless all are) and those in `tried`.
    pub fn pick(&self, affinity: Option<&str>, tried: &[SocketAddr]) -> Option<Arc<Member>> {
        self.balancer
            .pick(&self.discovery.current(), affinity, tried)
    }

    /// Sends a request to a node. A request that could not reach a node is tried on another
    /// (see `retry.rs`); anything else that failed is the caller's 502 or 504.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        affinity: Option<&str>,
    ) -> Result<(Response<CountedBody>, SocketAddr), UpstreamError> {
        if self.settings.tls || self.settings.http2 {
            return self.send_pooled(request, affinity).await;
        }
        let mut attempt = InlineAttempt::new(request, self.settings.connect_timeout);
        counted(retry::send(self, affinity, &mut attempt).await)
    }

    /// Whether the pool's nodes speak plain HTTP/1.1, which the node's own HTTP/1 engine
    /// (`crate::http1`) can talk to them.
    pub fn speaks_plain_http1(&self) -> bool {
        !self.settings.tls && !self.settings.http2
    }

    /// Sends a request of the node's own HTTP/1 engine (`crate::http1`, over the nodes'
    /// [`plain`] connections) under the same attempt policy as every other request. The
    /// attempt stays the caller's, to say afterwards what became of the request.
    pub async fn send_plain<A: Attempt>(
        &self,
        attempt: &mut A,
        affinity: Option<&str>,
    ) -> Result<Answered<A::Answer>, UpstreamError> {
        retry::send(self, affinity, attempt).await
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

    async fn send_pooled(
        &self,
        request: Request<ProxyBody>,
        affinity: Option<&str>,
    ) -> Result<(Response<CountedBody>, SocketAddr), UpstreamError> {
        let mut attempt = PooledAttempt::new(&self.client, &self.settings, request);
        counted(retry::send(self, affinity, &mut attempt).await)
    }
}

/// A response whose body keeps its request counted against the node that answered it.
fn counted(
    answered: Result<Answered<Response<counted::UpstreamBody>>, UpstreamError>,
) -> Result<(Response<CountedBody>, SocketAddr), UpstreamError> {
    let Answered {
        answer,
        address,
        in_flight,
    } = answered?;
    Ok((
        answer.map(|body| CountedBody::new(body, in_flight)),
        address,
    ))
}

impl Nodes for UpstreamPool {
    fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    fn count(&self) -> usize {
        self.discovery.current().len()
    }

    fn pick(&self, affinity: Option<&str>, tried: &[SocketAddr]) -> Option<Arc<Member>> {
        UpstreamPool::pick(self, affinity, tried)
    }
}
