//! The store conformance suite: the same behaviour asked of the Redis store (against a real
//! `redis-server`) and of the in-memory store. A store that passes can back the control plane.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_control_plane::clock::SystemClock;
use gatehouse_control_plane::config::{RedisTopology, StoreBackend, StoreConfig};
use gatehouse_control_plane::domain::{
    Attribute, CapPolicy, CreateOutcome, NewSession, OidcLogin, RevocationReason, Session,
    SessionCap, Target, Ticket, User, UserKey,
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
                    super::$check(super::memory(1000).await).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::redis(1000).await).await;
                }
            )*
        }
        mod redis_sentinel_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::sentinel(1000).await).await;
                }
            )*
        }
        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::cluster(1000).await).await;
                }
            )*
        }
    };
}

conformance!(
    tickets_are_taken_once_and_only_at_their_virtual_proxy,
    tickets_expire,
    concurrent_redemptions_have_one_winner,
    targets_are_kept_for_their_ttl,
    used_jwts_are_remembered_for_their_ttl,
    oidc_logins_are_taken_once_within_their_ttl,
    a_credential_is_used_once_within_its_ttl,
    linked_sessions_are_kept_for_their_ttl,
    sessions_are_found_by_token_and_by_handle,
    a_live_token_cannot_be_reused,
    the_refuse_policy_caps_sessions_per_user_and_proxy,
    the_evict_policy_ends_the_oldest_sessions,
    concurrent_creations_never_exceed_the_cap,
    activity_slides_the_inactivity_expiry,
    the_absolute_expiry_caps_activity,
    deleting_returns_the_session_and_records_a_revocation,
    user_sessions_are_listed_and_deleted_per_proxy,
    listings_page_through_every_session_once,
    revocation_cursors_resume_where_they_left_off,
    unknown_handles_and_tokens_are_absent_not_errors,
    the_revocation_head_is_the_newest_event,
    waiting_for_revocations_wakes_on_a_new_event,
    the_zero_cursor_means_from_the_start,
);

#[tokio::test]
async fn memory_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(memory(10).await).await;
}

#[tokio::test]
async fn redis_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(redis(10).await).await;
}

#[tokio::test]
async fn redis_sentinel_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(sentinel(10).await).await;
}

