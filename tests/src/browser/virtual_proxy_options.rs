//! Per-virtual-proxy options a user switches on: anonymous access that yields to
//! `forceAuthentication=yes`, additional response headers, and the upstream response timeout.

use std::time::Duration;

use crate::browser::fixtures::{AppProxy, MODULE, seen_header};
use crate::harness::client::get;
use crate::harness::upstream::EchoUpstream;
use crate::harness::{ControlPlane, DataPlaneNode};

async fn system(
    configure: impl FnOnce(AppProxy) -> AppProxy,
) -> (EchoUpstream, ControlPlane, DataPlaneNode) {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlane::start(&configure(AppProxy::new([upstream.node()])).toml()).await;
    let node = DataPlaneNode::start(&control).await;
    (upstream, control, node)
}

#[tokio::test]
async fn anonymous_access_yields_to_force_authentication() {
    let (upstream, _control, node) = system(|proxy| proxy.key("anonymous = \"allow\"")).await;
    let anonymous = get(&node.url("/app/hub"), &[]).await;
    assert_eq!(anonymous.status, 200);
    assert!(
        anonymous.cookie_pair("X-Qlik-Session-app").is_some(),
        "an anonymous session is set"
    );
    let seen = upstream.requests().pop().expect("the upstream was asked");
    let user = seen_header(&seen, "x-qlik-user").expect("identity forwarded");
    assert!(
        user.starts_with("UserDirectory=NONE; UserId=anonymous"),
        "{user}"
    );

    let forced = get(&node.url("/app/hub?forceAuthentication=yes"), &[]).await;
    assert_eq!(forced.status, 302);
    assert!(forced.location().unwrap_or_default().starts_with(MODULE));
}

#[tokio::test]
async fn additional_response_headers_are_added() {
    let (_upstream, _control, node) = system(|proxy| {
        proxy
            .key("anonymous = \"always\"")
            .key("additional_response_headers = { \"Access-Control-Allow-Origin\" = \"https://portal.test\" }")
    })
    .await;
    let response = get(&node.url("/app/hub"), &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://portal.test")
    );
    let refused = get(&node.url("/nowhere"), &[]).await;
    assert_eq!(
        refused.status, 404,
        "no virtual proxy, no extra headers to add"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let (upstream, _control, node) = system(|proxy| {
        proxy
            .key("anonymous = \"always\"")
            .upstream("response_timeout = \"200ms\"")
    })
    .await;
    upstream.set_delay(Duration::from_secs(2));
    let response = get(&node.url("/app/hub"), &[]).await;
    assert_eq!(response.status, 504);
    assert!(
        !response.text().contains("127.0.0.1"),
        "no internal detail: {}",
        response.text()
    );
}
