//! The Session API as a trusted client sees it: sessions are created with a token returned
//! once, found and deleted by token or handle, listed per user and page by page, capped per
//! user and virtual proxy, kept alive by activity up to an absolute limit, and every ending is
//! announced on the revocation stream.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use gatehouse_proto::v1 as pb;
use tonic::Code;

use crate::harness::fixtures::{
    Backend, Env, RevocationEntry, bearer, by_handle, by_token, expect_code, proxy, random_token,
    redis_dump, revocations, seconds_between, session_of, tick, time, user, user_with,
};

/// The default proxy and "sales", both with `settings`.
fn two_proxies(settings: &str) -> String {
    format!("{}{}", proxy("", settings), proxy("sales", settings))
}

fn handles(sessions: &[pb::Session]) -> HashSet<String> {
    sessions
        .iter()
        .map(|session| session.handle.clone())
        .collect()
}

async fn create_session_returns_token_once_and_a_distinct_handle(backend: Backend) {
    let env = Env::start(
        backend,
        &proxy("", "inactivity_timeout = \"10m\"\nmax_lifetime = \"2h\""),
    )
    .await;
    let alice = user_with("corp", "alice", &[("group", "sales")]);
    let before = SystemTime::now();
    let created = env.create_session("", alice.clone()).await;
    let session = session_of(created.session);

    // 256 random bits, URL-safe.
    assert!(
        created.session_token.len() >= 43,
        "token {:?}",
        created.session_token
    );
    assert!(
        created
            .session_token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
    );
    assert!(created.evicted.is_empty());
    assert!(!session.handle.is_empty());
    assert_ne!(session.handle, created.session_token);
    assert!(!session.handle.contains(&created.session_token));
    assert!(!created.session_token.contains(&session.handle));
    assert_eq!(session.user, Some(alice));
    assert_eq!(session.virtual_proxy, "");

    let created_at = time(session.created.as_ref());
    assert!(seconds_between(before, created_at).abs() < 2.0);
    assert_eq!(session.last_active, session.created);
    let idle = seconds_between(created_at, time(session.inactivity_expiry.as_ref()));
    assert!(
        (idle - 600.0).abs() < 0.01,
        "inactivity expiry {idle}s after creation"
    );
    let lifetime = seconds_between(created_at, time(session.absolute_expiry.as_ref()));
    assert!(
        (lifetime - 7200.0).abs() < 0.01,
        "absolute expiry {lifetime}s after creation"
    );

    // The token is returned by CreateSession only.
    let listed = env
        .sessions()
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("ListSessions");
    let by_user = env
        .sessions()
        .list_user_sessions(pb::ListUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "alice".into(),
            virtual_proxy: None,
        })
        .await
        .expect("ListUserSessions");
    let got = env
        .get_session(by_token(&created.session_token))
        .await
        .expect("GetSession");
    for answer in [
        format!("{listed:?}"),
        format!("{by_user:?}"),
        format!("{got:?}"),
    ] {
        assert!(answer.contains(&session.handle));
        assert!(!answer.contains(&created.session_token), "{answer}");
    }

    // The handle is not a credential.
    let as_token = env.get_session(by_token(&session.handle)).await;
    expect_code(
        as_token,
        Code::NotFound,
        "GetSession with the handle as a token",
    );
    let personal = env.current_user(&session.handle, None).await;
    expect_code(
        personal,
        Code::Unauthenticated,
        "GetCurrentUser with the handle as a token",
    );

    // Every token is new.
    let other = env.create_session("", user("corp", "alice")).await;
    assert_ne!(other.session_token, created.session_token);
    assert_ne!(session_of(other.session).handle, session.handle);
}

#[tokio::test]
async fn create_session_returns_token_once_and_a_distinct_handle_on_redis() {
    create_session_returns_token_once_and_a_distinct_handle(Backend::Redis).await;
}

#[tokio::test]
async fn create_session_returns_token_once_and_a_distinct_handle_on_memory() {
    create_session_returns_token_once_and_a_distinct_handle(Backend::Memory).await;
}

#[tokio::test]
async fn create_session_returns_token_once_and_a_distinct_handle_on_redis_cluster() {
    create_session_returns_token_once_and_a_distinct_handle(Backend::RedisCluster).await;
}

