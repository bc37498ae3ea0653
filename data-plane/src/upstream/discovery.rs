//! A pool's members: its static addresses, and the addresses its DNS names resolve to,
//! resolved again every few seconds so that a Kubernetes headless service's pods come and
//! go. Members that stay across a resolution keep their health and load counters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use super::member::Member;

/// How often DNS names are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// The DNS name each resolved address came from, to verify its certificate against.
pub(super) type ResolvedNames = Arc<ArcSwap<HashMap<IpAddr, String>>>;

type Members = ArcSwap<Vec<Arc<Member>>>;

/// The current members, kept up to date by a background task while there are names to
/// resolve; dropping it stops the task.
#[derive(Debug)]
pub(super) struct Discovery {
    members: Arc<Members>,
    names: ResolvedNames,
    resolver: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(task) = self.resolver.take() {
            task.abort();
        }
    }
}

impl Discovery {
    /// Starts with the static addresses among `nodes`; the names among them are resolved in
    /// the background from now on (when there is a runtime to do it on).
    pub(super) fn start(nodes: &[String]) -> Self {
        let static_members: Vec<Arc<Member>> = nodes
            .iter()
            .filter_map(|node| node.parse::<SocketAddr>().ok())
            .map(|address| Arc::new(Member::new(address)))
            .collect();
        let has_names = nodes.iter().any(|node| node.parse::<SocketAddr>().is_err());
        let members = Arc::new(ArcSwap::from_pointee(static_members));
        let names = ResolvedNames::default();
        let resolver = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if has_names => Some(runtime.spawn(resolve_forever(
                nodes.to_vec(),
                Arc::downgrade(&members),
                names.clone(),
            ))),
            _ => None,
        };
        Self {
            members,
            names,
            resolver,
        }
    }

    /// The members now, for a pick: no reference count is taken.
    pub(super) fn current(&self) -> Guard<Arc<Vec<Arc<Member>>>> {
        self.members.load()
    }

    pub(super) fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members.load_full()
    }

    pub(super) fn names(&self) -> ResolvedNames {
        self.names.clone()
    }
}

async fn resolve_forever(nodes: Vec<String>, members: Weak<Members>, names: ResolvedNames) {
    loop {
        let Some(members) = members.upgrade() else {
            return;
        };
        resolve_once(&nodes, &members, &names).await;
        drop(members);
        tokio::time::sleep(RESOLVE_INTERVAL).await;
    }
}

async fn resolve_once(nodes: &[String], members: &Members, names: &ResolvedNames) {
    let mut addresses: Vec<SocketAddr> = Vec::new();
    let mut resolved_names = HashMap::new();
    for node in nodes {
        match node.parse::<SocketAddr>() {
            Ok(address) => addresses.push(address),
            Err(_) => match tokio::net::lookup_host(node.as_str()).await {
                Ok(resolved) => {
                    let host = node
                        .rsplit_once(':')
                        .map_or(node.as_str(), |(host, _)| host);
                    for address in resolved {
                        resolved_names.insert(address.ip(), host.to_owned());
                        addresses.push(address);
                    }
                }
                // Keep what is known; a failed lookup is no reason to drop live nodes.
                Err(error) => {
                    tracing::warn!(%node, %error, "cannot resolve upstream");
                    addresses.extend(
                        members
                            .load()
                            .iter()
                            .map(|member| member.address)
                            .filter(|address| !nodes.contains(&address.to_string())),
                    );
                }
            },
        }
    }
    addresses.sort_unstable();
    addresses.dedup();
    if !resolved_names.is_empty() {
        names.store(Arc::new(resolved_names));
    }
    let current = members.load_full();
    let unchanged = current.len() == addresses.len()
        && current.iter().zip(&addresses).all(|(m, a)| m.address == *a);
    if !unchanged {
        // Members that stay keep their health and load counters.
        let next = addresses
            .iter()
            .map(|address| {
                current
                    .iter()
                    .find(|member| member.address == *address)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Member::new(*address)))
            })
            .collect();
        members.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_becomes_its_addresses_and_members_that_stay_keep_their_counters() {
        let nodes = vec!["127.0.0.1:1".to_owned(), "localhost:2".to_owned()];
        let discovery = Discovery::start(&nodes);
        let before = discovery.members();
        assert_eq!(
            before.len(),
            1,
            "only the static address until the name resolves"
        );
        resolve_once(&nodes, &discovery.members, &discovery.names).await;
        let after = discovery.members();
        assert!(
            after
                .iter()
                .any(|member| member.address.ip().is_loopback() && member.address.port() == 2),
            "{after:?}"
        );
        let kept = after
            .iter()
            .find(|member| member.address == before[0].address)
            .expect("the static address stays");
        assert!(Arc::ptr_eq(kept, &before[0]));
        assert!(
            discovery
                .names()
                .load()
                .values()
                .all(|name| name == "localhost"),
            "resolved addresses remember the name they came from"
        );
    }
}
