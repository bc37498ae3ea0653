//! A node cut off from the control plane (through a relay the test controls, black-holing
//! its traffic) for longer than its cache grace. Sessions it cannot verify get 503 with
//! `Retry-After`, never 401 and never a login redirect; a node that was not cut off does not
//! notice; after healing, revocations issued during the cut are applied, WebSockets closed.

use std::time::{Duration, Instant};

use crate::browser::fixtures::{AppProxy, delete_session, open_socket, rejected};
use crate::harness::client::expect_close;
use crate::harness::load::Load;
use crate::harness::profile::pick;
use crate::harness::relay::{Cut, Relay};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};
use crate::reliability::fixtures::{
    accepted, assert_no_errors, assert_unavailable, login_redirects, node_counter, node_settings,
    secs, sign_in, targets, warm,
};

/// Generous bound on the node catching up once healed (the time taken is printed).
const HEAL_DEADLINE: Duration = Duration::from_secs(20);

/// The node's link to the control plane is cut as `how` says, for longer than its grace.
async fn cut_off_longer_than_the_grace(how: Cut) {
    let grace = Duration::from_secs(3);
    let cut_for = pick(Duration::from_secs(6), Duration::from_secs(30));
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = AppProxy::new([upstream.node()]).on_redis(&redis);
    let control_plane = ControlPlane::start(&config).await;
    let link = Relay::start(control_plane.address()).await;
    let isolated =
        DataPlaneNode::start_with(&control_plane, &node_settings(grace, &[link.address()])).await;
    let connected = DataPlaneNode::start_with(&control_plane, &node_settings(grace, &[])).await;

    let users = sign_in(&control_plane, "user", pick(20, 100)).await;
    warm(&isolated, &users).await;
    warm(&connected, &users).await;
    let unseen = sign_in(&control_plane, "unseen", 1).await;
    // Revoked during the cut, each with a WebSocket open on the isolated node.
    let victims = sign_in(&control_plane, "victim", 3).await;
    let mut sockets = Vec::new();
    for victim in &victims {
        sockets.push(open_socket(&isolated, &victim.cookie).await);
    }
    let applied_before = node_counter(&isolated, "revocations_applied", "").await;

    let load = Load::start(
        targets(
            &[("isolated", &isolated), ("connected", &connected)],
            &users,
        ),
        2,
        Duration::from_millis(2),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_no_errors("before the cut", &load.take());

    link.cut(how);
    let cut = Instant::now();
    for victim in &victims {
        delete_session(&control_plane, &victim.session.handle).await;
    }
    // The node that can reach the control plane applies them at once.
    eventually(
        "the connected node to apply the revocations",
        HEAL_DEADLINE,
        || async {
            for victim in &victims {
                if !rejected(&connected.url("/app/hub"), &victim.cookie).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // Past the grace, nothing the isolated node knows can be used any more.
    tokio::time::sleep((grace + Duration::from_secs(2)).saturating_sub(cut.elapsed())).await;
    assert_unavailable(
        &isolated,
        Some(&users[0].cookie),
        "a session past its grace",
    )
    .await;
    assert_unavailable(
        &isolated,
        Some(&victims[0].cookie),
        "a session revoked meanwhile",
    )
    .await;
    assert_unavailable(&isolated, Some(&unseen[0].cookie), "a session never seen").await;
    assert_unavailable(&isolated, None, "a new login").await;
    tokio::time::sleep(cut_for.saturating_sub(cut.elapsed())).await;
    let during = load.take();
    assert_no_errors("on the connected node during the cut", &{
        let mut connected_only = during.clone();
        connected_only.0.retain(|label, _| label == "connected");
        connected_only
    });
    let on_isolated = during.of("isolated");
    let served = on_isolated.count(200);
    let unavailable = on_isolated.count(503);
    assert_eq!(
        served + unavailable,
        on_isolated.requests(),
        "only 200 (within the grace) and 503 (past it) on the isolated node:\n{during}"
    );
    assert!(unavailable > 0, "the cut outlasted the grace:\n{during}");
    assert_eq!(on_isolated.unavailable_without_retry_after, 0);

    link.heal();
    let healed = Instant::now();
    let recovered = eventually(
        "the isolated node to check sessions and log users in again",
        HEAL_DEADLINE,
        || async {
            (login_redirects(&isolated).await && accepted(&isolated, &unseen[0].cookie).await)
                .then(|| healed.elapsed())
        },
    )
    .await;
    // The revocations it missed arrive with its Watch stream: WebSockets close, and the
    // cookies are refused (not 503, not served).
    let delivered = eventually(
        "the isolated node to apply the revocations it missed",
        HEAL_DEADLINE,
        || async {
            (node_counter(&isolated, "revocations_applied", "").await
                >= applied_before + victims.len() as u64)
                .then(|| healed.elapsed())
        },
    )
    .await;
    for socket in &mut sockets {
        expect_close(socket, Duration::from_secs(2)).await;
    }
    for victim in &victims {
        assert!(rejected(&isolated.url("/app/hub"), &victim.cookie).await);
    }
    let transition = load.take();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = load.stop().await;
    assert_no_errors("after healing", &after);
    assert_eq!(transition.of("connected").errors(), 0, "{transition}");
    let healing = transition.of("isolated");
    assert_eq!(
        healing.count(200) + healing.count(503),
        healing.requests(),
        "only 200 and 503 while the isolated node catches up:\n{transition}"
    );

    eprintln!(
        "reliability: node cut off ({how:?}) from the control plane for {} (grace {}): the isolated \
         node answered {served} requests with 200 and {unavailable} with 503 + Retry-After, \
         0 other; the connected node {} requests, 0 errors; after healing, logins and \
         checks worked in {}, the {} revocations missed were applied (WebSockets closed) in {}",
        secs(cut_for),
        secs(grace),
        during.of("connected").requests(),
        secs(recovered),
        victims.len(),
        secs(delivered),
    );
}

#[tokio::test]
async fn a_node_cut_off_longer_than_its_grace_answers_503_and_catches_up_when_healed() {
    // Packets dropped: the node's connections to the control plane are lost, new ones hang.
    cut_off_longer_than_the_grace(Cut::BlackHole).await;
}

#[tokio::test]
async fn a_node_whose_link_goes_silent_longer_than_its_grace_answers_503_and_catches_up() {
    // The link goes quiet without closing anything: only timeouts tell the node.
    cut_off_longer_than_the_grace(Cut::Silent).await;
}