#[tokio::test]
async fn create_session_returns_token_once_and_a_distinct_handle_on_redis_sentinel() {
    create_session_returns_token_once_and_a_distinct_handle(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn redis_holds_neither_the_token_nor_anything_containing_it() {
    let env = Env::redis(&two_proxies("")).await;
    let generated = env.create_session("", user("corp", "alice")).await;
    let chosen = random_token();
    env.try_create_session("sales", user("corp", "alice"), Some(chosen.clone()))
        .await
        .expect("a random caller-chosen token is accepted");

    let dump = redis_dump(env.redis_server()).await;
    let handle = session_of(generated.session).handle;
    assert!(
        dump.contains("gatehouse:token:"),
        "sessions are stored: {dump}"
    );
    assert!(dump.contains(&handle), "the handle is stored: {dump}");
    for token in [&generated.session_token, &chosen] {
        assert!(
            !dump.contains(token.as_str()),
            "Redis holds a session token: {dump}"
        );
    }
}

async fn get_session_by_token_and_by_handle(backend: Backend) {
    let env = Env::start(backend, "").await;
    let created = env.create_session("", user("corp", "alice")).await;
    let other = env.create_session("", user("corp", "bob")).await;
    let session = session_of(created.session);

    let by_its_token = env
        .get_session(by_token(&created.session_token))
        .await
        .expect("found by token");
    let by_its_handle = env
        .get_session(by_handle(&session.handle))
        .await
        .expect("found by handle");
    assert_eq!(by_its_token, session);
    assert_eq!(by_its_handle, session);
    assert_eq!(
        env.get_session(by_token(&other.session_token))
            .await
            .expect("found")
            .user,
        Some(user("corp", "bob"))
    );
}

#[tokio::test]
async fn get_session_by_token_and_by_handle_on_redis() {
    get_session_by_token_and_by_handle(Backend::Redis).await;
}

#[tokio::test]
async fn get_session_by_token_and_by_handle_on_memory() {
    get_session_by_token_and_by_handle(Backend::Memory).await;
}

#[tokio::test]
async fn get_session_by_token_and_by_handle_on_redis_cluster() {
    get_session_by_token_and_by_handle(Backend::RedisCluster).await;
}

#[tokio::test]
async fn get_session_by_token_and_by_handle_on_redis_sentinel() {
    get_session_by_token_and_by_handle(Backend::RedisSentinel).await;
}

async fn delete_session_returns_it_and_it_is_gone(backend: Backend) {
    let env = Env::start(backend, "").await;
    let first = env.create_session("", user("corp", "alice")).await;
    let second = env.create_session("", user("corp", "alice")).await;
    let first_session = session_of(first.session);
    let second_session = session_of(second.session);

    // By handle.
    let deleted = env
        .delete_session(by_handle(&first_session.handle))
        .await
        .expect("DeleteSession by handle");
    assert_eq!(deleted, first_session);
    expect_code(
        env.get_session(by_handle(&first_session.handle)).await,
        Code::NotFound,
        "get by handle",
    );
    expect_code(
        env.get_session(by_token(&first.session_token)).await,
        Code::NotFound,
        "get by token",
    );
    expect_code(
        env.delete_session(by_handle(&first_session.handle)).await,
        Code::NotFound,
        "second delete",
    );

    // By token.
    let deleted = env
        .delete_session(by_token(&second.session_token))
        .await
        .expect("DeleteSession by token");
    assert_eq!(deleted, second_session);
    expect_code(
        env.get_session(by_token(&second.session_token)).await,
        Code::NotFound,
        "get by token",
    );
    expect_code(
        env.get_session(by_handle(&second_session.handle)).await,
        Code::NotFound,
        "get by handle",
    );
    expect_code(
        env.current_user(&second.session_token, None).await,
        Code::Unauthenticated,
        "the deleted token on the Personal API",
    );
    assert!(env.user_handles("corp", "alice", None).await.is_empty());
}

#[tokio::test]
async fn delete_session_returns_it_and_it_is_gone_on_redis() {
    delete_session_returns_it_and_it_is_gone(Backend::Redis).await;
}

#[tokio::test]
async fn delete_session_returns_it_and_it_is_gone_on_memory() {
    delete_session_returns_it_and_it_is_gone(Backend::Memory).await;
}

#[tokio::test]
async fn delete_session_returns_it_and_it_is_gone_on_redis_cluster() {
    delete_session_returns_it_and_it_is_gone(Backend::RedisCluster).await;
}

#[tokio::test]
async fn delete_session_returns_it_and_it_is_gone_on_redis_sentinel() {
    delete_session_returns_it_and_it_is_gone(Backend::RedisSentinel).await;
}

async fn list_user_sessions_in_one_virtual_proxy_and_across_all(backend: Backend) {
    let env = Env::start(backend, &two_proxies("")).await;
    let home_1 = session_of(env.create_session("", user("corp", "alice")).await.session);
    tick().await;
    let home_2 = session_of(env.create_session("", user("corp", "alice")).await.session);
    let sales = session_of(
        env.create_session("sales", user("corp", "alice"))
            .await
            .session,
    );
    env.create_session("", user("corp", "bob")).await;
    env.create_session("sales", user("other", "alice")).await;

    // Oldest first within a virtual proxy.
    assert_eq!(
        env.user_handles("corp", "alice", Some("")).await,
        vec![home_1.handle.clone(), home_2.handle.clone()]
    );
    assert_eq!(
        env.user_handles("corp", "alice", Some("sales")).await,
        vec![sales.handle.clone()]
    );
    let everywhere: HashSet<String> = env
        .user_handles("corp", "alice", None)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        everywhere,
        HashSet::from([home_1.handle, home_2.handle, sales.handle.clone()])
    );
    assert!(env.user_handles("corp", "carol", None).await.is_empty());

    // The listed sessions are complete.
    let listed = env
        .sessions()
        .list_user_sessions(pb::ListUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "alice".into(),
            virtual_proxy: Some("sales".into()),
        })
        .await
        .expect("ListUserSessions")
        .into_inner()
        .sessions;
    assert_eq!(listed, vec![sales]);
}

#[tokio::test]
async fn list_user_sessions_in_one_virtual_proxy_and_across_all_on_redis() {
    list_user_sessions_in_one_virtual_proxy_and_across_all(Backend::Redis).await;
}

