//! How a virtual proxy spreads requests over its upstream nodes: evenly in turn
//! (round-robin), one session per node (sticky-session), away from busy nodes
//! (least-outstanding), and around nodes that are down (retry, 502, ejection); and how
//! connections to them are kept alive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::browser::fixtures::{AppProxy, COOKIE, served_by, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{get, post};
use crate::harness::redis_server::free_port;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

async fn upstreams(count: usize) -> Vec<EchoUpstream> {
    let mut started = Vec::new();
    for index in 0..count {
        started.push(EchoUpstream::start(&format!("engine-{index}")).await);
    }
    started
}

fn nodes(upstreams: &[EchoUpstream]) -> Vec<String> {
    upstreams.iter().map(|upstream| upstream.node()).collect()
}

/// A control plane and one node for `proxy`, and a session cookie of a user of it.
async fn start(proxy: AppProxy) -> (ControlPlane, DataPlaneNode, String) {
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    (control_plane, node, cookie)
}

fn tally(names: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let engines = upstreams(3).await;
    let proxy = AppProxy::new(nodes(&engines)).upstream("strategy = \"round-robin\"");
    let (_control_plane, node, cookie) = start(proxy).await;

    let mut served = Vec::new();
    for _ in 0..30 {
        served.push(served_by(
            &get(&node.url("/app/hub"), &with_cookie(&cookie)).await,
        ));
    }
    let counts = tally(served);
    eprintln!("round-robin over 3 upstreams, 30 requests: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&count| count == 10), "{counts:?}");
}

#[tokio::test]
async fn sticky_sessions_keep_each_session_on_one_upstream() {
    let engines = upstreams(3).await;
    let proxy = AppProxy::new(nodes(&engines)).upstream("strategy = \"sticky-session\"");
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;

    let mut homes = BTreeSet::new();
    for user_number in 0..10 {
        let (cookie, _) = session_cookie(
            &control_plane,
            "app",
            COOKIE,
            user("CORP", &format!("user{user_number}")),
        )
        .await;
        let mut served = BTreeSet::new();
        for _ in 0..5 {
            served.insert(served_by(
                &get(&node.url("/app/hub"), &with_cookie(&cookie)).await,
            ));
        }
        assert_eq!(
            served.len(),
            1,
            "user{user_number} moved between upstreams: {served:?}"
        );
        homes.extend(served);
    }
    eprintln!("sticky sessions of 10 users landed on {homes:?}");
    assert!(
        homes.len() >= 2,
        "sessions are spread over upstreams, not all on one: {homes:?}"
    );
}

#[tokio::test]
async fn least_outstanding_sends_fewer_requests_to_a_slow_upstream() {
    let engines = upstreams(2).await;
    engines[0].set_delay(Duration::from_millis(300));
    let proxy = AppProxy::new(nodes(&engines)).upstream("strategy = \"least-outstanding\"");
    let (_control_plane, node, cookie) = start(proxy).await;

    let mut requests = Vec::new();
    for _ in 0..100 {
        let url = node.url("/app/hub");
        let cookie = cookie.clone();
        requests.push(tokio::spawn(async move {
            served_by(&get(&url, &with_cookie(&cookie)).await)
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut served = Vec::new();
    for request in requests {
        served.push(request.await.expect("request task"));
    }
    let counts = tally(served);
    let slow = counts.get("engine-0").copied().unwrap_or(0);
    eprintln!("least-outstanding, one upstream 300 ms slow, 100 requests: {counts:?}");
    // Round robin would give the slow node 50; two random choices give it about 25.
    assert!(slow < 40, "the slow upstream got {slow} of 100: {counts:?}");
    assert!(slow > 0, "a slow node is not a dead node: {counts:?}");
}

#[tokio::test]
async fn a_dead_upstream_that_must_serve_the_request_gives_502() {
    let mut engines = upstreams(1).await;
    let proxy = AppProxy::new(nodes(&engines)).upstream("connect_timeout = \"1s\"");
    let (_control_plane, node, cookie) = start(proxy).await;
    assert_eq!(
        get(&node.url("/app/hub"), &with_cookie(&cookie))
            .await
            .status,
        200
    );

    engines[0].stop();
    let response = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(response.status, 502, "{}", response.text());
    let posted = post(&node.url("/app/api"), &with_cookie(&cookie), "body").await;
    assert_eq!(posted.status, 502, "{}", posted.text());
}

#[tokio::test]
async fn requests_without_a_body_are_retried_on_a_live_upstream() {
    let engines = upstreams(1).await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let proxy = AppProxy::new([nowhere, engines[0].node()])
        .upstream("eject_after_failures = 1000")
        .upstream("connect_timeout = \"1s\"");
    let (_control_plane, node, cookie) = start(proxy).await;
    for _ in 0..6 {
        let response = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
        assert_eq!(served_by(&response), "engine-0");
    }
}

#[tokio::test]
async fn a_dead_upstream_is_ejected_after_repeated_connect_failures() {
    let engines = upstreams(1).await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let proxy = AppProxy::new([engines[0].node(), nowhere])
        .upstream("eject_after_failures = 2")
        .upstream("ejection_time = \"60s\"")
        .upstream("connect_timeout = \"1s\"");
    let (_control_plane, node, cookie) = start(proxy).await;

    // A connection that cannot be made sent nothing, so even a request with a body goes on
    // to the live node. Round robin sends every other one to the dead node first, until
    // its second failure ejects it.
    for _ in 0..4 {
        let response = post(&node.url("/app/api"), &with_cookie(&cookie), "payload").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(served_by(&response), "engine-0");
    }
    let metrics = get(&format!("http://{}/metrics", node.admin_address()), &[])
        .await
        .text();
    assert!(
        metrics.contains(r#"gatehouse_upstream_nodes{virtual_proxy="app",state="ejected"} 1"#),
        "{metrics}"
    );

    // Ejected: everything goes to the live node now.
    for _ in 0..10 {
        let response = post(&node.url("/app/api"), &with_cookie(&cookie), "payload").await;
        assert_eq!(served_by(&response), "engine-0");
        let response = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
        assert_eq!(served_by(&response), "engine-0");
    }
    assert_eq!(engines[0].requests().len(), 4 + 20);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let engines = upstreams(1).await;
    let (_control_plane, node, cookie) = start(AppProxy::new(nodes(&engines))).await;
    for round in 0..10 {
        let response = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let posted = post(
            &node.url("/app/api"),
            &with_cookie(&cookie),
            &"x".repeat(round),
        )
        .await;
        assert_eq!(posted.json()["body"], "x".repeat(round));
    }
    // One request at a time: one connection carries all twenty.
    assert_eq!(engines[0].connections(), 1);
    assert_eq!(engines[0].requests().len(), 20);
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_fails_no_request() {
    let engines = upstreams(1).await;
    let (_control_plane, node, cookie) = start(AppProxy::new(nodes(&engines))).await;
    for _ in 0..3 {
        let response = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    engines[0].close_connections();
    // Let the close reach the node's side of the idle connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let response = post(&node.url("/app/api"), &with_cookie(&cookie), "after").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["body"], "after");
    }
    assert_eq!(engines[0].connections(), 2);
}

#[tokio::test]
async fn large_bodies_stream_both_ways_over_a_kept_alive_connection() {
    let engines = upstreams(1).await;
    let (_control_plane, node, cookie) = start(AppProxy::new(nodes(&engines))).await;
    // Far larger than any socket or hyper buffer: both bodies must stream through the
    // connection the request's task drives, not fit in one read.
    let payload = "0123456789abcdef".repeat(256 * 1024);
    for _ in 0..2 {
        let response = post(&node.url("/app/upload"), &with_cookie(&cookie), &payload).await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.json()["body"].as_str().map(str::len),
            Some(payload.len())
        );
    }
    assert_eq!(
        engines[0].connections(),
        1,
        "the connection is reused after a large exchange"
    );
}

#[tokio::test]
async fn an_http_1_0_request_without_host_reaches_the_upstream_with_one() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let engines = upstreams(1).await;
    let (_control_plane, node, cookie) = start(AppProxy::new(nodes(&engines))).await;
    let mut stream = tokio::net::TcpStream::connect(node.address())
        .await
        .unwrap();
    let request = format!("GET /app/old HTTP/1.0\r\ncookie: {cookie}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let seen = engines[0].requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["headers"]["host"], engines[0].node());
}
