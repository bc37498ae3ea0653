//! The routing table: all virtual proxies of the current snapshot, by the first segment of
//! a request's path.

use std::sync::Arc;

use gatehouse_proto::v1 as pb;

use crate::assertion::KeySet;
use crate::virtual_proxy::VirtualProxy;

/// All virtual proxies of the current snapshot, routable by path, and the snapshot's
/// assertion keys.
#[derive(Debug, Default)]
pub struct ProxyTable {
    proxies: Vec<Arc<VirtualProxy>>,
    assertion_keys: Arc<KeySet>,
    /// Every proxy's session cookie name (and OpenID login-binding cookie name): none of
    /// them may reach an upstream, nor be set by one.
    cookie_names: Vec<String>,
}

impl ProxyTable {
    /// Builds the table for a snapshot. A proxy that cannot be built is left out (and logged),
    /// rather than taking the others down with it.
    pub fn from_snapshot(
        snapshot: &pb::ConfigSnapshot,
        previous: &ProxyTable,
        upstream_tls: &Arc<rustls::ClientConfig>,
    ) -> Self {
        let assertion_keys = Arc::new(KeySet::from_proto(&snapshot.assertion_keys));
        let mut proxies = Vec::new();
        for proto in &snapshot.virtual_proxies {
            let before = previous.by_prefix(&proto.prefix);
            match VirtualProxy::from_proto_with(proto, before.map(|p| &**p), upstream_tls) {
                Ok(mut proxy) => {
                    if let Some(assertion) = &mut proxy.identity.assertion {
                        assertion.use_keys(assertion_keys.clone());
                    }
                    proxies.push(Arc::new(proxy));
                }
                Err(error) => tracing::error!(%error, "virtual proxy left out of the snapshot"),
            }
        }
        let cookie_names = proxies
            .iter()
            .flat_map(|proxy| {
                let oidc = proxy.oidc.iter().flat_map(|oidc| {
                    [oidc.binding_cookie.clone(), oidc.binding_cookie_tls.clone()]
                });
                let saml = proxy.saml.iter().flat_map(|saml| {
                    [saml.binding_cookie.clone(), saml.binding_cookie_tls.clone()]
                });
                let bindings = oidc.chain(saml);
                [proxy.cookie_name.clone(), proxy.seal_cookie_name.clone()]
                    .into_iter()
                    .chain(bindings)
            })
            .collect();
        Self {
            proxies,
            assertion_keys,
            cookie_names,
        }
    }

    /// The keys published at `assertion::JWKS_PATH`.
    pub fn assertion_keys(&self) -> &KeySet {
        &self.assertion_keys
    }

    pub fn cookie_names(&self) -> &[String] {
        &self.cookie_names
    }

    pub fn by_prefix(&self, prefix: &str) -> Option<&Arc<VirtualProxy>> {
        self.proxies.iter().find(|proxy| proxy.prefix == prefix)
    }

    pub fn all(&self) -> &[Arc<VirtualProxy>] {
        &self.proxies
    }

    /// The proxy a path belongs to: the one whose prefix is the path's first segment, else
    /// the default proxy.
    pub fn route(&self, path: &str) -> Option<&Arc<VirtualProxy>> {
        let first = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if !first.is_empty()
            && let Some(proxy) = self.by_prefix(first)
        {
            return Some(proxy);
        }
        self.by_prefix("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[&str]) -> ProxyTable {
        let snapshot = pb::ConfigSnapshot {
            virtual_proxies: prefixes
                .iter()
                .map(|prefix| pb::VirtualProxy {
                    prefix: (*prefix).into(),
                    cookie_name: format!("c{prefix}"),
                    ..Default::default()
                })
                .collect(),
            flush_cache: false,
            assertion_keys: Vec::new(),
        };
        ProxyTable::from_snapshot(
            &snapshot,
            &ProxyTable::default(),
            &crate::upstream::tls::client_config(None).unwrap(),
        )
    }

    #[test]
    fn paths_route_by_their_first_segment() {
        let table = table(&["", "sales"]);
        assert_eq!(
            table.route("/sales/hub").map(|p| p.prefix.as_str()),
            Some("sales")
        );
        assert_eq!(
            table.route("/sales").map(|p| p.prefix.as_str()),
            Some("sales")
        );
        assert_eq!(
            table.route("/salesforce/x").map(|p| p.prefix.as_str()),
            Some("")
        );
        assert_eq!(table.route("/").map(|p| p.prefix.as_str()), Some(""));
        assert!(self::table(&["sales"]).route("/hr/x").is_none());
    }
}
