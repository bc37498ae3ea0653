//! Gatehouse on Redis as production runs it: a Sentinel failover under load loses no user,
//! and on a Redis Cluster the revocation stream reaches every node and closes WebSockets.
//! (The whole gRPC API suite also runs on a Cluster: the `*_on_redis_cluster` tests of
//! `sessions`, `tickets` and `personal`, and the store conformance suite on both.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::browser::fixtures::{
    AppProxy, COOKIE, MODULE, PROPAGATION, delete_session, logout, open_socket, rejected,
    with_cookie,
};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{self, WebSocket, expect_close, get};
use crate::harness::profile;
use crate::harness::redis_topologies::{RedisCluster, SentinelGroup};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, eventually};

/// Short store timeouts, so an unreachable master is noticed in about a second.
const QUICK_STORE: &str = "connect_timeout = \"500ms\"\nresponse_timeout = \"1s\"\n";

/// Nodes that revalidate often (so the failover is felt) and give up quickly on an
/// unreachable control plane.
const NODE: &str = "[control_plane]\nconnect_timeout = \"300ms\"\nrequest_timeout = \"2s\"\n\
                    [cache]\nttl = \"500ms\"\ntouch_interval = \"1s\"\ngrace = \"60s\"\n";

/// Waits for the close frame of a revoked session's WebSocket; returns how long it took.
async fn closed(socket: &mut WebSocket, since: Instant, what: &str) -> Duration {
    let frame = expect_close(socket, PROPAGATION)
        .await
        .unwrap_or_else(|| panic!("{what}: no close frame"));
    assert_eq!(frame.code, CloseCode::Policy, "{what}: {frame:?}");
    since.elapsed()
}

/// Waits until both nodes send `cookie` to log in again; returns how long it took.
async fn rejected_everywhere(nodes: [&DataPlaneNode; 2], cookie: &str, since: Instant) -> Duration {
    for node in nodes {
        let url = node.url("/app/hub");
        eventually("a revoked cookie to be refused", PROPAGATION, || {
            let url = url.clone();
            async move { rejected(&url, cookie).await.then_some(()) }
        })
        .await;
    }
    since.elapsed()
}

#[tokio::test]
async fn on_a_redis_cluster_revocations_reach_every_node_and_close_websockets() {
    let cluster = RedisCluster::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "{}{QUICK_STORE}\n{}",
        cluster.store_toml(),
        AppProxy::new([upstream.node()]).toml()
    );
    let control_plane = ControlPlane::start(&config).await;
    let one = DataPlaneNode::start(&control_plane).await;
    let two = DataPlaneNode::start(&control_plane).await;

    // Enough users that their keys land on every master.
    let mut sessions = Vec::new();
    for index in 0..24 {
        sessions.push(
            session_cookie(
                &control_plane,
                "app",
                COOKIE,
                user("CORP", &format!("user-{index}")),
            )
            .await,
        );
    }
    let keys = cluster.keys_per_node().await;
    eprintln!("reliability cluster: keys per master {keys:?}");
    assert!(
        keys.iter().all(|&count| count > 0),
        "sessions spread over every master: {keys:?}"
    );
    for (cookie, _) in &sessions {
        for node in [&one, &two] {
            let response = get(&node.url("/app/hub"), &with_cookie(cookie)).await;
            assert_eq!(response.status, 200, "{}", response.text());
        }
    }

    // An administrator's delete, a log-out-everywhere and a user's own logout: each reaches
    // both nodes, and closes the session's WebSocket on the node that did not serve the call.
    let (deleted, deleted_session) = &sessions[0];
    let mut socket = open_socket(&two, deleted).await;
    let since = Instant::now();
    delete_session(&control_plane, &deleted_session.handle).await;
    let ws_delay = closed(&mut socket, since, "DeleteSession").await;
    let refused_delay = rejected_everywhere([&one, &two], deleted, since).await;
    eprintln!(
        "reliability cluster: DeleteSession closed the WebSocket in {ws_delay:?}, refused on both nodes within {refused_delay:?}"
    );

    let (everywhere, _) = &sessions[1];
    let mut socket = open_socket(&one, everywhere).await;
    let since = Instant::now();
    control_plane
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "CORP".to_owned(),
            user_id: "user-1".to_owned(),
            virtual_proxy: None,
        })
        .await
        .expect("DeleteUserSessions succeeds");
    let ws_delay = closed(&mut socket, since, "DeleteUserSessions").await;
    rejected_everywhere([&one, &two], everywhere, since).await;
    eprintln!("reliability cluster: DeleteUserSessions closed the WebSocket in {ws_delay:?}");

    let (own, _) = &sessions[2];
    let mut socket = open_socket(&two, own).await;
    let since = Instant::now();
    let response = logout(&one, own).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let ws_delay = closed(&mut socket, since, "Personal logout").await;
    rejected_everywhere([&one, &two], own, since).await;
    eprintln!(
        "reliability cluster: a logout on node one closed the WebSocket on node two in {ws_delay:?}"
    );

    // Everyone else is untouched.
    for (cookie, _) in &sessions[3..] {
        for node in [&one, &two] {
            assert_eq!(
                get(&node.url("/app/hub"), &with_cookie(cookie))
                    .await
                    .status,
                200
            );
        }
    }
}

