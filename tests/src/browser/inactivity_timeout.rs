//! Sliding inactivity timeouts through a data-plane node: a session in use (HTTP requests, or
//! just an open WebSocket) stays alive past its inactivity timeout because the node reports
//! activity in batches; left alone, it ends.

use std::time::Duration;

use crate::browser::fixtures::{AppProxy, COOKIE, open_socket, rejected, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::get;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

#[tokio::test]
async fn sessions_in_use_outlive_their_inactivity_timeout_and_idle_ones_end() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).key("inactivity_timeout = \"1s\"");
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start_with(
        &control_plane,
        "[cache]\nttl = \"200ms\"\ntouch_interval = \"400ms\"\ngrace = \"30s\"\n",
    )
    .await;
    let (browsing, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let (watching, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "bob")).await;
    let url = node.url("/app/hub");

    // Twice the inactivity timeout: one user keeps clicking, the other only holds a
    // WebSocket open.
    let mut socket = open_socket(&node, &watching).await;
    for _ in 0..10 {
        let response = get(&url, &with_cookie(&browsing)).await;
        assert_eq!(response.status, 200, "{}", response.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&url, &with_cookie(&browsing)).await.status, 200);
    assert_eq!(
        get(&url, &with_cookie(&watching)).await.status,
        200,
        "an open WebSocket is activity"
    );

    // Left alone past the timeout (and a report interval), both end.
    let _ = socket.close(None).await;
    drop(socket);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        rejected(&url, &browsing).await,
        "idle session still accepted"
    );
    assert!(
        rejected(&url, &watching).await,
        "idle session still accepted"
    );
}
