//! Which node a request goes to: the pool's strategy over the nodes that are neither
//! ejected (unless all are) nor already tried for this request.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng as _;

use super::health;
use super::member::Member;
use super::settings::Strategy;

/// A strategy and the little state it keeps.
#[derive(Debug)]
pub(super) struct Balancer {
    strategy: Strategy,
    /// Round-robin position.
    next: AtomicUsize,
}

impl Balancer {
    pub(super) fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            next: AtomicUsize::new(0),
        }
    }

    /// Chooses one of `members`, skipping ejected ones (unless all are) and those in `tried`.
    /// Runs on every request, so it counts and indexes rather than collecting candidates.
    pub(super) fn pick(
        &self,
        members: &[Arc<Member>],
        affinity: Option<&str>,
        tried: &[SocketAddr],
    ) -> Option<Arc<Member>> {
        let now = health::now_ms();
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
        let chosen = match (self.strategy, affinity) {
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
}

fn rendezvous_score(key: &str, address: SocketAddr) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    address.hash(&mut hasher);
    hasher.finish()
}

/// How requests spread over members.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{InFlight, UpstreamPool, UpstreamSettings};
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
            super::super::tls::client_config(None).expect("default upstream TLS"),
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
