//! The store conformance suite: the same behaviour asked of the Redis store (against a real
//! `redis-server`, on one server, behind Sentinel and as a Cluster) and of the in-memory store.
//! A store that passes can back the control plane. One file per aggregate of the store, as the
//! control plane's `Store` is split: one-time records, sessions, the revocation log, seal keys,
//! assertion keys. This file holds the stores under test and what the checks share.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_control_plane::clock::SystemClock;
use gatehouse_control_plane::config::{RedisTopology, StoreBackend, StoreConfig};
use gatehouse_control_plane::domain::{
    Attribute, CapPolicy, ClientInfo, CreateOutcome, NewSession, OidcLogin, RevocationReason,
    Session, SessionCap, Target, Ticket, User, UserKey,
};
use gatehouse_control_plane::store::{MemoryStore, RedisStore, Store, StoreError};
use gatehouse_control_plane::tokens::{self, TokenHash};

use crate::harness::RedisServer;
use crate::harness::redis_topologies::{RedisCluster, SENTINEL_MASTER, SentinelGroup};

/// A store under test, with whatever must outlive it (the Redis processes behind it).
struct Subject {
    store: Arc<dyn Store>,
    _redis: Option<Box<dyn std::any::Any + Send>>,
}

async fn memory(revocations_kept: usize) -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new(Arc::new(SystemClock), revocations_kept)),
        _redis: None,
    }
}

/// The Redis store with `config` (topology and addresses), on `servers`, which it keeps alive.
fn on_redis(
    config: StoreConfig,
    revocations_kept: usize,
    servers: Box<dyn std::any::Any + Send>,
) -> Subject {
    let config = StoreConfig {
        backend: StoreBackend::Redis,
        revocation_stream_max_len: revocations_kept as u64,
        ..config
    };
    Subject {
        store: Arc::new(RedisStore::new(&config).unwrap()),
        _redis: Some(servers),
    }
}

async fn redis(revocations_kept: usize) -> Subject {
    let server = RedisServer::start().await;
    let config = StoreConfig {
        redis_url: server.url(),
        ..StoreConfig::default()
    };
    on_redis(config, revocations_kept, Box::new(server))
}

/// The Redis store on a master found through three sentinels.
async fn sentinel(revocations_kept: usize) -> Subject {
    let group = SentinelGroup::start().await;
    let config = StoreConfig {
        topology: RedisTopology::Sentinel,
        sentinel_urls: group.sentinel_urls(),
        sentinel_master: SENTINEL_MASTER.to_owned(),
        ..StoreConfig::default()
    };
    on_redis(config, revocations_kept, Box::new(group))
}

/// The Redis store on a three-master Redis Cluster.
async fn cluster(revocations_kept: usize) -> Subject {
    let cluster = RedisCluster::start().await;
    let config = StoreConfig {
        topology: RedisTopology::Cluster,
        cluster_urls: cluster.urls(),
        ..StoreConfig::default()
    };
    on_redis(config, revocations_kept, Box::new(cluster))
}

/// Runs each named check against the memory store and the Redis store on each topology.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(crate::store_conformance::memory(1000).await).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(crate::store_conformance::redis(1000).await).await;
                }
            )*
        }
        mod redis_sentinel_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(crate::store_conformance::sentinel(1000).await).await;
                }
            )*
        }
        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(crate::store_conformance::cluster(1000).await).await;
                }
            )*
        }
    };
}

fn user(directory: &str, id: &str) -> User {
    User::new(
        directory,
        id,
        vec![
            Attribute {
                name: "group".into(),
                value: "sales".into(),
            },
            Attribute {
                name: "group".into(),
                value: "admins".into(),
            },
        ],
    )
    .unwrap()
}

fn key(directory: &str, id: &str) -> UserKey {
    UserKey::new(directory, id).unwrap()
}

fn new_session(
    virtual_proxy: &str,
    user: User,
    idle: Duration,
    lifetime: Duration,
) -> (String, NewSession) {
    let token = tokens::new_session_token();
    let now = SystemTime::now();
    let new = NewSession {
        token_hash: TokenHash::of(&token),
        virtual_proxy: virtual_proxy.into(),
        user,
        created: now,
        inactivity_timeout: idle,
        absolute_expiry: now + lifetime,
        client: ClientInfo::new("192.0.2.44", "Mozilla/5.0 (conformance)"),
    };
    (token, new)
}

const HOUR: Duration = Duration::from_secs(3600);
const ROOMY: SessionCap = SessionCap {
    max_per_user: 1000,
    policy: CapPolicy::Refuse,
};

async fn create(store: &dyn Store, virtual_proxy: &str, user: User) -> (String, Session) {
    let (token, new) = new_session(virtual_proxy, user, HOUR, 2 * HOUR);
    match store.create_session(new, ROOMY).await.unwrap() {
        CreateOutcome::Created { session, evicted } => {
            assert!(evicted.is_empty());
            (token, session)
        }
        other => panic!("not created: {other:?}"),
    }
}

fn created(outcome: CreateOutcome) -> (Session, Vec<Session>) {
    match outcome {
        CreateOutcome::Created { session, evicted } => (session, evicted),
        other => panic!("not created: {other:?}"),
    }
}

mod assertion_keys;
mod one_time_records;
mod revocation_log;
mod seal_keys;
mod sessions;
