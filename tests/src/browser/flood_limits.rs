//! Floods of requests without a session, through real control-plane and node processes on
//! Redis: a cookie the control plane called unknown is answered from the node's negative
//! cache, and an address that sends too many unknown cookies or starts too many logins gets
//! 429 with `Retry-After`, while other addresses, and sessions the node holds, go on as
//! before. A stored login target is capped by the control plane as well as by the node, and
//! a session made with a token a node held as unknown is accepted at once.
//!
//! The node trusts the loopback as a proxy in front of it, so each request's client address
//! is the `X-Forwarded-For` it carries, as behind a load balancer.

use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::node_service_client::NodeServiceClient;
use tonic::transport::Channel;

use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::auth_module::{issue_ticket_with, user};
use crate::harness::client::{HttpResponse, get, post};
use crate::harness::control_plane::NodeCredential;
use crate::harness::fixtures::random_token;
use crate::harness::processes::{ControlPlaneProcess, DataPlaneProcess};
use crate::harness::{EchoUpstream, RedisServer, eventually};

const FLOODER: &str = "198.51.100.7";
const NEIGHBOUR: &str = "203.0.113.5";

struct System {
    redis: RedisServer,
    _upstream: EchoUpstream,
    control: ControlPlaneProcess,
    node: DataPlaneProcess,
}

impl System {
    /// Redis, an upstream, a control plane with `control_tables` before its virtual proxy,
    /// and one node with `settings`, trusting loopback's `X-Forwarded-For`.
    async fn start(control_tables: &str, settings: &[&str]) -> Self {
        let redis = RedisServer::start().await;
        let upstream = EchoUpstream::start("engine").await;
        let config = format!(
            "{control_tables}\n{}",
            AppProxy::new([upstream.node()]).on_redis(&redis)
        );
        let control = ControlPlaneProcess::start(&config).await;
        let mut all = vec!["trusted_proxies=[\"127.0.0.1\"]"];
        all.extend_from_slice(settings);
        let node = DataPlaneProcess::start(&control, "flood", &all).await;
        Self {
            redis,
            _upstream: upstream,
            control,
            node,
        }
    }

