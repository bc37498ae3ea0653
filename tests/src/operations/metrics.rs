//! What operators see: the node's Prometheus metrics name the documented series, and their
//! values move with traffic.

use std::time::Duration;

use gatehouse_proto::v1 as pb;

use crate::browser::fixtures::{AppProxy, COOKIE, open_socket};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::get;
use crate::harness::upstream::EchoUpstream;
use crate::harness::{ControlPlane, DataPlaneNode, eventually};

async fn scrape(node: &DataPlaneNode) -> String {
    let response = get(&format!("http://{}/metrics", node.admin_address()), &[]).await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/openmetrics-text")),
        "OpenMetrics content type"
    );
    response.text()
}

/// The value of the first sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn node_metrics_move_with_traffic() {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start(&control).await;
    // Series without labels are there from the start; labelled ones from their first event.
    let before = scrape(&node).await;
    for series in [
        "# TYPE gatehouse_validation_seconds histogram",
        "# TYPE gatehouse_revocations_applied counter",
        "# TYPE gatehouse_revocation_delay_seconds histogram",
        "# TYPE gatehouse_cached_sessions gauge",
        "# TYPE gatehouse_open_websockets gauge",
    ] {
        assert!(before.contains(series), "{series} missing from:\n{before}");
    }

    let (cookie, session) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    for _ in 0..3 {
        assert_eq!(
            get(&node.url("/app/hub"), &[("cookie", &cookie)])
                .await
                .status,
            200
        );
    }
    let _socket = open_socket(&node, &cookie).await;
    let after = scrape(&node).await;
    for series in [
        "# TYPE gatehouse_requests counter",
        "# TYPE gatehouse_request_seconds histogram",
        "# TYPE gatehouse_cache_lookups counter",
        "# TYPE gatehouse_validations counter",
        "# TYPE gatehouse_upstream_seconds histogram",
        "# TYPE gatehouse_active_sessions gauge",
    ] {
        assert!(after.contains(series), "{series} missing from:\n{after}");
    }
    let ok = "gatehouse_requests_total{virtual_proxy=\"app\",status=\"200\"}";
    assert!(sample(&after, ok) >= 3.0, "{after}");
    assert!(sample(&after, "gatehouse_cache_lookups_total{result=\"miss\"}") >= 1.0);
    assert!(sample(&after, "gatehouse_cache_lookups_total{result=\"hit\"}") >= 2.0);
    assert_eq!(sample(&after, "gatehouse_cached_sessions"), 1.0);
    assert_eq!(sample(&after, "gatehouse_open_websockets"), 1.0);
    assert_eq!(
        sample(
            &after,
            "gatehouse_upstream_nodes{virtual_proxy=\"app\",state=\"healthy\"}"
        ),
        1.0,
        "{after}"
    );

    control
        .sessions()
        .delete_session(pb::DeleteSessionRequest {
            session: Some(pb::SessionSelector {
                by: Some(pb::session_selector::By::Handle(session.handle)),
            }),
        })
        .await
        .unwrap();
    eventually(
        "the revocation to be counted",
        Duration::from_secs(5),
        || async {
            let text = scrape(&node).await;
            (sample(&text, "gatehouse_revocations_applied_total") >= 1.0
                && sample(&text, "gatehouse_open_websockets") == 0.0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn control_plane_metrics_count_calls_and_store_exchanges() {
    let redis = crate::harness::RedisServer::start().await;
    let control = ControlPlane::start(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    ))
    .await;
    let mut sessions = control.sessions();
    sessions
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: String::new(),
            user: Some(user("CORP", "alice")),
            session_token: None,
        })
        .await
        .unwrap();
    let missing = sessions
        .get_session(pb::GetSessionRequest {
            session: Some(pb::SessionSelector {
                by: Some(pb::session_selector::By::Handle("no-such-handle".into())),
            }),
        })
        .await;
    assert!(missing.is_err());
    let response = get(&format!("http://{}/metrics", control.admin_address()), &[]).await;
    assert_eq!(response.status, 200);
    let text = response.text();
    let created = "gatehouse_control_plane_rpcs_total{method=\"gatehouse.v1.SessionService/CreateSession\",code=\"0\"}";
    assert_eq!(sample(&text, created), 1.0, "{text}");
    let not_found = "gatehouse_control_plane_rpcs_total{method=\"gatehouse.v1.SessionService/GetSession\",code=\"5\"}";
    assert_eq!(sample(&text, not_found), 1.0, "{text}");
    assert!(
        sample(&text, "gatehouse_control_plane_store_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(text.contains("# TYPE gatehouse_control_plane_rpc_seconds histogram"));
}
