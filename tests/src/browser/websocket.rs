//! WebSockets through a data-plane node: spliced to the upstream for a logged-in user, with
//! the same identity headers and cookie stripping as HTTP, a login ticket accepted on the
//! upgrade URL, and refused (403) when the browser's `Origin` is not an allowed host.

use crate::browser::fixtures::{
    AppProxy, COOKIE, PORTAL, assert_still_open, qlik_user, seen_header, with_cookie,
};
use crate::harness::auth_module::{issue_ticket, session_cookie, user};
use crate::harness::client::{encode, get, websocket, websocket_handshake};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

async fn start() -> (EchoUpstream, ControlPlane, DataPlaneNode, String) {
    let upstream = EchoUpstream::start("engine").await;
    let control_plane = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    (upstream, control_plane, node, cookie)
}

#[tokio::test]
async fn a_websocket_is_spliced_to_the_upstream_as_the_user() {
    let (upstream, _control_plane, node, cookie) = start().await;
    let mut socket = websocket(
        &node.ws_url("/app/app/engineData?reloadUri=x"),
        &[("cookie", &format!("{cookie}; theme=dark"))],
    )
    .await
    .unwrap_or_else(|status| panic!("upgrade refused with {status}"));
    for _ in 0..3 {
        assert_still_open(&mut socket).await;
    }

    let upgrade = upstream
        .requests()
        .pop()
        .expect("the upstream saw the upgrade");
    assert_eq!(upgrade["path"], "/app/engineData?reloadUri=x");
    assert_eq!(
        seen_header(&upgrade, "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert_eq!(seen_header(&upgrade, "cookie"), Some("theme=dark"));
    assert_eq!(seen_header(&upgrade, "upgrade"), Some("websocket"));
    assert_eq!(
        node.state().sockets.count(),
        1,
        "the node tracks the open socket"
    );
}

#[tokio::test]
async fn websocket_origin_must_be_an_allowed_host() {
    let (upstream, _control_plane, node, cookie) = start().await;
    let url = node.ws_url("/app/ws");

    for foreign in ["http://evil.test", "https://portal.test.evil.test", "null"] {
        let refused = websocket(&url, &[("cookie", &cookie), ("origin", foreign)]).await;
        assert_eq!(refused.err(), Some(403), "Origin {foreign}");
    }
    assert!(
        upstream.requests().is_empty(),
        "a refused upgrade never reaches the upstream"
    );

    let own_host = format!("http://{}", node.address());
    for allowed in [
        format!("http://{PORTAL}"),
        format!("https://{PORTAL}"),
        own_host,
    ] {
        let mut socket = websocket(&url, &[("cookie", &cookie), ("origin", &allowed)])
            .await
            .unwrap_or_else(|status| panic!("Origin {allowed}: refused with {status}"));
        assert_still_open(&mut socket).await;
    }
    // Non-browser clients send no Origin at all.
    let mut socket = websocket(&url, &with_cookie(&cookie))
        .await
        .expect("no Origin: allowed");
    assert_still_open(&mut socket).await;
}

#[tokio::test]
async fn a_websocket_without_a_session_is_not_upgraded() {
    let (upstream, _control_plane, node, _cookie) = start().await;
    let refused = websocket(&node.ws_url("/app/ws"), &[]).await;
    assert_eq!(refused.err(), Some(302), "the login flow, as for any GET");
    let forged = websocket(
        &node.ws_url("/app/ws"),
        &with_cookie(&format!("{COOKIE}=forged")),
    )
    .await;
    assert_eq!(forged.err(), Some(302));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_ticket_on_the_upgrade_url_logs_in_and_stays_away_from_the_upstream() {
    let (upstream, control_plane, node, _cookie) = start().await;
    let page = node.url("/app/ws");
    let login = get(&page, &[]).await;
    let redirect = issue_ticket(
        &control_plane,
        login.location().expect("Location"),
        user("CORP", "erin"),
    )
    .await;
    let url = format!(
        "{}?qlikTicket={}",
        node.ws_url("/app/ws"),
        encode(&redirect.ticket)
    );

    let (mut socket, headers) = websocket_handshake(&url, &[])
        .await
        .unwrap_or_else(|status| panic!("upgrade with a ticket refused with {status}"));
    assert_still_open(&mut socket).await;
    let set_cookie = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|cookie| cookie.starts_with(&format!("{COOKIE}=")))
        .expect("the upgrade answer sets the session cookie")
        .to_owned();
    let upgrade = upstream
        .requests()
        .pop()
        .expect("the upstream saw the upgrade");
    assert_eq!(upgrade["path"], "/ws", "the ticket is removed");
    assert_eq!(
        seen_header(&upgrade, "x-qlik-user"),
        Some(qlik_user("CORP", "erin").as_str())
    );

    // The cookie from the upgrade works for plain requests too.
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let response = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(response.status, 200);
}