#[tokio::test]
async fn redis_cluster_store_reports_a_trimmed_revocation_stream() {
    trimmed_streams_are_reported(cluster(10).await).await;
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

async fn tickets_are_taken_once_and_only_at_their_virtual_proxy(subject: Subject) {
    let store = subject.store;
    let hash = TokenHash::of(&tokens::new_ticket());
    let ticket = Ticket {
        virtual_proxy: "sales".into(),
        user: user("CORP", "alice"),
    };
    store.put_ticket(&hash, &ticket, HOUR).await.unwrap();
    assert_eq!(
        store.take_ticket(&hash, "hr").await.unwrap(),
        None,
        "wrong proxy"
    );
    assert_eq!(
        store.take_ticket(&hash, "sales").await.unwrap(),
        Some(ticket)
    );
    assert_eq!(
        store.take_ticket(&hash, "sales").await.unwrap(),
        None,
        "second use"
    );
}

async fn tickets_expire(subject: Subject) {
    let store = subject.store;
    let hash = TokenHash::of(&tokens::new_ticket());
    let ticket = Ticket {
        virtual_proxy: String::new(),
        user: user("CORP", "alice"),
    };
    store
        .put_ticket(&hash, &ticket, Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.take_ticket(&hash, "").await.unwrap(), None);
}

async fn concurrent_redemptions_have_one_winner(subject: Subject) {
    let store = subject.store;
    for _ in 0..5 {
        let hash = TokenHash::of(&tokens::new_ticket());
        let ticket = Ticket {
            virtual_proxy: String::new(),
            user: user("CORP", "alice"),
        };
        store.put_ticket(&hash, &ticket, HOUR).await.unwrap();
        let attempts: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                let hash = hash.clone();
                tokio::spawn(async move { store.take_ticket(&hash, "").await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for attempt in attempts {
            winners += usize::from(attempt.await.unwrap().is_some());
        }
        assert_eq!(winners, 1);
    }
}

async fn targets_are_kept_for_their_ttl(subject: Subject) {
    let store = subject.store;
    let target = Target {
        virtual_proxy: "sales".into(),
        uri: "https://portal.example.com/sense/app/1".into(),
    };
    store.put_target("kept", &target, HOUR).await.unwrap();
    store
        .put_target("brief", &target, Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(
        store.get_target("kept").await.unwrap(),
        Some(target.clone())
    );
    assert_eq!(store.get_target("missing").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.get_target("brief").await.unwrap(), None);
    assert_eq!(store.get_target("kept").await.unwrap(), Some(target));
}

async fn used_jwts_are_remembered_for_their_ttl(subject: Subject) {
    let store = subject.store;
    let kept = TokenHash::of("kept.jwt");
    let brief = TokenHash::of("brief.jwt");
    assert!(!store.jwt_remembered(&kept).await.unwrap());
    store.remember_jwt(&kept, HOUR).await.unwrap();
    store
        .remember_jwt(&brief, Duration::from_millis(150))
        .await
        .unwrap();
    assert!(store.jwt_remembered(&kept).await.unwrap());
    assert!(store.jwt_remembered(&brief).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.jwt_remembered(&brief).await.unwrap());
    assert!(store.jwt_remembered(&kept).await.unwrap());
}

async fn oidc_logins_are_taken_once_within_their_ttl(subject: Subject) {
    let store = subject.store;
    let login = OidcLogin {
        virtual_proxy: "sales".into(),
        binding_hash: TokenHash::of("binding").to_text(),
        redirect_uri: "https://gatehouse.example.com/sales/oidc/callback".into(),
        target: "/sales/hub?x=1".into(),
    };
    let state = TokenHash::of(&tokens::new_session_token());
    store.put_oidc_login(&state, &login, HOUR).await.unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let state = state.clone();
            tokio::spawn(async move { store.take_oidc_login(&state).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for attempt in attempts {
        taken.extend(attempt.await.unwrap());
    }
    assert_eq!(taken, vec![login.clone()], "one caller gets the login");
    assert_eq!(store.take_oidc_login(&state).await.unwrap(), None);

    let brief = TokenHash::of(&tokens::new_session_token());
    store
        .put_oidc_login(&brief, &login, Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.take_oidc_login(&brief).await.unwrap(), None);
}

async fn a_credential_is_used_once_within_its_ttl(subject: Subject) {
    let store = subject.store;
    let credential = TokenHash::of(&tokens::new_session_token());
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let credential = credential.clone();
            tokio::spawn(async move { store.first_use(&credential, HOUR).await.unwrap() })
        })
        .collect();
    let mut first = 0;
    for attempt in attempts {
        first += usize::from(attempt.await.unwrap());
    }
    assert_eq!(first, 1, "exactly one caller uses the credential first");
    assert!(!store.first_use(&credential, HOUR).await.unwrap());

    let brief = TokenHash::of(&tokens::new_session_token());
    assert!(
        store
            .first_use(&brief, Duration::from_millis(150))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.first_use(&brief, HOUR).await.unwrap(),
        "forgotten after its ttl"
    );
}

async fn linked_sessions_are_kept_for_their_ttl(subject: Subject) {
    let store = subject.store;
    let subject_key = TokenHash::of("https://idp.example.com\0alice");
    let brief = TokenHash::of("https://idp.example.com\0bob");
    assert!(
        store
            .linked_sessions(&subject_key)
            .await
            .unwrap()
            .is_empty()
    );
    store.link_session(&subject_key, "h1", HOUR).await.unwrap();
    store.link_session(&subject_key, "h2", HOUR).await.unwrap();
    store.link_session(&subject_key, "h1", HOUR).await.unwrap();
    store
        .link_session(&brief, "h3", Duration::from_millis(150))
        .await
        .unwrap();
    let mut linked = store.linked_sessions(&subject_key).await.unwrap();
    linked.sort();
    assert_eq!(linked, ["h1", "h2"]);
    assert_eq!(store.linked_sessions(&brief).await.unwrap(), ["h3"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.linked_sessions(&brief).await.unwrap().is_empty());
    assert_eq!(store.linked_sessions(&subject_key).await.unwrap().len(), 2);
}

async fn sessions_are_found_by_token_and_by_handle(subject: Subject) {
    let store = subject.store;
    let (token, session) = create(&*store, "sales", user("CORP", "alice")).await;
    assert!(!session.handle.contains(&token));
    assert_eq!(session.user, user("CORP", "alice"));
    assert_eq!(session.created, session.last_active);
    let by_token = store
        .session_by_token(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    // Timestamps are kept to the millisecond.
    let millis = |time: SystemTime| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert_eq!(by_token.handle, session.handle);
    assert_eq!(
        by_token.user, session.user,
        "attributes with repeated names keep their order"
    );
    assert_eq!(by_token.virtual_proxy, "sales");
    assert_eq!(millis(by_token.created), millis(session.created));
    assert_eq!(
        millis(by_token.absolute_expiry),
        millis(session.absolute_expiry)
    );
    assert_eq!(by_token.inactivity_timeout, HOUR);
    let by_handle = store
        .session_by_handle(&session.handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_handle, by_token);
}

async fn a_live_token_cannot_be_reused(subject: Subject) {
    let store = subject.store;
    let (token, _) = create(&*store, "", user("CORP", "alice")).await;
    let (_, mut again) = new_session("", user("CORP", "bob"), HOUR, HOUR);
    again.token_hash = TokenHash::of(&token);
    assert!(matches!(
        store.create_session(again, ROOMY).await.unwrap(),
        CreateOutcome::TokenInUse
    ));
    let holder = store
        .session_by_token(&TokenHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.user.id, "alice");
}

async fn the_refuse_policy_caps_sessions_per_user_and_proxy(subject: Subject) {
    let store = subject.store;
    let cap = SessionCap {
        max_per_user: 2,
        policy: CapPolicy::Refuse,
    };
    for _ in 0..2 {
        let (_, new) = new_session("sales", user("CORP", "alice"), HOUR, HOUR);
        created(store.create_session(new, cap).await.unwrap());
    }
    // Same user in other letter case is the same user.
    let (token, new) = new_session("sales", user("corp", "ALICE"), HOUR, HOUR);
    assert!(matches!(
        store.create_session(new, cap).await.unwrap(),
        CreateOutcome::CapReached
    ));
    assert_eq!(
        store
            .session_by_token(&TokenHash::of(&token))
            .await
            .unwrap(),
        None,
        "a refused session leaves nothing behind"
    );
    // Another virtual proxy and another user have caps of their own.
    let (_, new) = new_session("hr", user("CORP", "alice"), HOUR, HOUR);
    created(store.create_session(new, cap).await.unwrap());
    let (_, new) = new_session("sales", user("CORP", "bob"), HOUR, HOUR);
    created(store.create_session(new, cap).await.unwrap());
}

async fn the_evict_policy_ends_the_oldest_sessions(subject: Subject) {
    let store = subject.store;
    let cap = SessionCap {
        max_per_user: 2,
        policy: CapPolicy::EvictOldest,
    };
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (_, new) = new_session("", user("CORP", "alice"), HOUR, HOUR);
        handles.push(
            created(store.create_session(new, cap).await.unwrap())
                .0
                .handle,
        );
        // Creation times order eviction; keep them apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, new) = new_session("", user("CORP", "alice"), HOUR, HOUR);
    let (newest, evicted) = created(store.create_session(new, cap).await.unwrap());
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].handle, handles[0]);
    assert_eq!(store.session_by_handle(&handles[0]).await.unwrap(), None);
    let remaining: Vec<String> = store
        .user_sessions("", &key("CORP", "alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(remaining, vec![handles[1].clone(), newest.handle]);
    let revocations = store.revocations_after(None, 100).await.unwrap();
    assert_eq!(revocations.events.len(), 1);
    assert_eq!(revocations.events[0].handle, handles[0]);
    assert_eq!(revocations.events[0].reason, RevocationReason::Evicted);
}

async fn concurrent_creations_never_exceed_the_cap(subject: Subject) {
    let store = subject.store;
    let cap = SessionCap {
        max_per_user: 3,
        policy: CapPolicy::Refuse,
    };
    let attempts: Vec<_> = (0..12)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let (_, new) = new_session("", user("CORP", "alice"), HOUR, HOUR);
                store.create_session(new, cap).await.unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        created += usize::from(matches!(
            attempt.await.unwrap(),
            CreateOutcome::Created { .. }
        ));
    }
    assert_eq!(created, 3);
    assert_eq!(
        store
            .user_sessions("", &key("CORP", "alice"))
            .await
            .unwrap()
            .len(),
        3
    );
}

async fn activity_slides_the_inactivity_expiry(subject: Subject) {
    let store = subject.store;
    let idle = Duration::from_millis(600);
    let (_, new) = new_session("", user("CORP", "alice"), idle, HOUR);
    let (active, _) = created(store.create_session(new, ROOMY).await.unwrap());
    let (_, new) = new_session("", user("CORP", "bob"), idle, HOUR);
    let (idle_session, _) = created(store.create_session(new, ROOMY).await.unwrap());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let touched = store
            .touch_session(&active.handle, SystemTime::now())
            .await
            .unwrap()
            .expect("an active session stays");
        assert!(touched.last_active > active.last_active);
        assert!(touched.inactivity_expiry() > active.inactivity_expiry());
    }
    // 900 ms in: the untouched session has expired, the touched one lives.
    assert_eq!(
        store.session_by_handle(&idle_session.handle).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .touch_session(&idle_session.handle, SystemTime::now())
            .await
            .unwrap(),
        None,
        "activity cannot revive an expired session"
    );
    assert!(
        store
            .session_by_handle(&active.handle)
            .await
            .unwrap()
            .is_some()
    );
}

async fn the_absolute_expiry_caps_activity(subject: Subject) {
    let store = subject.store;
    let (token, new) = new_session("", user("CORP", "alice"), HOUR, Duration::from_millis(500));
    let (session, _) = created(store.create_session(new, ROOMY).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let touched = store
        .touch_session(&session.handle, SystemTime::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.inactivity_expiry(), touched.absolute_expiry);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .session_by_token(&TokenHash::of(&token))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.session_by_handle(&session.handle).await.unwrap(),
        None
    );
}

async fn deleting_returns_the_session_and_records_a_revocation(subject: Subject) {
    let store = subject.store;
    let (token, session) = create(&*store, "sales", user("CORP", "alice")).await;
    let deleted = store
        .delete_session(&session.handle, RevocationReason::Deleted)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.handle, session.handle);
    assert_eq!(
        store
            .session_by_token(&TokenHash::of(&token))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.session_by_handle(&session.handle).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .user_sessions("sales", &key("CORP", "alice"))
            .await
            .unwrap()
            .is_empty()
    );
    let events = store.revocations_after(None, 100).await.unwrap().events;
    assert_eq!(events.len(), 1, "one deletion, one event");
    assert_eq!(events[0].handle, session.handle);
    assert_eq!(events[0].virtual_proxy, "sales");
    assert_eq!(events[0].reason, RevocationReason::Deleted);
}

async fn user_sessions_are_listed_and_deleted_per_proxy(subject: Subject) {
    let store = subject.store;
    let (_, first) = create(&*store, "sales", user("CORP", "alice")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, second) = create(&*store, "sales", user("corp", "Alice")).await;
    let (_, other_proxy) = create(&*store, "hr", user("CORP", "alice")).await;
    let (_, other_user) = create(&*store, "sales", user("CORP", "bob")).await;

    let listed: Vec<String> = store
        .user_sessions("sales", &key("Corp", "ALICE"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(
        listed,
        vec![first.handle.clone(), second.handle.clone()],
        "oldest first"
    );

    let deleted: HashSet<String> = store
        .delete_user_sessions(
            "sales",
            &key("CORP", "alice"),
            RevocationReason::UserLoggedOut,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(
        deleted,
        HashSet::from([first.handle.clone(), second.handle.clone()])
    );
    assert_eq!(store.session_by_handle(&first.handle).await.unwrap(), None);
    assert!(
        store
            .session_by_handle(&other_proxy.handle)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .session_by_handle(&other_user.handle)
            .await
            .unwrap()
            .is_some()
    );
    let events = store.revocations_after(None, 100).await.unwrap().events;
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.reason == RevocationReason::UserLoggedOut)
    );
    assert!(
        store
            .delete_user_sessions(
                "sales",
                &key("CORP", "alice"),
                RevocationReason::UserLoggedOut
            )
            .await
            .unwrap()
            .is_empty()
    );
}

async fn listings_page_through_every_session_once(subject: Subject) {
    let store = subject.store;
    let mut expected_sales = HashSet::new();
    let mut expected_all = HashSet::new();
    for index in 0..25 {
        let proxy = if index % 3 == 0 { "hr" } else { "sales" };
        let (_, session) = create(&*store, proxy, user("CORP", &format!("user{index}"))).await;
        if proxy == "sales" {
            expected_sales.insert(session.handle.clone());
        }
        expected_all.insert(session.handle);
    }
    for (filter, expected) in [(None, &expected_all), (Some("sales"), &expected_sales)] {
        let mut seen = HashSet::new();
        let mut token = String::new();
        for _ in 0..100 {
            let page = store.list_sessions(filter, 7, &token).await.unwrap();
            assert!(page.sessions.len() <= 7);
            for session in page.sessions {
                assert!(filter.is_none_or(|vp| session.virtual_proxy == vp));
                assert!(seen.insert(session.handle), "listed twice");
            }
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert!(token.is_empty(), "listing did not end");
        assert_eq!(&seen, expected);
    }
    assert!(matches!(
        store.list_sessions(None, 7, "not a token!").await,
        Err(StoreError::InvalidPageToken)
    ));
}

async fn revocation_cursors_resume_where_they_left_off(subject: Subject) {
    let store = subject.store;
    let mut handles = Vec::new();
    for index in 0..5 {
        let (_, session) = create(&*store, "", user("CORP", &format!("user{index}"))).await;
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap();
        handles.push(session.handle);
    }
    let first_two = store.revocations_after(None, 2).await.unwrap();
    assert!(!first_two.trimmed);
    assert_eq!(first_two.events.len(), 2);
    let rest = store
        .revocations_after(Some(&first_two.events[1].cursor), 100)
        .await
        .unwrap();
    assert!(!rest.trimmed);
    let order: Vec<String> = first_two
        .events
        .iter()
        .chain(&rest.events)
        .map(|e| e.handle.clone())
        .collect();
    assert_eq!(order, handles);
    let last = rest.events.last().unwrap().cursor.clone();
    assert!(
        store
            .revocations_after(Some(&last), 100)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    assert!(matches!(
        store.revocations_after(Some("garbage"), 1).await,
        Err(StoreError::InvalidCursor)
    ));
}

async fn trimmed_streams_are_reported(subject: Subject) {
    let store = subject.store;
    let (_, session) = create(&*store, "", user("CORP", "first")).await;
    store
        .delete_session(&session.handle, RevocationReason::Deleted)
        .await
        .unwrap();
    let first = store.revocations_after(None, 1).await.unwrap().events[0]
        .cursor
        .clone();
    // Redis trims approximately, whole stream nodes (100 entries) at a time: go well past that.
    for index in 0..300 {
        let (_, session) = create(&*store, "", user("CORP", &format!("user{index}"))).await;
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap();
    }
    let after_first = store.revocations_after(Some(&first), 1000).await.unwrap();
    assert!(after_first.trimmed, "events after the cursor were dropped");
    assert!(after_first.events.len() < 300);
    assert!(
        store
            .revocations_after(Some("0-0"), 1000)
            .await
            .unwrap()
            .trimmed,
        "a node that started before the first event missed the trimmed ones"
    );
    let latest = after_first.events.last().unwrap().cursor.clone();
    assert!(
        !store
            .revocations_after(Some(&latest), 10)
            .await
            .unwrap()
            .trimmed
    );
}

async fn unknown_handles_and_tokens_are_absent_not_errors(subject: Subject) {
    let store = subject.store;
    for handle in ["", "nonsense", "a.b", "*", "{x}.y", &"x".repeat(1000)] {
        assert_eq!(
            store.session_by_handle(handle).await.unwrap(),
            None,
            "{handle}"
        );
        assert_eq!(
            store
                .delete_session(handle, RevocationReason::Deleted)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .touch_session(handle, SystemTime::now())
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .session_by_token(&TokenHash::of("never issued"))
            .await
            .unwrap(),
        None
    );
    store.ping().await.unwrap();
}

async fn the_revocation_head_is_the_newest_event(subject: Subject) {
    let store = subject.store;
    assert_eq!(store.revocation_head().await.unwrap(), None);
    for index in 0..3 {
        let (_, session) = create(&*store, "", user("CORP", &format!("user{index}"))).await;
        store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await
            .unwrap();
    }
    let events = store.revocations_after(None, 100).await.unwrap().events;
    assert_eq!(
        store.revocation_head().await.unwrap(),
        Some(events[2].cursor.clone())
    );
}

async fn waiting_for_revocations_wakes_on_a_new_event(subject: Subject) {
    let store = subject.store;
    let (_, before) = create(&*store, "", user("CORP", "before")).await;
    store
        .delete_session(&before.handle, RevocationReason::Deleted)
        .await
        .unwrap();
    let head = store.revocation_head().await.unwrap().unwrap();
    let (_, session) = create(&*store, "", user("CORP", "alice")).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_revocations(Some(&head), Duration::from_secs(30))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .delete_session(&session.handle, RevocationReason::Logout)
        .await
        .unwrap();
    // The wait is 30 s: finishing within 5 s means the event woke it.
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was woken by the event")
        .unwrap();
    assert_eq!(woken.events.len(), 1);
    assert_eq!(woken.events[0].handle, session.handle);
    assert_eq!(woken.events[0].reason, RevocationReason::Logout);
}

async fn the_zero_cursor_means_from_the_start(subject: Subject) {
    let store = subject.store;
    let empty = store.revocations_after(Some("0-0"), 10).await.unwrap();
    assert!(empty.events.is_empty() && !empty.trimmed);
    let (_, session) = create(&*store, "", user("CORP", "alice")).await;
    store
        .delete_session(&session.handle, RevocationReason::Deleted)
        .await
        .unwrap();
    let all = store.revocations_after(Some("0-0"), 10).await.unwrap();
    assert_eq!(all.events.len(), 1);
    assert!(!all.trimmed, "nothing was trimmed");
}
