//! A virtual proxy's upstream pool as configured: its nodes, how one is chosen, when one is
//! ejected, the timeouts and TLS; checked before the configuration is used.

use std::time::Duration;

use serde::Deserialize;

use super::syntax::is_host_and_port;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceStrategy {
    #[default]
    RoundRobin,
    /// Power of two choices on outstanding requests.
    LeastOutstanding,
    /// The same session goes to the same node while it is healthy.
    StickySession,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` of each node; DNS names are re-resolved.
    pub nodes: Vec<String>,
    pub strategy: BalanceStrategy,
    /// Speak HTTP/2 (prior knowledge) to the nodes.
    pub http2: bool,
    /// Consecutive connect failures before a node is ejected.
    pub eject_after_failures: u32,
    #[serde(with = "humantime_serde")]
    pub ejection_time: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time to the upstream's response headers.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Speak TLS to the nodes.
    pub tls: bool,
    /// Name the nodes' certificates are checked against (default: the node's DNS name or IP).
    pub tls_server_name: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            strategy: BalanceStrategy::RoundRobin,
            http2: false,
            eject_after_failures: 3,
            ejection_time: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            tls: false,
            tls_server_name: None,
        }
    }
}

pub(super) fn validate_upstream(upstream: &UpstreamConfig) -> Result<(), String> {
    if let Some(node) = upstream
        .nodes
        .iter()
        .find(|node| !is_host_and_port(node) || !node.contains(':'))
    {
        return Err(format!("upstream node {node:?} must be host:port"));
    }
    if upstream.eject_after_failures == 0 {
        return Err("upstream.eject_after_failures must be at least 1".to_owned());
    }
    if upstream.connect_timeout.is_zero() || upstream.response_timeout.is_zero() {
        return Err("upstream timeouts must be greater than zero".to_owned());
    }
    Ok(())
}
