//! Envoy `ext_authz` v3 over gRPC, asked with a client built from Envoy's own API types as
//! Envoy asks: allowed with the identity to set and client copies to remove, a 302 to log
//! in, a 403 by rule, a redeemed ticket sent back without it, a revoked session refused, a
//! 503 in a Redis outage, and callers from untrusted networks refused.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::{Channel, Endpoint};

use super::Authorizers;
use crate::browser::fixtures::{COOKIE, MODULE, PROPAGATION, delete_session, qlik_user};
use crate::harness::auth_module::{issue_ticket, session_cookie, user};
use crate::harness::eventually;
use crate::harness::fixtures::random_token;

/// A check as Envoy sends it for `method path` on the node's loopback origin.
pub(super) fn check(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut sent: HashMap<String, String> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    sent.insert(":authority".into(), "127.0.0.1:8080".into());
    sent.insert(":path".into(), path.into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "192.0.2.9".into(),
                        port_specifier: Some(PortSpecifier::PortValue(50_000)),
                        ..SocketAddress::default()
                    })),
                }),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "127.0.0.1:8080".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: sent,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

async fn client(address: SocketAddr, local: IpAddr) -> AuthorizationClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("an endpoint")
        .local_address(Some(local))
        .connect()
        .await
        .expect("connect to ext_authz");
    AuthorizationClient::new(channel)
}

pub(super) async fn ask(authorizers: &Authorizers, request: CheckRequest) -> CheckResponse {
    client(
        authorizers.one.ext_authz_address(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await
    .check(request)
    .await
    .expect("a trusted caller gets an answer")
    .into_inner()
}

pub(super) fn ok(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        response.status.as_ref().map(|status| status.code),
        Some(0),
        "{response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected OK, got {other:?}"),
    }
}

fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
    assert_ne!(
        response.status.as_ref().map(|status| status.code),
        Some(0),
        "{response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn status(denied: &DeniedHttpResponse) -> i32 {
    denied.status.as_ref().map_or(0, |status| status.code)
}

/// The value of `name` among Envoy header options.
pub(super) fn value<'a>(
    headers: &'a [envoy_types::ext_authz::v3::pb::HeaderValueOption],
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .find(|header| header.key.eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str())
}