/// What the steady load saw.
#[derive(Debug, Default)]
struct Tally {
    browsed: AtomicU64,
    /// A valid session refused (401) or sent to log in: what must never happen.
    logged_out: AtomicU64,
    /// Any other answer to a valid session than 200.
    other_failures: AtomicU64,
    logins: AtomicU64,
    logins_paused: AtomicU64,
    login_failures: AtomicU64,
    /// When the last login completed, and the longest time between two that completed:
    /// how long logins paused.
    last_login: std::sync::Mutex<Option<Instant>>,
    longest_login_gap_ms: AtomicU64,
}

impl Tally {
    fn login_completed(&self) {
        self.logins.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self
            .last_login
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(previous) = last.replace(now) {
            let gap = u64::try_from((now - previous).as_millis()).unwrap_or(u64::MAX);
            self.longest_login_gap_ms.fetch_max(gap, Ordering::Relaxed);
        }
    }
}

/// Browses with every cookie through both nodes, round after round, until `stop`.
async fn browse(urls: [String; 2], cookies: Vec<String>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        for (index, cookie) in cookies.iter().enumerate() {
            let url = &urls[(index + round) % 2];
            let response = get(url, &with_cookie(cookie)).await;
            tally.browsed.fetch_add(1, Ordering::Relaxed);
            let sent_to_login = response
                .location()
                .is_some_and(|location| location.starts_with(MODULE));
            if response.status == 401 || sent_to_login {
                tally.logged_out.fetch_add(1, Ordering::Relaxed);
                eprintln!("a valid session was refused: {}", response.status);
            } else if response.status != 200 {
                tally.other_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "a valid session got {}: {}",
                    response.status,
                    response.text()
                );
            }
        }
        round += 1;
    }
}

