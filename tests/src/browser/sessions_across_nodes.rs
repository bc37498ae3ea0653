//! Sessions across a fleet of data-plane nodes on one control plane and one Redis: a login on
//! one node is good on every node, and ending a session anywhere (the user's logout, an
//! administrator's delete) ends it everywhere at once, open WebSockets included.

use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::browser::fixtures::{
    AppProxy, COOKIE, PROPAGATION, assert_still_open, logout, open_socket, qlik_user, rejected,
    seen_header, with_cookie,
};
use crate::harness::auth_module::{browser_login, session_cookie, user};
use crate::harness::client::{WebSocket, expect_close, get, post, websocket};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};

struct Fleet {
    _redis: RedisServer,
    _upstream: EchoUpstream,
    control_plane: ControlPlane,
    one: DataPlaneNode,
    two: DataPlaneNode,
}

async fn fleet() -> Fleet {
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let control_plane =
        ControlPlane::start(&AppProxy::new([upstream.node()]).on_redis(&redis)).await;
    let one = DataPlaneNode::start(&control_plane).await;
    let two = DataPlaneNode::start(&control_plane).await;
    Fleet {
        _redis: redis,
        _upstream: upstream,
        control_plane,
        one,
        two,
    }
}

/// Waits for the session-ended close frame and says how long it took since `since` (taken
/// just before the call that revoked the session).
async fn closed_by_revocation(socket: &mut WebSocket, since: Instant, what: &str) -> Duration {
    let frame = expect_close(socket, Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("{what}: a close frame with a code"));
    let delay = since.elapsed();
    eprintln!("{what}: WebSocket closed {delay:?} after the revocation");
    assert_eq!(frame.code, CloseCode::Policy, "{what}: {frame:?}");
    assert!(delay < Duration::from_secs(2), "{what}: took {delay:?}");
    delay
}

#[tokio::test]
async fn a_login_on_one_node_is_accepted_by_another() {
    let fleet = fleet().await;
    let (_, cookie) = browser_login(
        &fleet.control_plane,
        &fleet.one.url("/app/hub"),
        COOKIE,
        user("CORP", "alice"),
    )
    .await;

    let response = get(&fleet.two.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        seen_header(&response.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    let posted = post(&fleet.two.url("/app/api"), &with_cookie(&cookie), "x").await;
    assert_eq!(posted.status, 200);
    assert!(
        response.set_cookie(COOKIE).is_none(),
        "no second login on the second node"
    );
}

#[tokio::test]
async fn logout_on_one_node_ends_the_session_on_the_other_and_closes_its_websockets() {
    let fleet = fleet().await;
    let (_, cookie) = browser_login(
        &fleet.control_plane,
        &fleet.one.url("/app/hub"),
        COOKIE,
        user("CORP", "alice"),
    )
    .await;
    // Node two knows and caches the session, and holds a WebSocket of it.
    assert_eq!(
        get(&fleet.two.url("/app/hub"), &with_cookie(&cookie))
            .await
            .status,
        200
    );
    let mut socket = open_socket(&fleet.two, &cookie).await;

    let logged_out = Instant::now();
    let logout = logout(&fleet.one, &cookie).await;
    assert_eq!(logout.status, 200, "{}", logout.text());
    assert_eq!(logout.json()["session"], "ended");

    closed_by_revocation(
        &mut socket,
        logged_out,
        "logout on node one, socket on node two",
    )
    .await;

    // Node two refuses the cookie, well before its cache would have expired the entry.
    let url = fleet.two.url("/app/hub");
    eventually("node two to reject the cookie", PROPAGATION, || async {
        rejected(&url, &cookie).await.then_some(())
    })
    .await;
    eprintln!(
        "node two rejects the cookie {:?} after logout",
        logged_out.elapsed()
    );
    let posted = post(&fleet.two.url("/app/api"), &with_cookie(&cookie), "x").await;
    assert_eq!(posted.status, 401);
    assert!(
        websocket(&fleet.two.ws_url("/app/ws"), &with_cookie(&cookie))
            .await
            .is_err(),
        "no new WebSocket for an ended session"
    );
}

#[tokio::test]
async fn deleting_a_users_sessions_ends_everything_they_had_open_on_every_node() {
    let fleet = fleet().await;
    let (_, browser) = browser_login(
        &fleet.control_plane,
        &fleet.one.url("/app/hub"),
        COOKIE,
        user("CORP", "alice"),
    )
    .await;
    let (native, _) =
        session_cookie(&fleet.control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let (bystander, _) =
        session_cookie(&fleet.control_plane, "app", COOKIE, user("CORP", "bob")).await;

    let mut sockets = vec![
        (
            "browser session on node one",
            open_socket(&fleet.one, &browser).await,
        ),
        (
            "browser session on node two",
            open_socket(&fleet.two, &browser).await,
        ),
        (
            "native session on node two",
            open_socket(&fleet.two, &native).await,
        ),
    ];
    let mut bob_socket = open_socket(&fleet.one, &bystander).await;
    for node in [&fleet.one, &fleet.two] {
        for cookie in [&browser, &native, &bystander] {
            assert_eq!(
                get(&node.url("/app/hub"), &with_cookie(cookie))
                    .await
                    .status,
                200
            );
        }
    }

    let revoked = Instant::now();
    let deleted = fleet
        .control_plane
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "CORP".into(),
            user_id: "alice".into(),
            virtual_proxy: Some("app".into()),
        })
        .await
        .expect("DeleteUserSessions succeeds")
        .into_inner();
    assert_eq!(deleted.sessions.len(), 2);

    for (what, socket) in &mut sockets {
        closed_by_revocation(socket, revoked, what).await;
    }
    for node in [&fleet.one, &fleet.two] {
        for cookie in [&browser, &native] {
            let url = node.url("/app/hub");
            eventually("alice's cookies to be rejected", PROPAGATION, || async {
                rejected(&url, cookie).await.then_some(())
            })
            .await;
            let posted = post(&node.url("/app/api"), &with_cookie(cookie), "").await;
            assert_eq!(posted.status, 401);
        }
        // Bob was not involved.
        assert_eq!(
            get(&node.url("/app/hub"), &with_cookie(&bystander))
                .await
                .status,
            200
        );
    }
    assert_still_open(&mut bob_socket).await;
}
