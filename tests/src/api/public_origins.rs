//! Public origins: every absolute URL a node builds (the login target, `proxyRestUri`,
//! `loginUri`, `logoutUri`) comes from a configured origin that the request's `Host` named,
//! never from the `Host` itself. A forged `Host` would otherwise turn a login into a ticket
//! delivered to the attacker's host. Without configured origins a node serves only the
//! loopback names.

use gatehouse_proto::v1 as pb;
use tonic::Code;

use crate::browser::fixtures::{AppProxy, COOKIE, MODULE, PORTAL, seen_header, with_cookie};
use crate::harness::auth_module::{issue_ticket, user};
use crate::harness::client::{delete, encode, get, query_param};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

/// The name browsers use for the site in the tests with configured origins.
const SITE: &str = "sense.example.test";

async fn start(proxy: AppProxy) -> (ControlPlane, DataPlaneNode) {
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    (control_plane, node)
}

/// A node's `CreateTarget` for `uri` in virtual proxy "app".
async fn create_target(
    control_plane: &ControlPlane,
    uri: &str,
) -> Result<tonic::Response<pb::CreateTargetResponse>, tonic::Status> {
    control_plane
        .node()
        .create_target(pb::CreateTargetRequest {
            virtual_proxy: "app".into(),
            target_uri: uri.to_owned(),
        })
        .await
}

/// `Host` values an attacker may send to a node listening on `port`.
fn forged_hosts(port: u16) -> Vec<String> {
    vec![
        "evil.example".to_owned(),
        // Allow-listed, so the control plane would record a target there: the node itself
        // must refuse to be addressed as it.
        PORTAL.to_owned(),
        format!("{PORTAL}:{port}"),
        format!("evil.example:{port}"),
        format!("127.0.0.1:{port}@evil.example"),
        format!("localhost:{port}@evil.example:{port}"),
        format!("127.0.0.1:{port}.evil.example"),
        format!("localhost.evil.example:{port}"),
        format!("evil.example/127.0.0.1:{port}"),
        format!("127.0.0.1:{port}/@evil.example"),
        format!("127.0.0.1:{port}:{port}"),
        format!("127.0.0.1:0{port}0"),
        "127.0.0.1:".to_owned(),
        String::new(),
    ]
}

#[tokio::test]
async fn a_forged_host_never_yields_a_login_target_rest_uri_or_login_uri() {
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = start(AppProxy::new([upstream.node()])).await;
    let port = node.address().port();
    for host in forged_hosts(port) {
        let target = encode(&format!("http://{host}/app/x"));
        for path in [
            "/app/hub".to_owned(),
            format!("/app/hub?reloadUri={target}"),
            format!("/app/qps/user?targetUri={target}"),
            "/app/qps/csrftoken".to_owned(),
        ] {
            let response = get(&node.url(&path), &[("host", &host)]).await;
            assert_eq!(
                response.status,
                400,
                "GET {path} with Host {host:?}: {}",
                response.text()
            );
            assert!(response.location().is_none(), "{host:?} {path}");
            assert!(
                !response.text().contains("evil") && !response.text().contains(MODULE),
                "{host:?} {path}: {}",
                response.text()
            );
        }
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing reaches the upstream"
    );

    // Loopback names are the development origins.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let response = get(&node.url("/app/hub"), &[("host", &host)]).await;
        assert_eq!(response.status, 302, "{host}: {}", response.text());
        let module_url = response.location().expect("Location");
        assert_eq!(
            query_param(module_url, "proxyRestUri").as_deref(),
            Some(format!("http://{host}/qps/app/").as_str())
        );
        let redirect = issue_ticket(&control_plane, module_url, user("CORP", "alice")).await;
        assert_eq!(redirect.target_uri, format!("http://{host}/app/hub"));
    }
}