#[tokio::test]
async fn list_user_sessions_in_one_virtual_proxy_and_across_all_on_memory() {
    list_user_sessions_in_one_virtual_proxy_and_across_all(Backend::Memory).await;
}

#[tokio::test]
async fn list_user_sessions_in_one_virtual_proxy_and_across_all_on_redis_cluster() {
    list_user_sessions_in_one_virtual_proxy_and_across_all(Backend::RedisCluster).await;
}

#[tokio::test]
async fn list_user_sessions_in_one_virtual_proxy_and_across_all_on_redis_sentinel() {
    list_user_sessions_in_one_virtual_proxy_and_across_all(Backend::RedisSentinel).await;
}

async fn user_directory_and_id_match_case_insensitively(backend: Backend) {
    let env = Env::start(backend, &proxy("", "max_sessions_per_user = 2")).await;
    let first = session_of(env.create_session("", user("Corp", "Alice")).await.session);
    tick().await;
    let second = session_of(env.create_session("", user("CORP", "ALICE")).await.session);
    // The user keeps the spelling it was given.
    assert_eq!(first.user, Some(user("Corp", "Alice")));

    for (directory, id) in [("corp", "alice"), ("CORP", "alice"), (" cOrP ", "ALICE ")] {
        assert_eq!(
            env.user_handles(directory, id, None).await,
            vec![first.handle.clone(), second.handle.clone()],
            "{directory:?} {id:?}"
        );
    }
    // One user, so one cap.
    let third = env
        .try_create_session("", user("corp", "alice"), None)
        .await;
    expect_code(
        third,
        Code::ResourceExhausted,
        "a third session of the same user",
    );

    let deleted = env
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "coRP".into(),
            user_id: "aLIce".into(),
            virtual_proxy: None,
        })
        .await
        .expect("DeleteUserSessions")
        .into_inner()
        .sessions;
    assert_eq!(
        handles(&deleted),
        HashSet::from([first.handle, second.handle])
    );
}

#[tokio::test]
async fn user_directory_and_id_match_case_insensitively_on_redis() {
    user_directory_and_id_match_case_insensitively(Backend::Redis).await;
}

#[tokio::test]
async fn user_directory_and_id_match_case_insensitively_on_memory() {
    user_directory_and_id_match_case_insensitively(Backend::Memory).await;
}

#[tokio::test]
async fn user_directory_and_id_match_case_insensitively_on_redis_cluster() {
    user_directory_and_id_match_case_insensitively(Backend::RedisCluster).await;
}

#[tokio::test]
async fn user_directory_and_id_match_case_insensitively_on_redis_sentinel() {
    user_directory_and_id_match_case_insensitively(Backend::RedisSentinel).await;
}

async fn delete_user_sessions_in_one_virtual_proxy_and_everywhere(backend: Backend) {
    let env = Env::start(backend, &two_proxies("")).await;
    let alice_home = env.create_session("", user("corp", "alice")).await;
    let alice_home_2 = env.create_session("", user("corp", "alice")).await;
    let alice_sales = env.create_session("sales", user("corp", "alice")).await;
    let bob_home = env.create_session("", user("corp", "bob")).await;

    // One virtual proxy.
    let deleted = env
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "alice".into(),
            virtual_proxy: Some(String::new()),
        })
        .await
        .expect("DeleteUserSessions in the default proxy")
        .into_inner()
        .sessions;
    let expected = [
        session_of(alice_home.session),
        session_of(alice_home_2.session),
    ];
    assert_eq!(handles(&deleted), handles(&expected));
    assert_eq!(deleted.len(), 2);
    for (token, gone) in [
        (&alice_home.session_token, true),
        (&alice_home_2.session_token, true),
    ]
    .into_iter()
    .chain([
        (&alice_sales.session_token, false),
        (&bob_home.session_token, false),
    ]) {
        let result = env.get_session(by_token(token)).await;
        if gone {
            expect_code(result, Code::NotFound, "a deleted session");
        } else {
            result.expect("a session of another proxy or user survives");
        }
    }

    // Nothing left there: an empty answer.
    let again = env
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "alice".into(),
            virtual_proxy: Some(String::new()),
        })
        .await
        .expect("DeleteUserSessions again")
        .into_inner()
        .sessions;
    assert!(again.is_empty());

    // Everywhere.
    let alice_home_3 = env.create_session("", user("corp", "alice")).await;
    let deleted = env
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "alice".into(),
            virtual_proxy: None,
        })
        .await
        .expect("DeleteUserSessions everywhere")
        .into_inner()
        .sessions;
    let expected = [
        session_of(alice_sales.session),
        session_of(alice_home_3.session),
    ];
    assert_eq!(handles(&deleted), handles(&expected));
    assert_eq!(deleted.len(), 2);
    assert!(env.user_handles("corp", "alice", None).await.is_empty());
    expect_code(
        env.get_session(by_token(&alice_sales.session_token)).await,
        Code::NotFound,
        "alice in sales",
    );
    env.get_session(by_token(&bob_home.session_token))
        .await
        .expect("bob survives");
}

#[tokio::test]
async fn delete_user_sessions_in_one_virtual_proxy_and_everywhere_on_redis() {
    delete_user_sessions_in_one_virtual_proxy_and_everywhere(Backend::Redis).await;
}

