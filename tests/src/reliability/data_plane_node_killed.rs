//! A data-plane node dies mid-traffic. The other node does not notice (no error, its
//! WebSockets stay open); the node started again in its place takes a new snapshot, becomes
//! ready, and serves the sessions that existed before, with nothing carried over.

use std::time::{Duration, Instant};

use crate::browser::fixtures::{
    AppProxy, assert_still_open, delete_session, open_socket, rejected,
};
use crate::harness::load::{Load, Target};
use crate::harness::profile::pick;
use crate::harness::relay::{Cut, Relay};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};
use crate::reliability::fixtures::{
    accepted, assert_no_errors, node_settings, secs, sign_in, targets, warm,
};

/// Generous bound on the restarted node serving again (the time taken is printed).
const RESTART_DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_node_killed_mid_traffic_leaves_the_other_unaffected_and_restarts_cleanly() {
    let down_for = pick(Duration::from_secs(2), Duration::from_secs(15));
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = AppProxy::new([upstream.node()]).on_redis(&redis);
    let control_plane = ControlPlane::start(&config).await;
    let settings = format!(
        "shutdown_grace = \"1s\"\n{}",
        node_settings(Duration::from_secs(60), &[])
    );
    let doomed = DataPlaneNode::start_with(&control_plane, &settings).await;
    let other = DataPlaneNode::start_with(&control_plane, &settings).await;
    // Browsers reach the doomed node through a relay: killing it drops their connections
    // mid-request and refuses new ones, as a crashed process does, and the node started
    // again on the same port is reached at the same address.
    let port = doomed.address().port();
    let front = Relay::start(doomed.address()).await;

    let users = sign_in(&control_plane, "user", pick(20, 100)).await;
    warm(&doomed, &users).await;
    warm(&other, &users).await;
    let mut sockets = Vec::new();
    for user in users.iter().take(5) {
        sockets.push(open_socket(&other, &user.cookie).await);
    }
    let mut load_targets = targets(&[("other", &other)], &users);
    for user in &users {
        load_targets.push(Target::new(
            "doomed",
            format!("http://{}/app/hub", front.address()),
            Some(user.cookie.clone()),
        ));
    }
    let load = Load::start(load_targets, 2, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_no_errors("before the kill", &load.take());

    front.cut(Cut::Refuse);
    let killed = Instant::now();
    doomed.stop().await;
    tokio::time::sleep(down_for.saturating_sub(killed.elapsed())).await;
    let down = load.take();
    let on_other = down.of("other");
    assert!(on_other.requests() > 0);
    assert_eq!(on_other.errors(), 0, "the other node was affected:\n{down}");
    for socket in &mut sockets {
        assert_still_open(socket).await;
    }

    // Started again on the same port, with an empty cache: a new snapshot makes it ready.
    eventually(
        "the killed node's port to be free",
        RESTART_DEADLINE,
        || async move {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        },
    )
    .await;
    let restarting = Instant::now();
    let restarted = DataPlaneNode::start_with(
        &control_plane,
        &format!("listen = \"127.0.0.1:{port}\"\n{settings}"),
    )
    .await;
    let ready = restarting.elapsed();
    front.heal();
    assert_eq!(restarted.state().cache.len(), 0, "a restart starts cold");
    let serving = eventually(
        "the load to get through the restarted node",
        RESTART_DEADLINE,
        || async {
            let url = format!("http://{}/app/hub", front.address());
            let cookie = [("cookie", users[0].cookie.as_str())];
            crate::harness::client::try_request(http::Method::GET, &url, &cookie, "")
                .await
                .is_ok_and(|response| response.status == 200)
                .then(|| restarting.elapsed())
        },
    )
    .await;
    let transition = load.take();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = load.stop().await;
    assert_no_errors("after the restart", &after);
    assert_eq!(transition.of("other").errors(), 0, "{transition}");
    // Every session that existed before is served by the restarted node.
    for user in &users {
        assert!(accepted(&restarted, &user.cookie).await);
    }
    // And it follows revocations: its Watch stream is live.
    let revoked = &users[1];
    delete_session(&control_plane, &revoked.session.handle).await;
    eventually(
        "the restarted node to apply a revocation",
        RESTART_DEADLINE,
        || async {
            rejected(&restarted.url("/app/hub"), &revoked.cookie)
                .await
                .then_some(())
        },
    )
    .await;

    let doomed_tally = down.of("doomed");
    eprintln!(
        "reliability: data-plane node killed mid-traffic, down {}: the other node served {} \
         requests with 0 errors and kept its WebSockets open; the killed node's clients got \
         {} failed requests ({:?}); restarted node ready in {}, serving {} after the restart",
        secs(down_for),
        on_other.requests(),
        doomed_tally.errors(),
        doomed_tally.statuses,
        secs(ready),
        secs(serving),
    );
}
