//! Ticket login as an authentication module and a data-plane node see it: a one-time ticket
//! for a user, redeemed once, at its own virtual proxy, before it expires, for a session; and
//! the login target (the URL first asked for) handed back with the ticket.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use gatehouse_proto::v1 as pb;
use tonic::Code;

use crate::harness::fixtures::{
    Backend, Env, by_handle, by_token, expect_code, proxy, redis_dump, seconds_between, session_of,
    tickets, time, user, user_with,
};

/// The default proxy and "sales".
fn two_proxies() -> String {
    format!("{}{}", proxy("", ""), proxy("sales", ""))
}

async fn create_target(
    env: &Env,
    virtual_proxy: &str,
    uri: &str,
) -> Result<pb::CreateTargetResponse, tonic::Status> {
    env.node()
        .create_target(pb::CreateTargetRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            target_uri: uri.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn ticket_is_url_safe_random_and_carries_user_and_expiry(backend: Backend) {
    let env = Env::start(
        backend,
        &format!("{}{}", tickets("ticket_ttl = \"45s\""), two_proxies()),
    )
    .await;
    let before = SystemTime::now();
    let issued = env
        .request_ticket("sales", user("  CORP ", " alice "), None)
        .await
        .expect("RequestTicket succeeds");

    // URL-safe: nothing that needs escaping in a query string.
    assert!(
        issued
            .ticket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "ticket is not URL-safe: {:?}",
        issued.ticket
    );
    // At least 128 bits: 22 characters of a 64-letter alphabet.
    assert!(
        issued.ticket.len() * 6 >= 128,
        "ticket too short: {} chars",
        issued.ticket.len()
    );
    // The user as Gatehouse understood it: trimmed.
    assert_eq!(issued.user, Some(user("CORP", "alice")));
    assert_eq!(issued.target_uri, None);
    // Expires one configured lifetime from now.
    let ahead = seconds_between(before, time(issued.expires.as_ref()));
    assert!(
        (44.0..=46.5).contains(&ahead),
        "ticket expires {ahead}s ahead, expected about 45s"
    );

    // Every ticket is new.
    let again = env
        .request_ticket("sales", user("CORP", "alice"), None)
        .await
        .expect("RequestTicket succeeds");
    assert_ne!(again.ticket, issued.ticket);
}

#[tokio::test]
async fn ticket_is_url_safe_random_and_carries_user_and_expiry_on_redis() {
    ticket_is_url_safe_random_and_carries_user_and_expiry(Backend::Redis).await;
}

#[tokio::test]
async fn ticket_is_url_safe_random_and_carries_user_and_expiry_on_memory() {
    ticket_is_url_safe_random_and_carries_user_and_expiry(Backend::Memory).await;
}

#[tokio::test]
async fn ticket_is_url_safe_random_and_carries_user_and_expiry_on_redis_cluster() {
    ticket_is_url_safe_random_and_carries_user_and_expiry(Backend::RedisCluster).await;
}

#[tokio::test]
async fn ticket_is_url_safe_random_and_carries_user_and_expiry_on_redis_sentinel() {
    ticket_is_url_safe_random_and_carries_user_and_expiry(Backend::RedisSentinel).await;
}

async fn ticket_is_redeemed_once_for_a_session(backend: Backend) {
    let env = Env::start(backend, &two_proxies()).await;
    let alice = user("corp", "alice");
    let issued = env
        .request_ticket("sales", alice.clone(), None)
        .await
        .expect("RequestTicket succeeds");

    let redeemed = env
        .redeem_ticket("sales", &issued.ticket)
        .await
        .expect("first redemption succeeds");
    let session = session_of(redeemed.session);
    assert!(!redeemed.session_token.is_empty());
    assert_ne!(
        redeemed.session_token, issued.ticket,
        "the session token is not the ticket"
    );
    assert_eq!(session.user, Some(alice));
    assert_eq!(session.virtual_proxy, "sales");
    assert!(redeemed.evicted.is_empty());

    // The token names that session.
    let found = env
        .get_session(by_token(&redeemed.session_token))
        .await
        .expect("the new session is found by its token");
    assert_eq!(found.handle, session.handle);

    // Single use.
    let second = env.redeem_ticket("sales", &issued.ticket).await;
    let status = expect_code(second, Code::NotFound, "second redemption");
    assert!(!status.message().contains(&issued.ticket));
}

#[tokio::test]
async fn ticket_is_redeemed_once_for_a_session_on_redis() {
    ticket_is_redeemed_once_for_a_session(Backend::Redis).await;
}

#[tokio::test]
async fn ticket_is_redeemed_once_for_a_session_on_memory() {
    ticket_is_redeemed_once_for_a_session(Backend::Memory).await;
}

#[tokio::test]
async fn ticket_is_redeemed_once_for_a_session_on_redis_cluster() {
    ticket_is_redeemed_once_for_a_session(Backend::RedisCluster).await;
}

#[tokio::test]
async fn ticket_is_redeemed_once_for_a_session_on_redis_sentinel() {
    ticket_is_redeemed_once_for_a_session(Backend::RedisSentinel).await;
}

async fn ticket_at_another_virtual_proxy_is_refused_and_not_burned(backend: Backend) {
    let env = Env::start(backend, &two_proxies()).await;
    let issued = env
        .request_ticket("sales", user("corp", "alice"), None)
        .await
        .expect("RequestTicket succeeds");

    let wrong = env.redeem_ticket("", &issued.ticket).await;
    let status = expect_code(wrong, Code::NotFound, "redemption at the default proxy");
    assert!(!status.message().contains(&issued.ticket));
    assert!(
        env.user_handles("corp", "alice", None).await.is_empty(),
        "no session was created"
    );

    let right = env
        .redeem_ticket("sales", &issued.ticket)
        .await
        .expect("the ticket still works at its own virtual proxy");
    assert_eq!(session_of(right.session).virtual_proxy, "sales");
}

#[tokio::test]
async fn ticket_at_another_virtual_proxy_is_refused_and_not_burned_on_redis() {
    ticket_at_another_virtual_proxy_is_refused_and_not_burned(Backend::Redis).await;
}

#[tokio::test]
async fn ticket_at_another_virtual_proxy_is_refused_and_not_burned_on_memory() {
    ticket_at_another_virtual_proxy_is_refused_and_not_burned(Backend::Memory).await;
}

#[tokio::test]
async fn ticket_at_another_virtual_proxy_is_refused_and_not_burned_on_redis_cluster() {
    ticket_at_another_virtual_proxy_is_refused_and_not_burned(Backend::RedisCluster).await;
}

#[tokio::test]
async fn ticket_at_another_virtual_proxy_is_refused_and_not_burned_on_redis_sentinel() {
    ticket_at_another_virtual_proxy_is_refused_and_not_burned(Backend::RedisSentinel).await;
}

async fn ticket_expires_after_ticket_ttl(backend: Backend) {
    let env = Env::start(backend, &tickets("ticket_ttl = \"300ms\"")).await;
    let issued = env
        .request_ticket("", user("corp", "alice"), None)
        .await
        .expect("RequestTicket succeeds");
    let ahead = seconds_between(SystemTime::now(), time(issued.expires.as_ref()));
    assert!(
        ahead <= 0.35,
        "expiry is {ahead}s ahead, the configured lifetime is 300ms"
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    let late = env.redeem_ticket("", &issued.ticket).await;
    expect_code(late, Code::NotFound, "redemption after the ticket lifetime");
    assert!(env.user_handles("corp", "alice", None).await.is_empty());
}

#[tokio::test]
async fn ticket_expires_after_ticket_ttl_on_redis() {
    ticket_expires_after_ticket_ttl(Backend::Redis).await;
}

#[tokio::test]
async fn ticket_expires_after_ticket_ttl_on_memory() {
    ticket_expires_after_ticket_ttl(Backend::Memory).await;
}

#[tokio::test]
async fn ticket_expires_after_ticket_ttl_on_redis_cluster() {
    ticket_expires_after_ticket_ttl(Backend::RedisCluster).await;
}

#[tokio::test]
async fn ticket_expires_after_ticket_ttl_on_redis_sentinel() {
    ticket_expires_after_ticket_ttl(Backend::RedisSentinel).await;
}

async fn concurrent_redemptions_yield_exactly_one_session(backend: Backend) {
    let env = Env::start(backend, &proxy("", "max_sessions_per_user = 100")).await;
    let issued = env
        .request_ticket("", user("corp", "alice"), None)
        .await
        .expect("RequestTicket succeeds");

    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let mut node = env.node();
            let ticket = issued.ticket.clone();
            tokio::spawn(async move {
                node.redeem_ticket(pb::RedeemTicketRequest {
                    virtual_proxy: String::new(),
                    ticket,
                    client: None,
                })
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("redemption task") {
            Ok(response) => won.push(response.into_inner()),
            Err(status) => assert_eq!(
                status.code(),
                Code::NotFound,
                "a losing redemption: {status:?}"
            ),
        }
    }
    assert_eq!(
        won.len(),
        1,
        "exactly one of 16 concurrent redemptions succeeds"
    );
    let handle = session_of(won.remove(0).session).handle;
    assert_eq!(env.user_handles("corp", "alice", None).await, vec![handle]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_yield_exactly_one_session_on_redis() {
    concurrent_redemptions_yield_exactly_one_session(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_yield_exactly_one_session_on_memory() {
    concurrent_redemptions_yield_exactly_one_session(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_yield_exactly_one_session_on_redis_cluster() {
    concurrent_redemptions_yield_exactly_one_session(Backend::RedisCluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_yield_exactly_one_session_on_redis_sentinel() {
    concurrent_redemptions_yield_exactly_one_session(Backend::RedisSentinel).await;
}

async fn target_comes_back_with_the_ticket(backend: Backend) {
    let env = Env::start(backend, &two_proxies()).await;
    let uri = "https://localhost/sales/sense/app/42?sheet=1&x=%20y";
    let target = create_target(&env, "sales", uri)
        .await
        .expect("CreateTarget succeeds");
    assert!(!target.target_id.is_empty());
    assert!(time(target.expires.as_ref()) > SystemTime::now());

    let issued = env
        .request_ticket("sales", user("corp", "alice"), Some(&target.target_id))
        .await
        .expect("RequestTicket succeeds");
    assert_eq!(issued.target_uri.as_deref(), Some(uri));

    // A target is not consumed by a ticket: a second login attempt still finds it.
    let again = env
        .request_ticket("sales", user("corp", "bob"), Some(&target.target_id))
        .await
        .expect("RequestTicket succeeds");
    assert_eq!(again.target_uri.as_deref(), Some(uri));
}

#[tokio::test]
async fn target_comes_back_with_the_ticket_on_redis() {
    target_comes_back_with_the_ticket(Backend::Redis).await;
}

#[tokio::test]
async fn target_comes_back_with_the_ticket_on_memory() {
    target_comes_back_with_the_ticket(Backend::Memory).await;
}

#[tokio::test]
async fn target_comes_back_with_the_ticket_on_redis_cluster() {
    target_comes_back_with_the_ticket(Backend::RedisCluster).await;
}

#[tokio::test]
async fn target_comes_back_with_the_ticket_on_redis_sentinel() {
    target_comes_back_with_the_ticket(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn unknown_target_id_still_gets_a_ticket_without_uri() {
    let env = Env::redis(&two_proxies()).await;
    for target_id in [
        "nosuchtarget0123456789",
        "",
        "../../etc/passwd",
        "*",
        &"x".repeat(500),
    ] {
        let issued = env
            .request_ticket("sales", user("corp", "alice"), Some(target_id))
            .await
            .unwrap_or_else(|status| {
                panic!("RequestTicket with target id {target_id:?}: {status:?}")
            });
        assert!(!issued.ticket.is_empty());
        assert_eq!(issued.target_uri, None, "target id {target_id:?}");
        env.redeem_ticket("sales", &issued.ticket)
            .await
            .expect("the ticket works");
    }
}

#[tokio::test]
async fn target_of_another_virtual_proxy_gives_no_uri() {
    let env = Env::redis(&two_proxies()).await;
    let target = create_target(&env, "", "https://localhost/hub/")
        .await
        .expect("CreateTarget succeeds");
    let issued = env
        .request_ticket("sales", user("corp", "alice"), Some(&target.target_id))
        .await
        .expect("RequestTicket succeeds");
    assert_eq!(issued.target_uri, None);
    // It still works where it was made.
    let home = env
        .request_ticket("", user("corp", "alice"), Some(&target.target_id))
        .await
        .expect("RequestTicket succeeds");
    assert_eq!(home.target_uri.as_deref(), Some("https://localhost/hub/"));
}

#[tokio::test]
async fn target_expires_after_target_ttl() {
    let env = Env::redis(&tickets("target_ttl = \"300ms\"")).await;
    let target = create_target(&env, "", "https://localhost/hub/")
        .await
        .expect("CreateTarget succeeds");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let issued = env
        .request_ticket("", user("corp", "alice"), Some(&target.target_id))
        .await
        .expect("an expired target still gets a ticket");
    assert_eq!(issued.target_uri, None);
}

#[tokio::test]
async fn create_target_refuses_anything_but_absolute_http_urls() {
    let env = Env::redis("").await;
    for bad in [
        "/sense/app/1",
        "sense/app/1",
        "javascript:alert(document.cookie)",
        "JavaScript://portal.example.com/%0Aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://portal.example.com/file",
        "https://",
        "",
    ] {
        let result = create_target(&env, "", bad).await;
        expect_code(
            result,
            Code::InvalidArgument,
            &format!("CreateTarget {bad:?}"),
        );
    }
    for good in [
        // Without public origins, loopback hosts are the development origins.
        "http://localhost/",
        "HTTPS://LocalHost:8443/a?b=c",
    ] {
        create_target(&env, "", good)
            .await
            .unwrap_or_else(|status| panic!("CreateTarget {good:?}: {status:?}"));
    }
}

async fn repeated_attributes_round_trip_in_order(backend: Backend) {
    let env = Env::start(backend, "").await;
    let attributes = [
        ("group", "sales"),
        ("email", "alice@example.com"),
        ("group", "admins"),
        ("group", "emea"),
        ("group", "sales"),
    ];
    let alice = user_with("corp", "alice", &attributes);
    let issued = env
        .request_ticket("", alice.clone(), None)
        .await
        .expect("RequestTicket succeeds");
    assert_eq!(issued.user.as_ref(), Some(&alice));

    let redeemed = env
        .redeem_ticket("", &issued.ticket)
        .await
        .expect("redemption succeeds");
    let session = session_of(redeemed.session);
    assert_eq!(session.user.as_ref(), Some(&alice));
    let found = env
        .get_session(by_handle(&session.handle))
        .await
        .expect("GetSession succeeds");
    assert_eq!(found.user.as_ref(), Some(&alice));
    let current = env
        .current_user(&redeemed.session_token, None)
        .await
        .expect("GetCurrentUser succeeds");
    assert_eq!(current.user.as_ref(), Some(&alice));
}

#[tokio::test]
async fn repeated_attributes_round_trip_in_order_on_redis() {
    repeated_attributes_round_trip_in_order(Backend::Redis).await;
}

#[tokio::test]
async fn repeated_attributes_round_trip_in_order_on_memory() {
    repeated_attributes_round_trip_in_order(Backend::Memory).await;
}

#[tokio::test]
async fn repeated_attributes_round_trip_in_order_on_redis_cluster() {
    repeated_attributes_round_trip_in_order(Backend::RedisCluster).await;
}

#[tokio::test]
async fn repeated_attributes_round_trip_in_order_on_redis_sentinel() {
    repeated_attributes_round_trip_in_order(Backend::RedisSentinel).await;
}

#[tokio::test]
async fn redis_holds_no_trace_of_the_ticket_text() {
    let env = Env::redis(&two_proxies()).await;
    let issued = env
        .request_ticket(
            "sales",
            user_with("corp", "alice", &[("group", "sales")]),
            None,
        )
        .await
        .expect("RequestTicket succeeds");

    let dump = redis_dump(env.redis_server()).await;
    assert!(
        dump.contains("gatehouse:ticket:"),
        "the ticket is stored: {dump}"
    );
    assert!(
        dump.contains("alice"),
        "the ticket's user is stored: {dump}"
    );
    assert!(
        !dump.contains(&issued.ticket),
        "Redis holds the ticket text: {dump}"
    );

    // Nor after redemption, and the session token is not there either.
    let redeemed = env
        .redeem_ticket("sales", &issued.ticket)
        .await
        .expect("redemption succeeds");
    let dump = redis_dump(env.redis_server()).await;
    assert!(
        !dump.contains("gatehouse:ticket:"),
        "a redeemed ticket is gone: {dump}"
    );
    assert!(!dump.contains(&issued.ticket));
    assert!(
        !dump.contains(&redeemed.session_token),
        "Redis holds the session token: {dump}"
    );
}

#[tokio::test]
async fn ticket_texts_do_not_repeat() {
    let env = Env::redis("").await;
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let issued = env
            .request_ticket("", user("corp", "alice"), None)
            .await
            .expect("RequestTicket succeeds");
        assert!(seen.insert(issued.ticket), "a ticket was issued twice");
    }
}