#[tokio::test]
async fn delete_user_sessions_in_one_virtual_proxy_and_everywhere_on_memory() {
    delete_user_sessions_in_one_virtual_proxy_and_everywhere(Backend::Memory).await;
}

#[tokio::test]
async fn delete_user_sessions_in_one_virtual_proxy_and_everywhere_on_redis_cluster() {
    delete_user_sessions_in_one_virtual_proxy_and_everywhere(Backend::RedisCluster).await;
}

#[tokio::test]
async fn delete_user_sessions_in_one_virtual_proxy_and_everywhere_on_redis_sentinel() {
    delete_user_sessions_in_one_virtual_proxy_and_everywhere(Backend::RedisSentinel).await;
}

/// Random UUIDs as portals generate them (taken from `uuid.uuid4()`), for a reproducible run.
const RANDOM_UUIDS: [&str; 3] = [
    "9b2f7c1e-4d8a-4e3b-a6f0-2c7d5e9a1b84",
    "3f1c9e2a-7b64-4d05-8e1f-b2a6c48d9e70",
    "d4e8a1f7-52c9-4b3e-9a06-7f1d2c5b8e43",
];

async fn random_caller_tokens_are_accepted_and_work(backend: Backend) {
    let env = Env::start(backend, &two_proxies("max_sessions_per_user = 10")).await;
    let mut chosen: Vec<String> = RANDOM_UUIDS.iter().map(|uuid| (*uuid).to_owned()).collect();
    chosen.push(random_token());
    chosen.push(random_token());
    for token in &chosen {
        let created = env
            .try_create_session("sales", user("corp", "alice"), Some(token.clone()))
            .await
            .unwrap_or_else(|status| panic!("caller token {token:?} refused: {status:?}"));
        assert_eq!(
            &created.session_token, token,
            "the caller's token is the session's"
        );
        let session = session_of(created.session);
        let found = env
            .get_session(by_token(token))
            .await
            .expect("the session is found by the caller's token");
        assert_eq!(found.handle, session.handle);
        let own = env
            .current_user(token, Some("sales"))
            .await
            .expect("the caller's token works on the Personal API");
        assert_eq!(own.handle, session.handle);
    }
}

#[tokio::test]
async fn random_caller_tokens_are_accepted_and_work_on_redis() {
    random_caller_tokens_are_accepted_and_work(Backend::Redis).await;
}

#[tokio::test]
async fn random_caller_tokens_are_accepted_and_work_on_memory() {
    random_caller_tokens_are_accepted_and_work(Backend::Memory).await;
}

#[tokio::test]
async fn random_caller_tokens_are_accepted_and_work_on_redis_cluster() {
    random_caller_tokens_are_accepted_and_work(Backend::RedisCluster).await;
}

#[tokio::test]
async fn random_caller_tokens_are_accepted_and_work_on_redis_sentinel() {
    random_caller_tokens_are_accepted_and_work(Backend::RedisSentinel).await;
}

/// `uuid.uuid4()` gave this; its digits happen to repeat a little, so the entropy estimate
/// is 118.7 bits, under the 120 required. About one random UUID in 370 is refused that way.
#[tokio::test]
async fn every_random_uuid_is_accepted_as_a_caller_token() {
    let env = Env::redis("").await;
    for uuid in [
        "a2690a52-55c5-4bb9-94ac-992acfa92722",
        "75079048-5e9f-4056-bf05-b0feebbe4e54",
    ] {
        env.try_create_session("", user("corp", "alice"), Some(uuid.to_owned()))
            .await
            .unwrap_or_else(|status| panic!("random UUID {uuid} refused: {status:?}"));
    }
}

async fn live_caller_token_cannot_be_reused(backend: Backend) {
    let env = Env::start(backend, &two_proxies("")).await;
    let token = random_token();
    let first = env
        .try_create_session("", user("corp", "alice"), Some(token.clone()))
        .await
        .expect("first use of the token");
    let first = session_of(first.session);

    for (virtual_proxy, who) in [("", "alice"), ("", "bob"), ("sales", "alice")] {
        let status = expect_code(
            env.try_create_session(virtual_proxy, user("corp", who), Some(token.clone()))
                .await,
            Code::AlreadyExists,
            &format!("reuse of a live token for {who} in {virtual_proxy:?}"),
        );
        assert!(
            !status.message().contains(&token),
            "the message echoes the token"
        );
    }
    // The session holding the token is untouched.
    let found = env
        .get_session(by_token(&token))
        .await
        .expect("still there");
    assert_eq!(found.handle, first.handle);
    assert_eq!(
        env.user_handles("corp", "bob", None).await,
        Vec::<String>::new()
    );

    // Once that session is gone, the token may be used again.
    env.delete_session(by_handle(&first.handle))
        .await
        .expect("DeleteSession");
    let reused = env
        .try_create_session("sales", user("corp", "bob"), Some(token.clone()))
        .await
        .expect("a token of an ended session can be used again");
    let found = env.get_session(by_token(&token)).await.expect("found");
    assert_eq!(found.handle, session_of(reused.session).handle);
    assert_eq!(found.user, Some(user("corp", "bob")));
}

