//! What a pool is configured with, and how a request can fail in it: plain data the pool's
//! parts share, so that none of them depends on the pool itself.

use std::net::SocketAddr;
use std::time::Duration;

/// How a node is chosen.
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