#[tokio::test]
async fn the_ticket_flow_works_through_a_configured_origin_behind_a_tls_terminating_load_balancer()
{
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).key(&format!(
        "public_origins = [\"http://{SITE}\", \"https://{SITE}\", \"https://{SITE}:8443\"]"
    ));
    let (control_plane, node) = start(proxy).await;
    // The load balancer ends TLS and forwards the browser's request, Host and all, over
    // plain HTTP: this is what the node hears.
    let through_balancer = |host: &'static str| [("host", host)];

    let first = get(&node.url("/app/hub?sheet=1"), &through_balancer(SITE)).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module_url = first.location().expect("Location").to_owned();
    assert!(module_url.starts_with(MODULE), "{module_url}");
    assert_eq!(
        query_param(&module_url, "proxyRestUri").as_deref(),
        Some(format!("https://{SITE}/qps/app/").as_str())
    );
    let redirect = issue_ticket(&control_plane, &module_url, user("CORP", "alice")).await;
    assert_eq!(
        redirect.target_uri,
        format!("https://{SITE}/app/hub?sheet=1"),
        "the scheme is the origin's, not the node's listener's"
    );

    // The browser comes back through the balancer with the ticket.
    let path = redirect
        .url
        .strip_prefix(&format!("https://{SITE}"))
        .expect("the target is on the site");
    let landed = get(&node.url(path), &through_balancer(SITE)).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(landed.location(), Some("/app/hub?sheet=1"));
    let set_cookie = landed
        .set_cookie(COOKIE)
        .expect("the session cookie is set");
    assert!(
        set_cookie.split(';').any(|part| part.trim() == "Secure"),
        "the browser speaks https: the cookie is Secure: {set_cookie}"
    );
    let cookie = landed.cookie_pair(COOKIE).expect("cookie");
    let mut headers = with_cookie(&cookie).to_vec();
    headers.push(("host", SITE));
    let page = get(&node.url("/app/hub?sheet=1"), &headers).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json();
    assert_eq!(seen_header(&seen, "host"), Some(SITE));
    assert_eq!(
        seen_header(&seen, "x-forwarded-proto"),
        Some("https"),
        "the upstream hears the scheme the browser used"
    );
    assert_eq!(seen_header(&seen, "x-forwarded-host"), Some(SITE));

    // Who am I: the logout URI is on the origin.
    let me = get(&node.url("/app/qps/user"), &headers).await;
    assert_eq!(
        me.json()["logoutUri"],
        format!("https://{SITE}/app/qps/user")
    );

    // The plaintext origin, where a network attacker can write pages, does not vouch for a
    // request on the https one: a cross-origin logout from it is refused.
    let mut from_plaintext = headers.clone();
    from_plaintext.push(("origin", "http://sense.example.test"));
    let refused = delete(&node.url("/app/qps/user"), &from_plaintext).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let mut from_site = headers.clone();
    from_site.push(("origin", "https://sense.example.test"));
    let ended = delete(&node.url("/app/qps/user"), &from_site).await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(ended.json()["session"], "ended");

    // A second origin: its own port, kept in the URLs built for it.
    let other = get(
        &node.url("/app/hub"),
        &through_balancer("sense.example.test:8443"),
    )
    .await;
    assert_eq!(other.status, 302, "{}", other.text());
    assert_eq!(
        query_param(other.location().expect("Location"), "proxyRestUri").as_deref(),
        Some(format!("https://{SITE}:8443/qps/app/").as_str())
    );

    // With origins configured, neither a forged Host nor the node's own address is served.
    let port = node.address().port();
    let mut refused = forged_hosts(port);
    refused.extend([
        format!("127.0.0.1:{port}"),
        format!("{SITE}:8080"),
        format!("{SITE}.evil.example"),
        format!("evil.{SITE}"),
        format!("{SITE}@evil.example"),
    ]);
    for host in refused {
        let response = get(&node.url("/app/hub"), &[("host", &host)]).await;
        assert_eq!(response.status, 400, "{host:?}: {}", response.text());
        assert!(response.location().is_none());
    }
    // A sign-in link for a target outside the origins and the allow list gets no loginUri.
    let outside = get(
        &node.url(&format!(
            "/app/qps/user?targetUri={}",
            encode("http://127.0.0.1/app/x")
        )),
        &through_balancer(SITE),
    )
    .await;
    assert_eq!(outside.status, 200);
    assert!(
        outside.json().get("loginUri").is_none(),
        "{}",
        outside.text()
    );
    let inside = get(
        &node.url(&format!(
            "/app/qps/user?targetUri={}",
            encode(&format!("https://{SITE}/app/x"))
        )),
        &through_balancer(SITE),
    )
    .await;
    assert!(
        inside.json()["loginUri"]
            .as_str()
            .is_some_and(|uri| uri.starts_with(MODULE)),
        "{}",
        inside.text()
    );
}