#[tokio::test]
async fn live_caller_token_cannot_be_reused_on_redis() {
    live_caller_token_cannot_be_reused(Backend::Redis).await;
}

#[tokio::test]
async fn live_caller_token_cannot_be_reused_on_memory() {
    live_caller_token_cannot_be_reused(Backend::Memory).await;
}

#[tokio::test]
async fn live_caller_token_cannot_be_reused_on_redis_cluster() {
    live_caller_token_cannot_be_reused(Backend::RedisCluster).await;
}

#[tokio::test]
async fn live_caller_token_cannot_be_reused_on_redis_sentinel() {
    live_caller_token_cannot_be_reused(Backend::RedisSentinel).await;
}

async fn weak_caller_tokens_are_refused(backend: Backend) {
    let env = Env::start(backend, "").await;
    let weak = [
        "".to_owned(),
        "short".to_owned(),
        random_token()[..31].to_owned(),
        "a".repeat(40),
        "ab".repeat(20),
        "abcdefghijklmnopqrstuvwxyz0123456789ABCD".to_owned(),
        "0123456789".repeat(4),
        "00000000-0000-4000-8000-000000000000".to_owned(),
        "password".repeat(5),
        format!("{};Path=/", random_token()),
        format!("{} {}", random_token(), random_token()),
        "x".repeat(300),
    ];
    for token in weak {
        let status = expect_code(
            env.try_create_session("", user("corp", "alice"), Some(token.clone()))
                .await,
            Code::InvalidArgument,
            &format!("caller token {token:?}"),
        );
        if !token.is_empty() {
            assert!(
                !status.message().contains(&token),
                "the message echoes the token"
            );
        }
    }
    assert!(env.user_handles("corp", "alice", None).await.is_empty());
}

#[tokio::test]
async fn weak_caller_tokens_are_refused_on_redis() {
    weak_caller_tokens_are_refused(Backend::Redis).await;
}

#[tokio::test]
async fn weak_caller_tokens_are_refused_on_memory() {
    weak_caller_tokens_are_refused(Backend::Memory).await;
}

#[tokio::test]
async fn weak_caller_tokens_are_refused_on_redis_cluster() {
    weak_caller_tokens_are_refused(Backend::RedisCluster).await;
}

#[tokio::test]
async fn weak_caller_tokens_are_refused_on_redis_sentinel() {
    weak_caller_tokens_are_refused(Backend::RedisSentinel).await;
}

async fn cap_policy_refuse(backend: Backend) {
    let env = Env::start(
        backend,
        &proxy(
            "",
            "max_sessions_per_user = 2\nsession_cap_policy = \"refuse\"",
        ),
    )
    .await;
    let first = session_of(env.create_session("", user("corp", "alice")).await.session);
    let second = session_of(env.create_session("", user("corp", "alice")).await.session);
    let token = random_token();
    let status = expect_code(
        env.try_create_session("", user("corp", "alice"), Some(token.clone()))
            .await,
        Code::ResourceExhausted,
        "third session",
    );
    assert!(
        status.message().contains('2'),
        "the message names the cap: {status:?}"
    );
    // Nothing was taken away, and nothing was added.
    assert_eq!(
        env.user_handles("corp", "alice", None).await,
        vec![first.handle.clone(), second.handle.clone()]
    );
    expect_code(
        env.get_session(by_token(&token)).await,
        Code::NotFound,
        "the refused session",
    );
    // Other users are not affected.
    env.create_session("", user("corp", "bob")).await;

    // Room again once one session is gone; the refused token was not burnt.
    env.delete_session(by_handle(&first.handle))
        .await
        .expect("DeleteSession");
    env.try_create_session("", user("corp", "alice"), Some(token.clone()))
        .await
        .expect("a session fits again");
}

#[tokio::test]
async fn cap_policy_refuse_on_redis() {
    cap_policy_refuse(Backend::Redis).await;
}

#[tokio::test]
async fn cap_policy_refuse_on_memory() {
    cap_policy_refuse(Backend::Memory).await;
}

#[tokio::test]
async fn cap_policy_refuse_on_redis_cluster() {
    cap_policy_refuse(Backend::RedisCluster).await;
}

#[tokio::test]
async fn cap_policy_refuse_on_redis_sentinel() {
    cap_policy_refuse(Backend::RedisSentinel).await;
}

async fn cap_policy_evict_oldest(backend: Backend) {
    let env = Env::start(
        backend,
        &proxy(
            "",
            "max_sessions_per_user = 2\nsession_cap_policy = \"evict-oldest\"",
        ),
    )
    .await;
    let oldest = env.create_session("", user("corp", "alice")).await;
    tick().await;
    let middle = env.create_session("", user("corp", "alice")).await;
    tick().await;
    let newest = env.create_session("", user("corp", "alice")).await;
    let oldest_session = session_of(oldest.session);
    let middle_session = session_of(middle.session);
    let newest_session = session_of(newest.session);

    assert_eq!(newest.evicted, vec![oldest_session.clone()]);
    expect_code(
        env.get_session(by_handle(&oldest_session.handle)).await,
        Code::NotFound,
        "evicted",
    );
    expect_code(
        env.get_session(by_token(&oldest.session_token)).await,
        Code::NotFound,
        "evicted",
    );
    expect_code(
        env.current_user(&oldest.session_token, None).await,
        Code::Unauthenticated,
        "the evicted session's holder",
    );
    env.get_session(by_token(&middle.session_token))
        .await
        .expect("the middle session lives");
    assert_eq!(
        env.user_handles("corp", "alice", None).await,
        vec![middle_session.handle.clone(), newest_session.handle]
    );

    // Tickets obey the cap too, and say whom they evicted.
    tick().await;
    let ticket = env
        .request_ticket("", user("corp", "alice"), None)
        .await
        .expect("RequestTicket");
    let redeemed = env
        .redeem_ticket("", &ticket.ticket)
        .await
        .expect("RedeemTicket");
    assert_eq!(redeemed.evicted, vec![middle_session]);
}

