//! One of two control-plane replicas dies under load. Nodes are configured with both; they
//! move to the survivor without an error for anyone signed in, new logins work through it,
//! and revocations issued while they move still reach every node (WebSockets included).

use std::time::{Duration, Instant};

use crate::browser::fixtures::{AppProxy, delete_session, open_socket};
use crate::harness::client::expect_close;
use crate::harness::load::Load;
use crate::harness::profile::pick;
use crate::harness::relay::{Cut, Relay};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};
use crate::reliability::fixtures::{
    accepted, assert_no_errors, await_rejected, login_redirects, node_counter, node_settings, secs,
    sign_in, targets, warm,
};

/// Generous bound on the nodes' move to the surviving replica (the time taken is printed):
/// a replica that vanishes without closing its connections is noticed by HTTP/2 keep-alive.
const SWITCH_DEADLINE: Duration = Duration::from_secs(30);

/// One replica dies while nodes are under load; `death` says how its connections end.
async fn a_replica_dies_under_load(death: Cut) {
    let after_kill = pick(Duration::from_secs(5), Duration::from_secs(30));
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = AppProxy::new([upstream.node()]).on_redis(&redis);
    let doomed = ControlPlane::start(&config).await;
    let survivor = ControlPlane::start(&config).await;
    // Each replica behind a relay, so that its death can drop the nodes' connections at once
    // (as a crashed process does) and refuse new ones.
    let to_doomed = Relay::start(doomed.address()).await;
    let to_survivor = Relay::start(survivor.address()).await;
    let settings = node_settings(
        Duration::from_secs(60),
        &[to_doomed.address(), to_survivor.address()],
    );
    // While the nodes start, only the doomed replica answers: their Watch streams are on it,
    // so its death must move them.
    to_survivor.cut(Cut::Refuse);
    let node_a = DataPlaneNode::start_with(&doomed, &settings).await;
    let node_b = DataPlaneNode::start_with(&doomed, &settings).await;
    to_survivor.heal();

    let users = sign_in(&survivor, "user", pick(20, 100)).await;
    warm(&node_a, &users).await;
    warm(&node_b, &users).await;
    // Never seen by either node before the kill: checking them needs a live replica.
    let unseen = sign_in(&survivor, "unseen", 40).await;
    // Revoked while the nodes move, each with a WebSocket open on both nodes.
    let victims = sign_in(&survivor, "victim", 3).await;
    let mut sockets = Vec::new();
    for victim in &victims {
        sockets.push(open_socket(&node_a, &victim.cookie).await);
        sockets.push(open_socket(&node_b, &victim.cookie).await);
    }
    let applied_before = [
        node_counter(&node_a, "revocations_applied", "").await,
        node_counter(&node_b, "revocations_applied", "").await,
    ];
    let unavailable_before = node_counter(&node_a, "validations", "outcome=\"unavailable\"").await;

    let load = Load::start(
        targets(&[("node-a", &node_a), ("node-b", &node_b)], &users),
        2,
        Duration::from_millis(2),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_no_errors("before the kill", &load.take());

    to_doomed.cut(death);
    drop(doomed);
    let killed = Instant::now();
    // Revocations while the nodes are moving (at once, and a little later), and meanwhile
    // the time until both nodes can log users in through the survivor.
    let revoking =
        futures_util::future::join_all(victims.iter().zip([0, 200, 600]).map(|(victim, wait)| {
            let (node_a, node_b, survivor) = (&node_a, &node_b, &survivor);
            async move {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                delete_session(survivor, &victim.session.handle).await;
                let revoked = [(victim.clone(), Instant::now())];
                await_rejected(&[node_a, node_b], &revoked, SWITCH_DEADLINE).await[0]
            }
        }));
    let switching = eventually(
        "both nodes to log in through the survivor",
        SWITCH_DEADLINE,
        || async {
            (login_redirects(&node_a).await && login_redirects(&node_b).await)
                .then(|| killed.elapsed())
        },
    );
    let (delays, switched) = tokio::join!(revoking, switching);
    // The cookies may have been refused by re-validation alone (the cache is fresh for 1 s);
    // the Watch stream, now on the survivor, must deliver every revocation to every node too:
    // that is what closes WebSockets.
    let delivered = eventually(
        "both nodes to apply every revocation from the Watch stream",
        SWITCH_DEADLINE,
        || async {
            for (node, before) in [&node_a, &node_b].into_iter().zip(applied_before) {
                let applied = node_counter(node, "revocations_applied", "").await;
                if applied < before + victims.len() as u64 {
                    return None;
                }
            }
            Some(killed.elapsed())
        },
    )
    .await;
    for socket in &mut sockets {
        expect_close(socket, Duration::from_secs(2)).await;
    }

    // New work needs a replica: it goes to the survivor, every time, on both nodes.
    let mut checked = 0;
    for user in &unseen {
        for node in [&node_a, &node_b] {
            assert!(
                login_redirects(node).await,
                "a login failed after the switch"
            );
            assert!(
                accepted(node, &user.cookie).await,
                "a valid session was not accepted after the switch"
            );
            checked += 2;
        }
    }
    let remaining = after_kill.saturating_sub(killed.elapsed());
    tokio::time::sleep(remaining).await;
    let during = load.stop().await;
    assert_no_errors("after the kill", &during);

    let all = during.all();
    let unavailable =
        node_counter(&node_a, "validations", "outcome=\"unavailable\"").await - unavailable_before;
    eprintln!(
        "reliability: control-plane replica gone ({death:?}) under load: {} requests through 2 nodes in \
         the {} after, {} errors (slowest {:?}); logins through the survivor {} after the kill, \
         then {checked} logins and unseen sessions all good; revocations issued during the \
         switch refused on both nodes {} after each, all delivered by the Watch streams {} \
         after the kill (WebSockets closed); {unavailable} validations on node-a found no \
         replica",
        all.requests(),
        secs(after_kill),
        all.errors(),
        all.slowest,
        secs(switched),
        delays
            .iter()
            .map(|delay| secs(*delay))
            .collect::<Vec<_>>()
            .join(", "),
        secs(delivered),
    );
    drop(to_doomed);
}

#[tokio::test]
async fn killing_one_of_two_control_plane_replicas_under_load_moves_nodes_to_the_other() {
    // A crashed process: its connections are closed and new ones refused.
    a_replica_dies_under_load(Cut::Refuse).await;
}

#[tokio::test]
async fn a_control_plane_replica_vanishing_silently_under_load_moves_nodes_to_the_other() {
    // A host that lost power: its connections go quiet, nothing is closed or refused.
    a_replica_dies_under_load(Cut::Silent).await;
}
