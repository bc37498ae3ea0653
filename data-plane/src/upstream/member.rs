//! One node of a pool, as every part of the pool sees it: its address, the requests in
//! flight to it (which balancing reads), its passive health, and its idle inline connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::connections::IdleConnections;
use super::health::PassiveHealth;
use super::plain::PlainConnections;
use super::settings::UpstreamSettings;

/// One upstream address.
#[derive(Debug)]
pub struct Member {
    pub address: SocketAddr,
    /// `address` as a URI authority, made once rather than formatted per request.
    pub(super) authority: http::uri::Authority,
    outstanding: AtomicUsize,
    health: PassiveHealth,
    /// Kept-alive inline connections (plain-HTTP pools only).
    pub(super) idle: Arc<IdleConnections>,
    /// Kept-alive connections of the node's own HTTP/1 engine (plain-HTTP pools only).
    plain: PlainConnections,
}

impl Member {
    pub(super) fn new(address: SocketAddr) -> Self {
        let authority = address
            .to_string()
            .parse()
            .unwrap_or_else(|_| http::uri::Authority::from_static("localhost"));
        Self {
            address,
            authority,
            outstanding: AtomicUsize::new(0),
            health: PassiveHealth::default(),
            idle: Arc::default(),
            plain: PlainConnections::default(),
        }
    }

    /// The node's kept-alive connections for the node's own HTTP/1 engine.
    pub fn plain_connections(&self) -> &PlainConnections {
        &self.plain
    }

    /// `address` as a `Host` value, for a request that came without one.
    pub fn host_value(&self) -> Option<http::HeaderValue> {
        http::HeaderValue::from_str(self.authority.as_str()).ok()
    }

    /// `now_ms` from [`super::health::now_ms`].
    pub(super) fn is_ejected(&self, now_ms: u64) -> bool {
        self.health.is_ejected(now_ms)
    }

    pub(super) fn record_success(&self) {
        self.health.record_success();
    }

    /// Counts a failure to connect; ejects the node after too many in a row.
    pub(super) fn record_connect_failure(&self, settings: &UpstreamSettings) {
        if self
            .health
            .record_connect_failure(settings.eject_after_failures, settings.ejection_time)
        {
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
    pub(super) fn new(member: Arc<Member>) -> Self {
        member.outstanding.fetch_add(1, Ordering::Relaxed);
        Self(member)
    }

    /// The node the request is counted against.
    pub fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}