#[tokio::test]
async fn cap_policy_evict_oldest_on_redis() {
    cap_policy_evict_oldest(Backend::Redis).await;
}

#[tokio::test]
async fn cap_policy_evict_oldest_on_memory() {
    cap_policy_evict_oldest(Backend::Memory).await;
}

#[tokio::test]
async fn cap_policy_evict_oldest_on_redis_cluster() {
    cap_policy_evict_oldest(Backend::RedisCluster).await;
}

#[tokio::test]
async fn cap_policy_evict_oldest_on_redis_sentinel() {
    cap_policy_evict_oldest(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn cap_counts_per_virtual_proxy() {
    let env = Env::redis(&two_proxies("max_sessions_per_user = 2")).await;
    for _ in 0..2 {
        env.create_session("", user("corp", "alice")).await;
    }
    expect_code(
        env.try_create_session("", user("corp", "alice"), None)
            .await,
        Code::ResourceExhausted,
        "third session in the default proxy",
    );
    // The same user has a fresh allowance in another virtual proxy.
    for _ in 0..2 {
        env.create_session("sales", user("corp", "alice")).await;
    }
    expect_code(
        env.try_create_session("sales", user("corp", "alice"), None)
            .await,
        Code::ResourceExhausted,
        "third session in sales",
    );
    assert_eq!(env.user_handles("corp", "alice", None).await.len(), 4);
}

/// Every session ListSessions gives, page by page, and how many pages it took.
async fn walk(env: &Env, virtual_proxy: Option<&str>, page_size: u32) -> (Vec<pb::Session>, usize) {
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = env
            .sessions()
            .list_sessions(pb::ListSessionsRequest {
                virtual_proxy: virtual_proxy.map(str::to_owned),
                page_size,
                page_token: page_token.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("ListSessions page {pages}: {status:?}"))
            .into_inner();
        pages += 1;
        let largest = if page_size == 0 {
            100
        } else {
            page_size as usize
        };
        assert!(page.sessions.len() <= largest, "page {pages} is too big");
        sessions.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return (sessions, pages);
        }
        assert_ne!(
            page.next_page_token, page_token,
            "the listing does not advance"
        );
        assert!(pages < 100, "the listing does not end");
        page_token = page.next_page_token;
    }
}

fn assert_each_once(listed: &[pb::Session], expected: &HashSet<String>, what: &str) {
    let mut seen = HashSet::new();
    for session in listed {
        assert!(
            seen.insert(session.handle.clone()),
            "{what}: {} listed twice",
            session.handle
        );
    }
    let missing: Vec<_> = expected.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, unexpected {extra:?}"
    );
}

async fn list_sessions_pages_through_every_session_once(backend: Backend) {
    let env = Env::start(backend, &two_proxies("")).await;
    let mut home = HashSet::new();
    let mut sales = HashSet::new();
    for i in 0..25 {
        let (virtual_proxy, set) = if i % 5 < 3 {
            ("", &mut home)
        } else {
            ("sales", &mut sales)
        };
        let created = env
            .create_session(virtual_proxy, user("corp", &format!("user{}", i % 7)))
            .await;
        set.insert(session_of(created.session).handle);
    }
    assert_eq!((home.len(), sales.len()), (15, 10));
    let all: HashSet<String> = home.union(&sales).cloned().collect();

    let (listed, pages) = walk(&env, None, 7).await;
    assert_each_once(&listed, &all, "all sessions, 7 a page");
    assert!(pages >= 4, "25 sessions in {pages} pages of at most 7");

    let (listed, _) = walk(&env, Some("sales"), 7).await;
    assert_each_once(&listed, &sales, "sales, 7 a page");
    assert!(
        listed
            .iter()
            .all(|session| session.virtual_proxy == "sales")
    );

    let (listed, _) = walk(&env, Some(""), 4).await;
    assert_each_once(&listed, &home, "default proxy, 4 a page");

    let (listed, _) = walk(&env, None, 1).await;
    assert_each_once(&listed, &all, "all sessions, 1 a page");

    // 0 means the default page size (100): everything fits.
    let (listed, _) = walk(&env, None, 0).await;
    assert_each_once(&listed, &all, "default page size");
    let (listed, _) = walk(&env, None, 1000).await;
    assert_each_once(&listed, &all, "largest page size");
}

#[tokio::test]
async fn list_sessions_pages_through_every_session_once_on_redis() {
    list_sessions_pages_through_every_session_once(Backend::Redis).await;
}