/// Logs new users in through `url`, one after the other, until `stop`. A login the outage
/// interrupts must be told to come back (503 or UNAVAILABLE), never refused.
async fn log_in_repeatedly(
    control_plane: pb::authentication_service_client::AuthenticationServiceClient<
        tonic::transport::Channel,
    >,
    url: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut count = 0;
    while !stop.load(Ordering::Relaxed) {
        count += 1;
        match log_in_once(control_plane.clone(), &url, &format!("new-{count}")).await {
            Ok(()) => tally.login_completed(),
            Err(LoginFailure::Paused) => {
                tally.logins_paused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(LoginFailure::Wrong(what)) => {
                tally.login_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("login failed: {what}");
            }
        }
    }
}

enum LoginFailure {
    /// The system said "come back later": what an outage may do.
    Paused,
    Wrong(String),
}

async fn log_in_once(
    mut authentication: pb::authentication_service_client::AuthenticationServiceClient<
        tonic::transport::Channel,
    >,
    url: &str,
    id: &str,
) -> Result<(), LoginFailure> {
    let first = get(url, &[]).await;
    let module_url = match (first.status.as_u16(), first.location()) {
        (302, Some(location)) if location.starts_with(MODULE) => location.to_owned(),
        (503, _) if first.header("retry-after").is_some() => return Err(LoginFailure::Paused),
        (status, _) => {
            return Err(LoginFailure::Wrong(format!(
                "first visit: {status} {}",
                first.text()
            )));
        }
    };
    let target_id = client::query_param(&module_url, "targetId")
        .ok_or_else(|| LoginFailure::Wrong("no targetId".to_owned()))?;
    let issued = match authentication
        .request_ticket(pb::RequestTicketRequest {
            virtual_proxy: "app".to_owned(),
            user: Some(user("CORP", id)),
            target_id: Some(target_id),
        })
        .await
    {
        Ok(issued) => issued.into_inner(),
        Err(status) if status.code() == tonic::Code::Unavailable => {
            return Err(LoginFailure::Paused);
        }
        // A target taken just before the failover may not have reached the replica.
        Err(status) if status.code() == tonic::Code::NotFound => {
            return Err(LoginFailure::Paused);
        }
        Err(status) => return Err(LoginFailure::Wrong(format!("RequestTicket: {status:?}"))),
    };
    let target = issued
        .target_uri
        .ok_or_else(|| LoginFailure::Wrong("no target".to_owned()))?;
    let separator = if target.contains('?') { '&' } else { '?' };
    let ticket_url = format!(
        "{target}{separator}qlikTicket={}",
        client::encode(&issued.ticket)
    );
    let landed = get(&ticket_url, &[]).await;
    let cookie = match landed.status.as_u16() {
        302 => landed
            .cookie_pair(COOKIE)
            .ok_or_else(|| LoginFailure::Wrong("no cookie after the ticket".to_owned()))?,
        503 if landed.header("retry-after").is_some() => return Err(LoginFailure::Paused),
        status => return Err(LoginFailure::Wrong(format!("ticket redemption: {status}"))),
    };
    let browsed = get(url, &with_cookie(&cookie)).await;
    match browsed.status.as_u16() {
        200 => Ok(()),
        status => Err(LoginFailure::Wrong(format!(
            "first request after login: {status}"
        ))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_rejects_no_valid_session() {
    let mut group = SentinelGroup::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "{}{QUICK_STORE}\n{}",
        group.store_toml(),
        AppProxy::new([upstream.node()]).toml()
    );
    let control_plane = ControlPlane::start(&config).await;
    let one = DataPlaneNode::start_with(&control_plane, NODE).await;
    let two = DataPlaneNode::start_with(&control_plane, NODE).await;

    let users = profile::pick(20, 200);
    let mut sessions = Vec::new();
    for index in 0..users {
        let (cookie, session) = session_cookie(
            &control_plane,
            "app",
            COOKIE,
            user("CORP", &format!("user-{index}")),
        )
        .await;
        for node in [&one, &two] {
            assert_eq!(
                get(&node.url("/app/hub"), &with_cookie(&cookie))
                    .await
                    .status,
                200
            );
        }
        sessions.push((cookie, session));
    }
    group.wait_until_failover_possible().await;
    // Replication is asynchronous: what the master acknowledged a moment before it died
    // can be lost. The sessions under test are older than that.
    group.wait_for_replication().await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = JoinSet::new();
    let urls = [one.url("/app/hub"), two.url("/app/hub")];
    let cookies: Vec<String> = sessions.iter().map(|(cookie, _)| cookie.clone()).collect();
    for half in cookies.chunks(cookies.len().div_ceil(2)) {
        load.spawn(browse(
            urls.clone(),
            half.to_vec(),
            tally.clone(),
            stop.clone(),
        ));
    }
    for url in &urls {
        load.spawn(log_in_repeatedly(
            control_plane.authentication(),
            url.clone(),
            tally.clone(),
            stop.clone(),
        ));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let failover = group.kill_master_and_wait_for_failover().await;
    let logins_at_failover = tally.logins.load(Ordering::Relaxed);
    eventually(
        "logins to resume after the failover",
        Duration::from_secs(20),
        || {
            let tally = tally.clone();
            async move { (tally.logins.load(Ordering::Relaxed) > logins_at_failover).then_some(()) }
        },
    )
    .await;
    // Steady load on the new master for a while.
    tokio::time::sleep(profile::pick(
        Duration::from_secs(2),
        Duration::from_secs(30),
    ))
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}

    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    eprintln!(
        "reliability sentinel: failover took {failover:?} from the kill; {} requests with valid sessions, {} refused, {} other failures; logins: {} in all, {} answered 503/UNAVAILABLE, {} wrong, longest pause between two logins {} ms",
        count(&tally.browsed),
        count(&tally.logged_out),
        count(&tally.other_failures),
        count(&tally.logins),
        count(&tally.logins_paused),
        count(&tally.login_failures),
        count(&tally.longest_login_gap_ms),
    );
    assert_eq!(count(&tally.logged_out), 0, "no valid session refused");
    assert_eq!(
        count(&tally.other_failures),
        0,
        "every valid request served"
    );
    assert_eq!(count(&tally.login_failures), 0, "logins pause, never fail");
    assert!(count(&tally.logins) > logins_at_failover, "logins resumed");

    // No session was lost: every one is still in Redis (on the new master) ...
    for (_, session) in &sessions {
        let found = control_plane
            .sessions()
            .get_session(pb::GetSessionRequest {
                session: Some(pb::SessionSelector {
                    by: Some(pb::session_selector::By::Handle(session.handle.clone())),
                }),
            })
            .await;
        assert!(
            found.is_ok(),
            "session {} survives: {found:?}",
            session.handle
        );
    }
    // ... and the revocation stream follows the new master.
    let (cookie, session) = &sessions[0];
    let mut socket = open_socket(&one, cookie).await;
    let since = Instant::now();
    delete_session(&control_plane, &session.handle).await;
    let ws_delay = closed(&mut socket, since, "DeleteSession after the failover").await;
    let refused = rejected_everywhere([&one, &two], cookie, since).await;
    eprintln!(
        "reliability sentinel: after the failover a revocation closed the WebSocket in {ws_delay:?} and was refused on both nodes within {refused:?}"
    );
}