#[tokio::test]
async fn an_allowed_check_sets_the_identity_and_removes_client_copies() {
    let authorizers = Authorizers::start().await;
    let cookie = authorizers.alice_session().await;
    let answer = ask(
        &authorizers,
        check(
            "GET",
            "/app/hub",
            &[
                ("cookie", &cookie),
                ("x-qlik-user", "UserDirectory=CORP; UserId=root"),
                ("x-gatehouse-user-id", "root"),
            ],
        ),
    )
    .await;
    let ok = ok(&answer);
    assert_eq!(
        value(&ok.headers, "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    let overwrite = envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd;
    assert!(
        ok.headers
            .iter()
            .all(|option| option.append_action == i32::from(overwrite)),
        "the identity replaces client copies: {ok:?}"
    );
    for name in [
        "x-gatehouse-user-id",
        "x-gatehouse-user-directory",
        "x-gatehouse-attributes",
    ] {
        assert!(
            ok.headers_to_remove.iter().any(|removed| removed == name),
            "{name}: {ok:?}"
        );
    }
    // A known cookie starts no session; the session gets its seal (it had none).
    let set_cookies: Vec<String> = ok
        .response_headers_to_add
        .iter()
        .filter_map(|option| option.header.as_ref())
        .map(|header| {
            assert_eq!(header.key, "set-cookie", "{ok:?}");
            header.value.clone()
        })
        .collect();
    assert!(
        set_cookies.len() == 1 && set_cookies[0].starts_with(&format!("{COOKIE}-seal=")),
        "no new session for a known cookie, only its seal: {set_cookies:?}"
    );
    let metrics = crate::harness::client::get(
        &format!("http://{}/metrics", authorizers.one.admin_address()),
        &[],
    )
    .await
    .text();
    let counted = "gatehouse_forward_auth_checks_total{front_end=\"ext_authz\",status=\"200\"} 1";
    assert!(metrics.contains(counted), "{counted} in\n{metrics}");
}

#[tokio::test]
async fn a_public_path_is_allowed_with_every_client_copy_of_the_identity_removed() {
    let authorizers = Authorizers::start_with(&super::endpoint::PUBLIC_PATHS).await;
    let answer = ask(
        &authorizers,
        check(
            "GET",
            "/app/static/a.css",
            &[
                ("x-qlik-user", "UserDirectory=CORP; UserId=root"),
                ("x-gatehouse-user-id", "root"),
            ],
        ),
    )
    .await;
    let ok = ok(&answer);
    assert!(ok.headers.is_empty(), "nothing set: {ok:?}");
    assert!(ok.response_headers_to_add.is_empty(), "no session: {ok:?}");
    for name in gatehouse_proto::identity_headers::ALL {
        assert!(
            ok.headers_to_remove.iter().any(|removed| removed == name),
            "{name}: {ok:?}"
        );
    }
    let private = ask(&authorizers, check("GET", "/app/static/private/x", &[])).await;
    assert_eq!(status(denied(&private)), 403);
}

#[tokio::test]
async fn checks_without_a_session_or_against_a_rule_are_denied_with_the_proxys_answer() {
    let authorizers = Authorizers::start().await;
    let login = ask(&authorizers, check("GET", "/app/hub?page=1", &[])).await;
    let login = denied(&login);
    assert_eq!(status(login), 302);
    let module = value(&login.headers, "location")
        .expect("where to log in")
        .to_owned();
    assert!(module.starts_with(MODULE), "{module}");

    // The module's ticket on the page: redeemed, and sent back without it with the cookie.
    let redirect = issue_ticket(&authorizers.control_plane, &module, user("CORP", "alice")).await;
    let path = redirect.url.trim_start_matches("http://127.0.0.1:8080");
    let landed = ask(&authorizers, check("GET", path, &[])).await;
    let landed = denied(&landed);
    assert_eq!(status(landed), 302);
    assert_eq!(
        value(&landed.headers, "location"),
        Some("http://127.0.0.1:8080/app/hub?page=1")
    );
    let set_cookie = value(&landed.headers, "set-cookie").expect("the session cookie");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    assert!(cookie.starts_with(COOKIE), "{cookie}");

    let page = ask(
        &authorizers,
        check("GET", "/app/hub", &[("cookie", &cookie)]),
    )
    .await;
    ok(&page);
    let ruled = ask(
        &authorizers,
        check("GET", "/app/admin/x", &[("cookie", &cookie)]),
    )
    .await;
    let ruled = denied(&ruled);
    assert_eq!(status(ruled), 403);
    assert!(!ruled.body.trim().is_empty(), "the proxy's short reason");
    let posted = ask(&authorizers, check("POST", "/app/api", &[])).await;
    assert_eq!(status(denied(&posted)), 401);
    let nowhere = ask(
        &authorizers,
        check("GET", "/elsewhere", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(status(denied(&nowhere)), 404);

    // Envoy forwards the path and the headers as the client sent them: the rule on
    // /app/admin/ holds for a path that only reads as /app/hub once cleaned, and for an
    // identity header that a CGI-style upstream reads with its underscores as dashes.
    let dotted = ask(
        &authorizers,
        check("GET", "/app/admin//../hub", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(status(denied(&dotted)), 400);
    let underscored = ask(
        &authorizers,
        check(
            "GET",
            "/app/hub",
            &[
                ("cookie", &cookie),
                ("x_qlik_user", "UserDirectory=CORP; UserId=admin"),
            ],
        ),
    )
    .await;
    assert_eq!(status(denied(&underscored)), 400);
}

#[tokio::test]
async fn a_revoked_session_is_refused_and_an_outage_is_a_503() {
    let mut authorizers = Authorizers::start().await;
    let (cookie, session) = session_cookie(
        &authorizers.control_plane,
        "app",
        COOKIE,
        user("CORP", "alice"),
    )
    .await;
    ok(&ask(
        &authorizers,
        check("GET", "/app/hub", &[("cookie", &cookie)]),
    )
    .await);
    delete_session(&authorizers.control_plane, &session.handle).await;
    eventually("the revoked session to be refused", PROPAGATION, || async {
        let answer = ask(&authorizers, check("GET", "/app/hub", &[("cookie", &cookie)])).await;
        matches!(&answer.http_response, Some(HttpResponse::DeniedResponse(denied)) if status(denied) == 302)
            .then_some(())
    })
    .await;

    authorizers.redis.kill().await;
    let unknown = format!("{COOKIE}={}", random_token());
    let answer = eventually("an outage to be a 503", Duration::from_secs(20), || async {
        let answer = ask(
            &authorizers,
            check("GET", "/app/hub", &[("cookie", &unknown)]),
        )
        .await;
        let denial = denied(&answer).clone();
        assert_ne!(
            status(&denial),
            401,
            "a missing store is not a missing session"
        );
        (status(&denial) == 503).then_some(denial)
    })
    .await;
    assert_eq!(value(&answer.headers, "retry-after"), Some("1"));
}

#[tokio::test]
async fn callers_from_untrusted_networks_are_refused() {
    let authorizers = Authorizers::start().await;
    let cookie = authorizers.alice_session().await;
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let refused = client(authorizers.one.ext_authz_address(), stranger)
        .await
        .check(check("GET", "/app/hub", &[("cookie", &cookie)]))
        .await
        .expect_err("an untrusted caller gets no decision");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn an_oversized_check_is_refused_before_it_is_decoded() {
    let authorizers = Authorizers::start().await;
    // A check far larger than any ingress sends (Envoy caps a request's headers at 60 KiB):
    // tonic's 4 MiB default would let every stream of every connection hold that much.
    let padding = "p".repeat(200 * 1024);
    let oversized = client(
        authorizers.one.ext_authz_address(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await
    .check(check("GET", "/app/hub", &[("x-padding", &padding)]))
    .await;
    let status = oversized.expect_err("an oversized check gets no answer");
    assert_eq!(
        status.code(),
        tonic::Code::OutOfRange,
        "refused as too large: {status}"
    );
}

#[tokio::test]
async fn connections_past_the_nodes_limit_are_closed_and_the_others_go_on() {
    let authorizers = Authorizers::start().await;
    let cookie = authorizers.alice_session().await;
    let node = crate::harness::DataPlaneNode::start_with(
        &authorizers.control_plane,
        &format!("{}[limits]\nmax_connections = 2\n", super::FORWARD_AUTH),
    )
    .await;
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let page = || check("GET", "/app/hub", &[("cookie", &cookie)]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = client(node.ext_authz_address(), local).await;
        ok(&connection
            .check(page())
            .await
            .expect("within the limit")
            .into_inner());
        held.push(connection);
    }
    // A third connection is closed as it is accepted: its check gets no answer.
    let third = async {
        let channel = Endpoint::from_shared(format!("http://{}", node.ext_authz_address()))
            .expect("an endpoint")
            .connect()
            .await?;
        AuthorizationClient::new(channel)
            .check(page())
            .await
            .map_err(Into::into)
    };
    let third: Result<_, Box<dyn std::error::Error>> = third.await;
    assert!(third.is_err(), "a connection past the limit is not served");
    // The held ones go on, and one closed makes room again.
    ok(&held[0]
        .check(page())
        .await
        .expect("still served")
        .into_inner());
    held.pop();
    eventually(
        "room for a new connection",
        Duration::from_secs(5),
        || async {
            let mut connection =
                Endpoint::from_shared(format!("http://{}", node.ext_authz_address()))
                    .ok()?
                    .connect()
                    .await
                    .ok()
                    .map(AuthorizationClient::new)?;
            connection.check(page()).await.ok().map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn a_check_past_the_unknown_token_limit_is_denied_with_429_and_retry_after() {
    let authorizers = Authorizers::start().await;
    let node = crate::harness::DataPlaneNode::start_with(
        &authorizers.control_plane,
        &format!(
            "{}[flood.unknown_tokens]\naddress_per_second = 0.1\naddress_burst = 2\n",
            super::FORWARD_AUTH
        ),
    )
    .await;
    let mut connection = client(node.ext_authz_address(), IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let cookie = format!("{COOKIE}={}", random_token());
        let answer = connection
            .check(check("POST", "/app/api", &[("cookie", &cookie)]))
            .await
            .expect("an answer")
            .into_inner();
        answers.push(answer);
    }
    assert_eq!(status(denied(&answers[0])), 401);
    assert_eq!(status(denied(&answers[1])), 401);
    let limited = denied(&answers[2]);
    assert_eq!(status(limited), 429);
    let retry_after: u64 = value(&limited.headers, "retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert!(
        limited
            .body
            .contains("too many unknown sessions from this address"),
        "{}",
        limited.body
    );
}