#[tokio::test]
async fn list_sessions_pages_through_every_session_once_on_memory() {
    list_sessions_pages_through_every_session_once(Backend::Memory).await;
}

#[tokio::test]
async fn list_sessions_pages_through_every_session_once_on_redis_cluster() {
    list_sessions_pages_through_every_session_once(Backend::RedisCluster).await;
}

#[tokio::test]
async fn list_sessions_pages_through_every_session_once_on_redis_sentinel() {
    list_sessions_pages_through_every_session_once(Backend::RedisSentinel).await;
}

async fn list_sessions_refuses_bad_page_size_and_token(backend: Backend) {
    let env = Env::start(backend, "").await;
    env.create_session("", user("corp", "alice")).await;
    for page_size in [1001, u32::MAX] {
        let result = env
            .sessions()
            .list_sessions(pb::ListSessionsRequest {
                virtual_proxy: None,
                page_size,
                page_token: String::new(),
            })
            .await;
        expect_code(
            result,
            Code::InvalidArgument,
            &format!("page_size {page_size}"),
        );
    }
    for page_token in ["not a page token!", "%%%%", "////", "\u{e9}t\u{e9}"] {
        let result = env
            .sessions()
            .list_sessions(pb::ListSessionsRequest {
                virtual_proxy: None,
                page_size: 10,
                page_token: page_token.to_owned(),
            })
            .await;
        expect_code(
            result,
            Code::InvalidArgument,
            &format!("page_token {page_token:?}"),
        );
    }
}

#[tokio::test]
async fn list_sessions_refuses_bad_page_size_and_token_on_redis() {
    list_sessions_refuses_bad_page_size_and_token(Backend::Redis).await;
}

#[tokio::test]
async fn list_sessions_refuses_bad_page_size_and_token_on_memory() {
    list_sessions_refuses_bad_page_size_and_token(Backend::Memory).await;
}

#[tokio::test]
async fn list_sessions_refuses_bad_page_size_and_token_on_redis_cluster() {
    list_sessions_refuses_bad_page_size_and_token(Backend::RedisCluster).await;
}

#[tokio::test]
async fn list_sessions_refuses_bad_page_size_and_token_on_redis_sentinel() {
    list_sessions_refuses_bad_page_size_and_token(Backend::RedisSentinel).await;
}

