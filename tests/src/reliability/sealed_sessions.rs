//! A store outage seen by nodes that never validated a session: the session's seal (a cookie
//! set at login) lets a control-plane replica vouch for it while Redis is down, on every node
//! and on a node started during the outage; a session ended before the outage stays refused;
//! new logins get 503; and once `outage.grace` has passed, the seal is worth nothing more.

use std::time::{Duration, Instant};

use crate::browser::fixtures::{AppProxy, COOKIE, logout, qlik_user, seen_header, with_cookie};
use crate::harness::auth_module::{issue_ticket, user};
use crate::harness::client::get;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer, eventually};
use crate::reliability::fixtures::{assert_unavailable, node_settings, secs};

/// The outage grace of these tests: long enough for every check, short enough to wait out.
const OUTAGE_GRACE: Duration = Duration::from_secs(8);
/// Sessions validated before the outage are served from the node's cache this long: shorter
/// than the outage grace, so what is served after it comes from the seal.
const CACHE_GRACE: Duration = Duration::from_secs(1);

const SEAL_COOKIE: &str = "X-Qlik-Session-app-seal";

/// A browser's cookies after a ticket login through a node: the session and its seal.
#[derive(Debug, Clone)]
struct Browser {
    session: String,
    seal: String,
}

impl Browser {
    fn cookies(&self) -> String {
        format!("{}; {}", self.session, self.seal)
    }
}

/// Logs `id` in through `node` with the ticket flow, as a browser does.
async fn log_in(control_plane: &ControlPlane, node: &DataPlaneNode, id: &str) -> Browser {
    let login = get(&node.url("/app/hub"), &[]).await;
    let ticket = issue_ticket(
        control_plane,
        login.location().expect("a login redirect"),
        user("CORP", id),
    )
    .await;
    let landed = get(&ticket.url, &[]).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    let seal = landed
        .set_cookie(SEAL_COOKIE)
        .expect("the login sets the seal cookie");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(seal.contains(attribute), "{seal}");
    }
    Browser {
        session: landed.cookie_pair(COOKIE).expect("the session cookie"),
        seal: landed.cookie_pair(SEAL_COOKIE).expect("the seal cookie"),
    }
}

/// Asserts `node` serves `cookies` as `id`'s session.
async fn assert_served(node: &DataPlaneNode, cookies: &str, id: &str, what: &str) {
    let response = get(&node.url("/app/hub"), &with_cookie(cookies)).await;
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(
        seen_header(&response.json(), "x-qlik-user"),
        Some(qlik_user("CORP", id).as_str()),
        "{what}"
    );
    assert!(
        seen_header(&response.json(), "cookie").is_none_or(|cookie| !cookie.contains("seal")),
        "{what}: the seal reached the upstream"
    );
}

/// Asserts `node` does not serve `cookies`: whatever it answers, no upstream sees the user.
async fn assert_refused(node: &DataPlaneNode, cookies: &str, what: &str) {
    let response = get(&node.url("/app/hub"), &with_cookie(cookies)).await;
    assert_ne!(response.status, 200, "{what}: {}", response.text());
}

fn config(redis: &RedisServer, upstream: &EchoUpstream) -> String {
    format!(
        "[outage]\ngrace = \"{}s\"\n\n{}",
        OUTAGE_GRACE.as_secs(),
        AppProxy::new([upstream.node()]).on_redis(redis)
    )
}

