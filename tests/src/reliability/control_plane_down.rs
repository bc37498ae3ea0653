//! A data-plane node while its control plane is down: users it already validated keep
//! working (within the grace period), nobody is logged out or sent to log in, what cannot be
//! checked gets 503; and revocations issued meanwhile are applied once it reconnects, open
//! WebSockets included.

use std::time::{Duration, Instant};

use crate::browser::fixtures::{
    AppProxy, COOKIE, MODULE, PROPAGATION, QUICK_CONTROL_PLANE, assert_still_open, delete_session,
    open_socket, rejected, with_cookie,
};
use crate::harness::auth_module::{issue_ticket, session_cookie, user};
use crate::harness::client::{expect_close, get, post};
use crate::harness::redis_server::free_port;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};

#[tokio::test]
async fn while_the_control_plane_is_down_known_sessions_work_and_unknown_ones_get_503() {
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = AppProxy::new([upstream.node()]).on_redis(&redis);
    let control_plane = ControlPlane::start(&config).await;
    let node = DataPlaneNode::start_with(
        &control_plane,
        &format!("{QUICK_CONTROL_PLANE}[cache]\nttl = \"300ms\"\ntouch_interval = \"1s\"\ngrace = \"30s\"\n"),
    )
    .await;
    let (known, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let (never_seen, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "bob")).await;
    assert_eq!(
        get(&node.url("/app/hub"), &with_cookie(&known))
            .await
            .status,
        200
    );
    // A login target taken before the outage, to redeem during it.
    let login = get(&node.url("/app/hub"), &[]).await;
    let redirect = issue_ticket(
        &control_plane,
        login.location().expect("Location"),
        user("CORP", "carol"),
    )
    .await;

    control_plane.stop().await;
    // Past the cache ttl: the node tries to validate, cannot, and falls back on grace.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let started = Instant::now();
    let response = get(&node.url("/app/hub"), &with_cookie(&known)).await;
    eprintln!(
        "cached session during the outage: {} in {:?}",
        response.status,
        started.elapsed()
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        post(&node.url("/app/api"), &with_cookie(&known), "x")
            .await
            .status,
        200
    );

    // A valid session the node never saw cannot be checked: 503, not 401 and not a login.
    let started = Instant::now();
    let unknown = get(&node.url("/app/hub"), &with_cookie(&never_seen)).await;
    eprintln!(
        "unchecked session during the outage: {} in {:?}",
        unknown.status,
        started.elapsed()
    );
    assert_eq!(unknown.status, 503, "{}", unknown.text());
    assert!(unknown.location().is_none());
    assert_eq!(unknown.header("retry-after"), Some("1"));
    let unknown_post = post(&node.url("/app/api"), &with_cookie(&never_seen), "x").await;
    assert_eq!(unknown_post.status, 503);
    let forged = get(
        &node.url("/app/hub"),
        &with_cookie(&format!("{COOKIE}=fresh-unknown-cookie")),
    )
    .await;
    assert_eq!(forged.status, 503, "{}", forged.text());

    // New logins cannot happen either; they are told to come back, not refused.
    let no_cookie = get(&node.url("/app/hub"), &[]).await;
    assert_eq!(no_cookie.status, 503, "{}", no_cookie.text());
    assert_eq!(no_cookie.header("retry-after"), Some("1"));
    let ticket = get(&redirect.url, &[]).await;
    assert_eq!(ticket.status, 503, "{}", ticket.text());
    assert_eq!(ticket.header("retry-after"), Some("1"));
    assert!(ticket.set_cookie(COOKIE).is_none());

    // The node stays ready: it can still route what it can check.
    let ready = get(&format!("http://{}/ready", node.admin_address()), &[]).await;
    assert_eq!(ready.status, 200);
}

/// The first control plane listens on a fixed port, so it can come back where the node
/// expects it; a second replica on the same Redis takes the revocation while it is away.
async fn revocation_during_an_outage(revoke_something_before: bool) {
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = AppProxy::new([upstream.node()]).on_redis(&redis);
    let port = free_port();
    let control_plane = ControlPlane::start_on(port, &config).await;
    // A long cache ttl: only the revocation, not a re-validation, can end the session soon.
    let node = DataPlaneNode::start_with(
        &control_plane,
        &format!(
            "{QUICK_CONTROL_PLANE}[cache]\nttl = \"30s\"\ntouch_interval = \"60s\"\ngrace = \"60s\"\n"
        ),
    )
    .await;
    let (cookie, session) =
        session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let (other, other_session) =
        session_cookie(&control_plane, "app", COOKIE, user("CORP", "bob")).await;
    let url = node.url("/app/hub");
    assert_eq!(get(&url, &with_cookie(&cookie)).await.status, 200);
    assert_eq!(get(&url, &with_cookie(&other)).await.status, 200);
    if revoke_something_before {
        delete_session(&control_plane, &other_session.handle).await;
        eventually("the earlier revocation to arrive", PROPAGATION, || async {
            rejected(&url, &other).await.then_some(())
        })
        .await;
    }

    let mut socket = open_socket(&node, &cookie).await;

    control_plane.stop().await;
    let replica = ControlPlane::start(&config).await;
    delete_session(&replica, &session.handle).await;
    // The node cannot know yet, and does not log anyone out on its own.
    let during = get(&url, &with_cookie(&cookie)).await;
    assert_eq!(during.status, 200, "{}", during.text());
    assert_still_open(&mut socket).await;

    let restarted = Instant::now();
    let _control_plane = ControlPlane::start_on(port, &config).await;
    eventually(
        "the node to apply the revocation after reconnecting",
        Duration::from_secs(10),
        || async { rejected(&url, &cookie).await.then_some(()) },
    )
    .await;
    eprintln!(
        "revocation applied {:?} after the control plane came back",
        restarted.elapsed()
    );
    expect_close(&mut socket, Duration::from_secs(1)).await;
    let posted = post(&node.url("/app/api"), &with_cookie(&cookie), "x").await;
    assert_eq!(posted.status, 401);
    let login = get(&url, &with_cookie(&cookie)).await;
    assert!(login.location().is_some_and(|l| l.starts_with(MODULE)));
    drop(replica);
}

#[tokio::test]
async fn a_revocation_issued_during_an_outage_is_applied_after_reconnecting() {
    revocation_during_an_outage(true).await;
}

#[tokio::test]
async fn the_first_revocation_ever_issued_during_an_outage_is_applied_after_reconnecting() {
    revocation_during_an_outage(false).await;
}