async fn activity_keeps_a_session_alive_past_the_inactivity_timeout(backend: Backend) {
    let env = Env::start(backend, &proxy("", "inactivity_timeout = \"1s\"")).await;
    let touched = env.create_session("", user("corp", "alice")).await;
    let untouched = env.create_session("", user("corp", "bob")).await;
    let touched_session = session_of(touched.session);
    let untouched_session = session_of(untouched.session);
    let started = Instant::now();

    // Activity every 250 ms for 1.5 s.
    let mut last = touched_session.clone();
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = env
            .current_user(&touched.session_token, None)
            .await
            .expect("an active session stays alive");
        assert!(time(now.last_active.as_ref()) >= time(last.last_active.as_ref()));
        assert!(time(now.inactivity_expiry.as_ref()) >= time(last.inactivity_expiry.as_ref()));
        last = now;
    }
    assert!(time(last.last_active.as_ref()) > time(touched_session.last_active.as_ref()));
    assert!(
        time(last.inactivity_expiry.as_ref()) > time(touched_session.inactivity_expiry.as_ref()),
        "the inactivity expiry slid"
    );

    let alive = env
        .get_session(by_handle(&touched_session.handle))
        .await
        .expect("the touched session lives past 1s");
    assert_eq!(
        alive.last_active, last.last_active,
        "GetSession shows the activity"
    );
    expect_code(
        env.get_session(by_handle(&untouched_session.handle)).await,
        Code::NotFound,
        "the untouched session after 1.5s",
    );
    expect_code(
        env.get_session(by_token(&untouched.session_token)).await,
        Code::NotFound,
        "the untouched session by token",
    );
    assert_eq!(
        env.user_handles("corp", "bob", None).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn activity_keeps_a_session_alive_past_the_inactivity_timeout_on_redis() {
    activity_keeps_a_session_alive_past_the_inactivity_timeout(Backend::Redis).await;
}

#[tokio::test]
async fn activity_keeps_a_session_alive_past_the_inactivity_timeout_on_memory() {
    activity_keeps_a_session_alive_past_the_inactivity_timeout(Backend::Memory).await;
}

#[tokio::test]
async fn activity_keeps_a_session_alive_past_the_inactivity_timeout_on_redis_cluster() {
    activity_keeps_a_session_alive_past_the_inactivity_timeout(Backend::RedisCluster).await;
}

#[tokio::test]
async fn activity_keeps_a_session_alive_past_the_inactivity_timeout_on_redis_sentinel() {
    activity_keeps_a_session_alive_past_the_inactivity_timeout(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn absolute_expiry_ends_even_an_active_session() {
    let env = Env::redis(&proxy(
        "",
        "inactivity_timeout = \"1s\"\nmax_lifetime = \"2s\"",
    ))
    .await;
    let started = Instant::now();
    let created = env.create_session("", user("corp", "alice")).await;
    let session = session_of(created.session);
    let absolute = time(session.absolute_expiry.as_ref());

    let ended_after = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match env.current_user(&created.session_token, None).await {
            Ok(now) => {
                assert!(
                    time(now.inactivity_expiry.as_ref()) <= absolute,
                    "the inactivity expiry passes the absolute one"
                );
                assert_eq!(
                    now.absolute_expiry, session.absolute_expiry,
                    "activity moved the absolute expiry"
                );
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the session outlived its 2s lifetime"
        );
    };
    assert!(
        ended_after > Duration::from_millis(1500),
        "activity did not keep it alive: {ended_after:?}"
    );
    expect_code(
        env.get_session(by_handle(&session.handle)).await,
        Code::NotFound,
        "after 2s",
    );
}

#[tokio::test]
async fn every_deletion_is_announced_on_the_revocation_stream() {
    let env = Env::redis(&format!(
        "{}{}",
        proxy(
            "",
            "max_sessions_per_user = 2\nsession_cap_policy = \"evict-oldest\""
        ),
        proxy("sales", "")
    ))
    .await;
    let mut expected = Vec::new();
    let entry = |session: &pb::Session, reason: &str| RevocationEntry {
        handle: session.handle.clone(),
        vp: session.virtual_proxy.clone(),
        reason: reason.to_owned(),
    };

    // DeleteSession, by handle and by token.
    let deleted = session_of(
        env.create_session("sales", user("corp", "alice"))
            .await
            .session,
    );
    env.delete_session(by_handle(&deleted.handle))
        .await
        .expect("DeleteSession");
    expected.push(entry(&deleted, "deleted"));
    let by_its_token = env.create_session("", user("corp", "alice")).await;
    env.delete_session(by_token(&by_its_token.session_token))
        .await
        .expect("DeleteSession");
    expected.push(entry(&session_of(by_its_token.session), "deleted"));

    // DeleteUserSessions everywhere.
    let bob_home = session_of(env.create_session("", user("corp", "bob")).await.session);
    let bob_sales = session_of(
        env.create_session("sales", user("corp", "bob"))
            .await
            .session,
    );
    let logged_out = env
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "bob".into(),
            virtual_proxy: None,
        })
        .await
        .expect("DeleteUserSessions")
        .into_inner()
        .sessions;
    assert_eq!(
        handles(&logged_out),
        handles(&[bob_home.clone(), bob_sales.clone()])
    );
    for session in &logged_out {
        expected.push(entry(session, "user-logged-out"));
    }

    // Eviction.
    let oldest = session_of(env.create_session("", user("corp", "carol")).await.session);
    tick().await;
    env.create_session("", user("corp", "carol")).await;
    tick().await;
    let third = env.create_session("", user("corp", "carol")).await;
    assert_eq!(third.evicted, vec![oldest.clone()]);
    expected.push(entry(&oldest, "evicted"));

    // Personal logout.
    let dave = env.create_session("", user("corp", "dave")).await;
    env.personal()
        .logout(bearer(
            pb::LogoutRequest {
                virtual_proxy: None,
            },
            &dave.session_token,
        ))
        .await
        .expect("Logout");
    expected.push(entry(&session_of(dave.session), "logout"));

    assert_eq!(revocations(env.redis_server()).await, expected);

    // Failed deletions announce nothing.
    expect_code(
        env.delete_session(by_handle(&oldest.handle)).await,
        Code::NotFound,
        "again",
    );
    let none = env
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "corp".into(),
            user_id: "nobody".into(),
            virtual_proxy: None,
        })
        .await
        .expect("DeleteUserSessions of nobody")
        .into_inner()
        .sessions;
    assert!(none.is_empty());
    assert_eq!(revocations(env.redis_server()).await, expected);
    // No token in the stream either.
    let dump = redis_dump(env.redis_server()).await;
    assert!(!dump.contains(&dave.session_token));
}

/// Of concurrent creates with one caller-chosen token, one wins; the others are ALREADY_EXISTS.
async fn concurrent_creates_with_one_caller_token_make_one_session(backend: Backend) {
    let env = Env::start(backend, &proxy("", "max_sessions_per_user = 100")).await;
    let token = random_token();
    let attempts: Vec<_> = (0..16)
        .map(|i| {
            let mut sessions = env.sessions();
            let token = token.clone();
            tokio::spawn(async move {
                sessions
                    .create_session(pb::CreateSessionRequest {
                        virtual_proxy: String::new(),
                        user: Some(user("corp", &format!("user{i}"))),
                        session_token: Some(token),
                    })
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("create task") {
            Ok(response) => created.push(session_of(response.into_inner().session)),
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    let (listed, _) = walk(&env, None, 100).await;
    assert_eq!(
        (created.len(), listed.len()),
        (1, 1),
        "16 concurrent creates with one token: (sessions created, sessions stored)"
    );
}

/// A client that retries CreateSession (same token) while the first call is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_caller_token_make_one_session_on_redis() {
    concurrent_creates_with_one_caller_token_make_one_session(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_caller_token_make_one_session_on_memory() {
    concurrent_creates_with_one_caller_token_make_one_session(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_caller_token_make_one_session_on_redis_cluster() {
    concurrent_creates_with_one_caller_token_make_one_session(Backend::RedisCluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_caller_token_make_one_session_on_redis_sentinel() {
    concurrent_creates_with_one_caller_token_make_one_session(Backend::RedisSentinel).await;
}