#[tokio::test]
async fn an_unknown_host_is_served_as_the_first_origin_when_the_operator_says_so() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()])
        .key(&format!("public_origins = [\"https://{SITE}\"]"))
        .key("unknown_host = \"first-origin\"");
    let (control_plane, node) = start(proxy).await;
    let first = get(&node.url("/app/hub"), &[("host", "evil.example")]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module_url = first.location().expect("Location");
    assert_eq!(
        query_param(module_url, "proxyRestUri").as_deref(),
        Some(format!("https://{SITE}/qps/app/").as_str())
    );
    let redirect = issue_ticket(&control_plane, module_url, user("CORP", "alice")).await;
    assert_eq!(redirect.target_uri, format!("https://{SITE}/app/hub"));
    // A malformed authority is never served, whatever the operator said.
    for host in ["real@evil.example", "evil.example/x", "evil.example:0"] {
        let response = get(&node.url("/app/hub"), &[("host", host)]).await;
        assert_eq!(response.status, 400, "{host:?}: {}", response.text());
    }
}

#[tokio::test]
async fn create_target_refuses_urls_outside_the_origins_and_the_allow_list() {
    let proxy = AppProxy::new(["127.0.0.1:9"]).key(&format!(
        "public_origins = [\"https://{SITE}\", \"http://{SITE}:8080\"]"
    ));
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let foreign = [
        "https://evil.example/app/hub".to_owned(),
        format!("http://{SITE}/app/hub"),
        format!("https://{SITE}:8443/app/hub"),
        format!("https://{SITE}.evil.example/app/hub"),
        format!("https://{SITE}@evil.example/app/hub"),
        "http://127.0.0.1:8080/app/hub".to_owned(),
        "http://portal.test:8080/".to_owned(),
    ];
    let own = [
        format!("https://{SITE}/app/hub?x=1"),
        format!("HTTPS://{}:443/app/", SITE.to_ascii_uppercase()),
        format!("http://{SITE}:8080/app/hub"),
        // The host allow list, on the scheme's default port.
        "http://portal.test/x".to_owned(),
        "https://portal.test/x".to_owned(),
    ];
    assert_targets(&control_plane, &foreign, &own).await;
}

#[tokio::test]
async fn without_origins_create_target_accepts_only_loopback_and_allowed_hosts() {
    let control_plane = ControlPlane::start(&AppProxy::new(["127.0.0.1:9"]).toml()).await;
    let foreign = ["https://evil.example/app/hub", "http://10.0.0.1/app/"].map(String::from);
    let own = [
        "http://127.0.0.1:8080/app/hub",
        "http://localhost:3000/app/",
        "http://[::1]:8080/app/",
        "http://portal.test/x",
    ]
    .map(String::from);
    assert_targets(&control_plane, &foreign, &own).await;
}

/// `CreateTarget` in "app" refuses every `foreign` URL as INVALID_ARGUMENT and records every
/// `own` one.
async fn assert_targets(control_plane: &ControlPlane, foreign: &[String], own: &[String]) {
    for uri in foreign {
        let status = create_target(control_plane, uri).await.expect_err(uri);
        assert_eq!(status.code(), Code::InvalidArgument, "{uri}: {status:?}");
    }
    for uri in own {
        create_target(control_plane, uri)
            .await
            .unwrap_or_else(|status| panic!("{uri}: {status:?}"));
    }
}