    /// Calls of `method` (`NodeService/ValidateSession`, say) the control plane has answered.
    async fn calls(&self, method: &str) -> f64 {
        let metrics = get(
            &format!("http://{}/metrics", self.control.admin_address()),
            &[],
        )
        .await;
        assert_eq!(metrics.status, 200);
        let label = format!("method=\"gatehouse.v1.{method}\"");
        metrics
            .text()
            .lines()
            .filter(|line| line.starts_with("gatehouse_control_plane_rpcs_total{"))
            .filter(|line| line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn node_metric(&self, series: &str) -> f64 {
        self.node.metric(series).await.unwrap_or(0.0)
    }

    /// A browser at `from` logging in with the ticket flow; its cookie (`name=value`).
    async fn log_in(&self, from: &str, id: &str) -> String {
        let url = self.node.url("/app/hub");
        let first = get(&url, &[("x-forwarded-for", from)]).await;
        assert_eq!(first.status, 302, "{}", first.text());
        let module = first.location().expect("to the module").to_owned();
        let redirect =
            issue_ticket_with(self.control.authentication(), &module, user("CORP", id)).await;
        let landed = get(&redirect.url, &[("x-forwarded-for", from)]).await;
        assert_eq!(landed.status, 302, "{}", landed.text());
        let cookie = landed.cookie_pair(COOKIE).expect("the session cookie");
        let page = get(&url, &[("x-forwarded-for", from), ("cookie", &cookie)]).await;
        assert_eq!(page.status, 200, "{}", page.text());
        cookie
    }
}

fn random_cookie() -> String {
    format!("{COOKIE}={}", random_token())
}

/// A 429 from a flood limit: `Retry-After` in whole seconds, at least one, and the reason.
fn assert_limited(response: &HttpResponse, reason: &str) {
    assert_eq!(response.status, 429, "{}", response.text());
    let retry_after: u64 = response
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert!(response.text().contains(reason), "{}", response.text());
}

#[tokio::test]
async fn a_flood_of_one_unknown_cookie_costs_the_control_plane_one_validation() {
    let system = System::start("", &["flood.negative_ttl=60s"]).await;
    let cookie = random_cookie();
    let before = system.calls("NodeService/ValidateSession").await;
    for _ in 0..200 {
        let response = post(
            &system.node.url("/app/hub"),
            &[("x-forwarded-for", FLOODER), ("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(response.status, 401, "{}", response.text());
    }
    let validations = system.calls("NodeService/ValidateSession").await - before;
    assert_eq!(validations, 1.0, "the repeats are answered by the node");
    assert!(
        system
            .node_metric("gatehouse_negative_cache_hits_total")
            .await
            >= 199.0
    );
}

#[tokio::test]
async fn a_flood_of_random_cookies_is_limited_for_its_address_only() {
    let system = System::start(
        "",
        &[
            "flood.unknown_tokens.address_per_second=2.0",
            "flood.unknown_tokens.address_burst=10",
        ],
    )
    .await;
    // A session this node made for the flooding address before the flood: a cache hit,
    // which no limit touches.
    let own = system.log_in(FLOODER, "alice").await;
    let before = system.calls("NodeService/ValidateSession").await;
    let started = Instant::now();
    let mut limited = 0;
    for _ in 0..100 {
        let response = post(
            &system.node.url("/app/hub"),
            &[("x-forwarded-for", FLOODER), ("cookie", &random_cookie())],
            "",
        )
        .await;
        match response.status.as_u16() {
            401 => {}
            _ => {
                assert_limited(&response, "too many unknown sessions from this address");
                limited += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let validations = system.calls("NodeService/ValidateSession").await - before;
    // The burst, what the rate refilled meanwhile, and one for rounding.
    let bound = 10.0 + 2.0 * elapsed + 1.0;
    assert!(
        validations <= bound,
        "{validations} validations in {elapsed:.1} s, bound {bound:.1}"
    );
    assert!(f64::from(limited) >= 100.0 - bound, "{limited} limited");
    let series = "gatehouse_limited_requests_total";
    assert!(system.node_metric(series).await >= f64::from(limited));

    let neighbour = post(
        &system.node.url("/app/hub"),
        &[("x-forwarded-for", NEIGHBOUR), ("cookie", &random_cookie())],
        "",
    )
    .await;
    assert_eq!(neighbour.status, 401, "another address is not limited");
    let page = get(
        &system.node.url("/app/hub"),
        &[("x-forwarded-for", FLOODER), ("cookie", &own)],
    )
    .await;
    assert_eq!(
        page.status, 200,
        "a cached session from the address still works"
    );
}

#[tokio::test]
async fn an_address_starting_too_many_logins_gets_429_while_another_logs_in() {
    let system = System::start(
        "",
        &[
            "flood.login_starts.address_per_second=0.5",
            "flood.login_starts.address_burst=5",
        ],
    )
    .await;
    let before = system.calls("NodeService/CreateTarget").await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = get(
            &system.node.url("/app/hub"),
            &[("x-forwarded-for", FLOODER)],
        )
        .await;
        if response.status == 429 {
            assert_limited(&response, "too many logins started from this address");
        }
        statuses.push(response.status.as_u16());
    }
    let redirected = statuses.iter().filter(|status| **status == 302).count();
    assert!(
        (5..=6).contains(&redirected),
        "the burst (and at most one refilled): {statuses:?}"
    );
    assert_eq!(
        redirected + statuses.iter().filter(|s| **s == 429).count(),
        20
    );
    let targets = system.calls("NodeService/CreateTarget").await - before;
    assert_eq!(targets, redirected as f64, "a refused login stores nothing");

    // Someone else logs in all the way meanwhile.
    system.log_in(NEIGHBOUR, "bob").await;
    assert!(system.node_metric("gatehouse_limited_requests_total").await >= 14.0);
}

#[tokio::test]
async fn a_login_target_over_the_cap_is_refused_by_node_and_control_plane() {
    let system = System::start("[tickets]\nmax_target_bytes = 512\n", &[]).await;
    let channel = Channel::from_shared(system.control.endpoint())
        .expect("endpoint")
        .connect_lazy();
    let mut node_api = NodeServiceClient::with_interceptor(channel, NodeCredential);
    let long = format!("http://{}/app/{}", system.node.address(), "a".repeat(600));
    let refused = node_api
        .create_target(pb::CreateTargetRequest {
            virtual_proxy: "app".to_owned(),
            target_uri: long,
        })
        .await
        .expect_err("over the cap");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("longer than 512 bytes"),
        "{}",
        refused.message()
    );

    let before = system.calls("NodeService/CreateTarget").await;
    // Over the control plane's cap: it refuses; over the ceiling every node knows: the node
    // refuses without asking.
    for (path_bytes, calls) in [(600, 1.0), (5000, 1.0)] {
        let path = format!("/app/{}", "b".repeat(path_bytes));
        let response = get(&system.node.url(&path), &[]).await;
        assert_eq!(response.status, 400, "{}", response.text());
        assert!(
            response
                .text()
                .contains("the requested URL cannot be a login target")
        );
        let asked = system.calls("NodeService/CreateTarget").await - before;
        assert_eq!(asked, calls, "{path_bytes} bytes");
    }
}

#[tokio::test]
async fn logins_that_could_not_start_in_an_outage_do_not_use_up_the_limit() {
    let mut system = System::start(
        "",
        &[
            "flood.login_starts.address_per_second=0.01",
            "flood.login_starts.address_burst=3",
        ],
    )
    .await;
    let url = system.node.url("/app/hub");
    let from = [("x-forwarded-for", FLOODER)];
    system.redis.kill().await;
    for _ in 0..10 {
        let polled = get(&url, &from).await;
        assert_eq!(polled.status, 503, "{}", polled.text());
    }
    system.redis.restart().await;
    // Polling until logins start again: each 503 meanwhile stores nothing and counts nothing.
    eventually("logins to start again", Duration::from_secs(20), || async {
        let polled = get(&url, &from).await;
        (polled.status == 302).then_some(())
    })
    .await;
    for _ in 0..2 {
        assert_eq!(get(&url, &from).await.status, 302, "the rest of the burst");
    }
    assert_limited(
        &get(&url, &from).await,
        "too many logins started from this address",
    );
}

#[tokio::test]
async fn a_chosen_token_sent_before_its_session_existed_is_accepted_once_it_does() {
    let system = System::start("", &["flood.negative_ttl=60s"]).await;
    let token = random_token();
    let cookie = format!("{COOKIE}={token}");
    let url = system.node.url("/app/hub");
    for _ in 0..2 {
        let early = post(&url, &[("cookie", &cookie)], "").await;
        assert_eq!(early.status, 401, "no session has the token yet");
    }
    assert!(
        system
            .node_metric("gatehouse_negative_cache_hits_total")
            .await
            >= 1.0
    );
    // A trusted client now makes the session with that very token (a QPS session handover
    // that reuses its id, say): the node is told, well before its entry would lapse.
    system
        .control
        .sessions()
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".to_owned(),
            user: Some(user("CORP", "carol")),
            session_token: Some(token),
        })
        .await
        .expect("CreateSession with a chosen token");
    eventually(
        "the node to accept the chosen token",
        Duration::from_secs(5),
        || async {
            let page = get(&url, &[("cookie", &cookie)]).await;
            (page.status == 200).then_some(())
        },
    )
    .await;
}
