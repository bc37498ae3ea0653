//! Set-up shared by the fault-injection tests (`reliability/`): node settings, many users
//! signed in at once, and the checks made before, during and after a fault.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;

use crate::browser::fixtures::{COOKIE, MODULE, rejected, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{get, try_request};
use crate::harness::load::{Counts, Target};
use crate::harness::{ControlPlane, DataPlaneNode};

/// Node settings of the fault tests: an unreachable control plane is given up on within a
/// second; a cached session is fresh for 1 s, so a fault of a few seconds exercises the
/// stale-while-unreachable path and not just fresh cache hits; `grace` says how long a
/// session validated before the fault keeps working. `endpoints` are the control plane's
/// addresses (none: the one the node is started with).
pub fn node_settings(grace: Duration, endpoints: &[SocketAddr]) -> String {
    let endpoints = if endpoints.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = endpoints
            .iter()
            .map(|address| format!("\"http://{address}\""))
            .collect();
        format!("endpoints = [{}]\n", list.join(", "))
    };
    format!(
        "[control_plane]\nconnect_timeout = \"300ms\"\nrequest_timeout = \"1s\"\n{endpoints}\
         [cache]\nttl = \"1s\"\ntouch_interval = \"2s\"\ngrace = \"{}ms\"\n",
        grace.as_millis()
    )
}

/// A signed-in user: the cookie pair a browser sends, and the session behind it.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub cookie: String,
    pub session: pb::Session,
}

/// `count` users `{prefix}{i}` of directory CORP, each with a session of virtual proxy "app"
/// created over the Session API.
pub async fn sign_in(control_plane: &ControlPlane, prefix: &str, count: usize) -> Vec<SignedIn> {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let (cookie, session) = session_cookie(
            control_plane,
            "app",
            COOKIE,
            user("CORP", &format!("{prefix}{i}")),
        )
        .await;
        users.push(SignedIn { cookie, session });
    }
    users
}

/// Every user's request through `node` succeeds (so each is in its cache).
pub async fn warm(node: &DataPlaneNode, users: &[SignedIn]) {
    for user in users {
        let response = get(&node.url("/app/hub"), &with_cookie(&user.cookie)).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

/// Load targets: each user's GET through each node, labelled with the node's name.
pub fn targets(nodes: &[(&str, &DataPlaneNode)], users: &[SignedIn]) -> Vec<Target> {
    let mut targets = Vec::new();
    for user in users {
        for (label, node) in nodes {
            targets.push(Target::new(
                label,
                node.url("/app/hub"),
                Some(user.cookie.clone()),
            ));
        }
    }
    targets
}

/// Asserts that requests through every label all got 200: no 401, no login redirect, no
/// 503, no failed connection.
pub fn assert_no_errors(phase: &str, counts: &Counts) {
    for (label, tally) in &counts.0 {
        assert!(tally.requests() > 0, "{phase}: no request through {label}");
        assert_eq!(
            tally.errors(),
            0,
            "{phase}: requests through {label} failed:\n{counts}"
        );
    }
}

/// Asserts what a browser gets from `node` when it cannot be checked or logged in now:
/// 503 with `Retry-After`, and never a 401 or a redirect to log in.
pub async fn assert_unavailable(node: &DataPlaneNode, cookie: Option<&str>, what: &str) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let response = get(&node.url("/app/hub"), &headers).await;
    assert_eq!(response.status, 503, "{what}: {}", response.text());
    assert!(response.location().is_none(), "{what}: a redirect");
    assert_eq!(response.header("retry-after"), Some("1"), "{what}");
}

/// Whether a browser without a session is sent to log in by `node` (which needs the control
/// plane and its store).
pub async fn login_redirects(node: &DataPlaneNode) -> bool {
    let Ok(response) = try_request(
        http::Method::GET,
        &node.url("/app/hub"),
        &[],
        bytes::Bytes::new(),
    )
    .await
    else {
        return false;
    };
    response.status == 302
        && response
            .location()
            .is_some_and(|location| location.starts_with(MODULE))
}

/// Whether `cookie` is accepted by `node` right now.
pub async fn accepted(node: &DataPlaneNode, cookie: &str) -> bool {
    try_request(
        http::Method::GET,
        &node.url("/app/hub"),
        &with_cookie(cookie),
        bytes::Bytes::new(),
    )
    .await
    .is_ok_and(|response| response.status == 200)
}

/// Seconds with two decimals, for the figures the tests print.
pub fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// A counter of `node`'s metrics, e.g. `revocations_applied`: the sum of its series whose
/// labels contain `label` (`""`: all of them), e.g. `outcome="unavailable"`.
pub async fn node_counter(node: &DataPlaneNode, name: &str, label: &str) -> u64 {
    let text = get(&format!("http://{}/metrics", node.admin_address()), &[])
        .await
        .text();
    let series = format!("gatehouse_{name}_total");
    text.lines()
        .filter(|line| {
            line.strip_prefix(&series)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until every node rejects every one of `revoked` (issued at the instants given), and
/// returns, per revocation, how long after it was issued the last node rejected it.
pub async fn await_rejected(
    nodes: &[&DataPlaneNode],
    revoked: &[(SignedIn, Instant)],
    deadline: Duration,
) -> Vec<Duration> {
    let mut delays = vec![Duration::ZERO; revoked.len()];
    let mut pending: Vec<(usize, usize)> = (0..revoked.len())
        .flat_map(|r| (0..nodes.len()).map(move |n| (r, n)))
        .collect();
    let started = Instant::now();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < deadline,
            "{} (revocation, node) pairs still accepted after {deadline:?}: {pending:?}",
            pending.len()
        );
        let mut still = Vec::new();
        for (r, n) in pending {
            let (user, issued) = &revoked[r];
            if rejected(&nodes[n].url("/app/hub"), &user.cookie).await {
                delays[r] = delays[r].max(issued.elapsed());
            } else {
                still.push((r, n));
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delays
}