/// Waits until `node` refuses `cookies` (a revocation reached it).
async fn await_refused(node: &DataPlaneNode, cookies: &str) {
    eventually(
        "the ended session to be refused",
        Duration::from_secs(5),
        || async {
            (get(&node.url("/app/hub"), &with_cookie(cookies))
                .await
                .status
                != 200)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sealed_session_survives_a_redis_outage_on_nodes_that_never_saw_it() {
    // Persistent, so the session is still there when Redis comes back.
    let mut redis = RedisServer::start_persistent().await;
    let upstream = EchoUpstream::start("engine").await;
    let control_plane = ControlPlane::start(&config(&redis, &upstream)).await;
    let settings = node_settings(CACHE_GRACE, &[]);
    let node_1 = DataPlaneNode::start_with(&control_plane, &settings).await;
    let node_2 = DataPlaneNode::start_with(&control_plane, &settings).await;

    let alice = log_in(&control_plane, &node_1, "alice").await;
    let bob = log_in(&control_plane, &node_1, "bob").await;
    let carol = log_in(&control_plane, &node_1, "carol").await;
    assert_served(&node_1, &alice.cookies(), "alice", "before the outage").await;
    // Bob logs out before the outage; his browser keeps its cookies (a copy, say).
    assert_eq!(logout(&node_1, &bob.cookies()).await.status, 200);
    await_refused(&node_2, &bob.cookies()).await;

    redis.kill().await;
    let went = Instant::now();
    assert_served(
        &node_2,
        &alice.cookies(),
        "alice",
        "a node that never saw the session, during the outage",
    )
    .await;
    assert_served(
        &node_1,
        &alice.cookies(),
        "alice",
        "the login node, during the outage",
    )
    .await;
    // Carol's session is one node 2 has not seen either.
    assert_unavailable(
        &node_2,
        Some(&carol.session),
        "the session cookie without its seal",
    )
    .await;
    let swapped = format!("{}; {}", carol.session, alice.seal);
    assert_unavailable(&node_2, Some(&swapped), "another session's seal").await;
    assert_refused(&node_2, &bob.cookies(), "a session ended before the outage").await;
    assert_unavailable(&node_2, None, "a new login during the outage").await;

    let node_3 = DataPlaneNode::start_with(&control_plane, &settings).await;
    assert_served(
        &node_3,
        &alice.cookies(),
        "alice",
        "a node started during the outage",
    )
    .await;
    assert_served(
        &node_3,
        &carol.cookies(),
        "carol",
        "a node started during the outage",
    )
    .await;
    assert_refused(&node_3, &bob.cookies(), "an ended session on a new node").await;

    // Served until the outage grace runs out, then 503 (never a login redirect).
    let mut served = 0;
    let ended = loop {
        let response = get(&node_2.url("/app/hub"), &with_cookie(&alice.cookies())).await;
        match response.status.as_u16() {
            200 => served += 1,
            503 => break went.elapsed(),
            other => panic!("{other} during the outage: {}", response.text()),
        }
        assert!(
            went.elapsed() < OUTAGE_GRACE + Duration::from_secs(10),
            "still served {} after the outage began",
            secs(went.elapsed())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ended + Duration::from_secs(1) >= OUTAGE_GRACE,
        "refused after {}, before the grace of {}",
        secs(ended),
        secs(OUTAGE_GRACE)
    );
    for node in [&node_1, &node_3] {
        assert_unavailable(node, Some(&alice.cookies()), "after the outage grace").await;
    }
    eprintln!(
        "reliability sealed sessions: {served} requests served from the seal on a node that never saw the session; refused {} after the outage began (grace {})",
        secs(ended),
        secs(OUTAGE_GRACE)
    );

    redis.restart().await;
    eventually(
        "the session to be served again once Redis is back",
        Duration::from_secs(15),
        || async {
            (get(&node_2.url("/app/hub"), &with_cookie(&alice.cookies()))
                .await
                .status
                == 200)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_vouches_for_a_session_another_replica_sealed() {
    let mut redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let toml = config(&redis, &upstream);
    let replica_a = ControlPlane::start(&toml).await;
    let replica_b = ControlPlane::start(&toml).await;
    // Each node knows one replica only: a session sealed through A is vouched for by B.
    let node_a = DataPlaneNode::start_with(
        &replica_a,
        &node_settings(CACHE_GRACE, &[replica_a.address()]),
    )
    .await;
    let node_b = DataPlaneNode::start_with(
        &replica_b,
        &node_settings(CACHE_GRACE, &[replica_b.address()]),
    )
    .await;

    let alice = log_in(&replica_a, &node_a, "alice").await;
    let bob = log_in(&replica_a, &node_a, "bob").await;
    assert_eq!(logout(&node_a, &bob.cookies()).await.status, 200);
    await_refused(&node_b, &bob.cookies()).await;

    redis.kill().await;
    assert_served(
        &node_b,
        &alice.cookies(),
        "alice",
        "through the replica that did not seal the session",
    )
    .await;
    assert_refused(
        &node_b,
        &bob.cookies(),
        "an ended session, through the other replica",
    )
    .await;
    let node_new = DataPlaneNode::start_with(
        &replica_b,
        &node_settings(CACHE_GRACE, &[replica_b.address()]),
    )
    .await;
    assert_served(
        &node_new,
        &alice.cookies(),
        "alice",
        "a new node on the other replica",
    )
    .await;
    assert_unavailable(&node_b, None, "a new login during the outage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_redis_alone_does_not_speak_for_an_ended_session() {
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    // Replica A reaches Redis through a relay the test cuts; B directly.
    let to_redis =
        crate::harness::relay::Relay::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap())
            .await;
    let through_relay = format!(
        "[outage]\ngrace = \"{}s\"\n\n{}",
        OUTAGE_GRACE.as_secs(),
        AppProxy::new([upstream.node()])
            .on_redis(&redis)
            .replace(&redis.url(), &format!("redis://{}/", to_redis.address()))
    );
    let replica_a = ControlPlane::start(&through_relay).await;
    let replica_b = ControlPlane::start(&config(&redis, &upstream)).await;
    let both = node_settings(CACHE_GRACE, &[replica_a.address(), replica_b.address()]);
    let node = DataPlaneNode::start_with(&replica_a, &both).await;

    let mallory = log_in(&replica_b, &node, "mallory").await;
    let alice = log_in(&replica_b, &node, "alice").await;
    to_redis.cut(crate::harness::relay::Cut::Refuse);
    // Ended through B while A cannot hear of it.
    delete_session_by_token(&replica_b, &mallory).await;
    await_refused(&node, &mallory.cookies()).await;
    // A alone would vouch for it from the seal: it cannot know.
    let vouched = replica_a
        .node()
        .validate_session(gatehouse_proto::v1::ValidateSessionRequest {
            virtual_proxy: "app".into(),
            session_token: token_of(&mallory),
            seal: mallory
                .seal
                .split_once('=')
                .map(|(_, seal)| seal.to_owned())
                .unwrap(),
            renew_seal: true,
        })
        .await
        .expect("replica A vouches from the seal")
        .into_inner();
    assert!(vouched.outage_until.is_some(), "{vouched:?}");
    // Past the few seconds a node itself remembers a revocation for.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Whichever replica the node asks first, B's "no such session" wins over A's seal.
    for round in 0..4 {
        tokio::time::sleep(CACHE_GRACE + Duration::from_millis(100)).await;
        assert_refused(&node, &mallory.cookies(), &format!("round {round}")).await;
        assert_served(&node, &alice.cookies(), "alice", &format!("round {round}")).await;
    }
}

/// Ends the browser's session through the Session API of `control_plane`, by its token.
async fn delete_session_by_token(control_plane: &ControlPlane, browser: &Browser) {
    let token = token_of(browser);
    control_plane
        .sessions()
        .delete_session(gatehouse_proto::v1::DeleteSessionRequest {
            session: Some(gatehouse_proto::v1::SessionSelector {
                by: Some(gatehouse_proto::v1::session_selector::By::SessionToken(
                    token,
                )),
            }),
        })
        .await
        .expect("DeleteSession");
}

fn token_of(browser: &Browser) -> String {
    browser
        .session
        .split_once('=')
        .map(|(_, token)| token.to_owned())
        .expect("name=value")
}
