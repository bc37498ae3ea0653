//! The forward-auth endpoint asked directly, as an ingress would: what it answers for a
//! session, and the clear 4xx (never a 200) for checks that describe no request it can
//! decide on, or that come from a network it does not trust.

use std::net::{IpAddr, Ipv4Addr};

use http::Method;

use super::Authorizers;
use crate::browser::fixtures::{COOKIE, qlik_user};
use crate::harness::client::{get, request_from};

/// What a check is, its headers, and the status it gets.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

/// A check of `method uri` with `cookie`, as nginx sends it.
fn described<'a>(method: &'a str, uri: &'a str, cookie: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-original-method", method),
        ("x-original-uri", uri),
        ("x-forwarded-host", "127.0.0.1:8080"),
        ("cookie", cookie),
    ]
}

#[tokio::test]
async fn an_allowed_check_answers_the_identity_headers_and_forwards_nothing() {
    let authorizers = Authorizers::start().await;
    let cookie = authorizers.alice_session().await;
    let url = format!("http://{}/auth", authorizers.one.forward_auth_address());

    let allowed = get(&url, &described("GET", "/app/hub", &cookie)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(
        allowed.header("x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert_eq!(allowed.header("x-qlik-virtual-proxy-prefix"), Some("app"));
    assert!(allowed.header("x-gatehouse-location").is_none());

    let denied = get(&url, &described("DELETE", "/app/admin", &cookie)).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.header("x-qlik-user").is_none());

    let unknown = format!("{COOKIE}=unknown");
    let login = get(&url, &described("GET", "/app/hub", &unknown)).await;
    assert_eq!(login.status, 401, "{}", login.text());
    let location = login
        .header("x-gatehouse-location")
        .expect("where to log in");
    assert!(location.contains("targetId="), "{location}");
    let redirected = get(
        &format!("{url}?redirect=true"),
        &described("GET", "/app/hub", &unknown),
    )
    .await;
    assert_eq!(redirected.status, 302);
    assert!(
        redirected
            .location()
            .is_some_and(|l| l.contains("targetId="))
    );

    assert!(
        authorizers.upstream.requests().is_empty(),
        "the authorizer forwards nothing"
    );
}

/// Public paths of "app" for the checks below: `/static/` to GET, `/static/private/` denied
/// to public requests by rule.
pub(super) const PUBLIC_PATHS: [&str; 2] = [
    "[[virtual_proxies.public_paths]]\nprefix = \"/static/\"\nmethods = [\"GET\"]",
    "[[virtual_proxies.access_rules]]\npath_prefix = \"/static/private/\"\npublic = true\n\
     action = \"deny\"",
];

#[tokio::test]
async fn a_check_of_a_public_path_is_allowed_with_no_identity_and_no_session() {
    let authorizers = Authorizers::start_with(&PUBLIC_PATHS).await;
    let cookie = authorizers.alice_session().await;
    let url = format!("http://{}/auth", authorizers.one.forward_auth_address());

    for with in ["", cookie.as_str()] {
        let allowed = get(&url, &described("GET", "/app/static/a.css", with)).await;
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        assert!(
            allowed.header("x-qlik-user").is_none()
                && allowed.header("x-qlik-security").is_none()
                && allowed.header("x-qlik-virtual-proxy-prefix").is_none(),
            "no identity header, with or without a session"
        );
        assert!(allowed.set_cookies().is_empty(), "no session started");
    }
    let not_listed = get(&url, &described("POST", "/app/static/a.css", "")).await;
    assert_eq!(not_listed.status, 401, "{}", not_listed.text());
    let escaped = get(&url, &described("GET", "/app/static/../hub", "")).await;
    assert_eq!(escaped.status, 400, "{}", escaped.text());
    let denied = get(&url, &described("GET", "/app/static/private/key", "")).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let login = get(&url, &described("GET", "/app/hub", "")).await;
    assert_eq!(login.status, 401);
    assert!(login.header("x-gatehouse-location").is_some());
}

#[tokio::test]
async fn forwarded_request_headers_from_an_untrusted_network_are_not_believed() {
    let authorizers = Authorizers::start().await;
    let cookie = authorizers.alice_session().await;
    let url = format!("http://{}/auth", authorizers.one.forward_auth_address());
    let check = described("GET", "/app/hub", &cookie);

    let trusted = request_from(IpAddr::V4(Ipv4Addr::LOCALHOST), Method::GET, &url, &check).await;
    assert_eq!(trusted.status, 200, "from 127.0.0.1: {}", trusted.text());

    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let untrusted = request_from(stranger, Method::GET, &url, &check).await;
    assert_eq!(untrusted.status, 400, "{}", untrusted.text());
    assert!(
        untrusted.text().contains("trusted_networks"),
        "{}",
        untrusted.text()
    );
    assert!(untrusted.header("x-qlik-user").is_none());
    // Without a description the authorizer's own path is not decided on either.
    let bare = request_from(stranger, Method::GET, &url, &[("cookie", cookie.as_str())]).await;
    assert_eq!(bare.status, 400);
    let signin = request_from(
        stranger,
        Method::GET,
        &format!(
            "http://{}/signin?rd=http://127.0.0.1:8080/app/hub",
            authorizers.one.forward_auth_address()
        ),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(signin.status, 400);
}

#[tokio::test]
async fn checks_that_describe_no_acceptable_request_get_a_clear_4xx_never_a_200() {
    let authorizers = Authorizers::start().await;
    let cookie = authorizers.alice_session().await;
    let base = format!("http://{}", authorizers.one.forward_auth_address());
    let auth = format!("{base}/auth");
    let long_uri = format!("/app/{}", "a".repeat(8_500));
    let long_header = "b".repeat(9_000);
    let cases: Vec<Case> = vec![
        (
            "no original URI",
            vec![("x-original-method", "GET"), ("cookie", &cookie)],
            400,
        ),
        (
            "no original method",
            vec![("x-original-uri", "/app/hub"), ("cookie", &cookie)],
            400,
        ),
        (
            "a URI that is no path",
            described("GET", "app/hub", &cookie),
            400,
        ),
        (
            "an absolute URL that is not http",
            vec![
                ("x-original-method", "GET"),
                ("x-original-url", "ftp://127.0.0.1/app/hub"),
                ("cookie", &cookie),
            ],
            400,
        ),
        (
            "a path that cannot be made safe",
            described("GET", "/app/%2e%2e/%00", &cookie),
            400,
        ),
        // The ingress forwards the path as the client sent it, so the node decides only on a
        // path that is already canonical: a rule on /app/admin/ must not be passed by a
        // check the node would read as /app/hub.
        (
            "a path with a dot-dot segment",
            described("GET", "/app/admin//../hub", &cookie),
            400,
        ),
        (
            "a path with an empty segment",
            described("GET", "/app//hub", &cookie),
            400,
        ),
        (
            "a fragment, which no browser sends",
            described("GET", "/app/hub#/../admin", &cookie),
            400,
        ),
        (
            "an identity header spelt with underscores, which CGI-style upstreams read as X-Qlik-User",
            {
                let mut check = described("GET", "/app/hub", &cookie);
                check.push(("x_qlik_user", "UserDirectory=CORP; UserId=admin"));
                check
            },
            400,
        ),
        (
            "a client address that is no address, never the ingress's own instead",
            {
                let mut check = described("GET", "/app/hub", &cookie);
                check.push(("x-forwarded-for", "unix:"));
                check
            },
            400,
        ),
        (
            "no virtual proxy",
            described("GET", "/elsewhere/hub", &cookie),
            404,
        ),
        (
            "a host the proxy is not served at",
            vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/app/hub"),
                ("x-forwarded-host", "evil.example"),
                ("cookie", &cookie),
            ],
            400,
        ),
        (
            "a URI over the limit",
            described("GET", &long_uri, &cookie),
            414,
        ),
        (
            "a header line over the limit",
            {
                let mut check = described("GET", "/app/hub", &cookie);
                check.push(("x-padding", &long_header));
                check
            },
            431,
        ),
        (
            "two original URIs",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/app/hub"),
                ("x-forwarded-uri", "/app/admin"),
                ("cookie", &cookie),
            ],
            400,
        ),
    ];
    for (what, headers, status) in cases {
        let response = get(&auth, &headers).await;
        assert_eq!(response.status, status, "{what}: {}", response.text());
        assert!(!response.text().trim().is_empty(), "{what}: a short reason");
    }
    let elsewhere = get(
        &format!("{base}/hub"),
        &described("GET", "/app/hub", &cookie),
    )
    .await;
    assert_eq!(
        elsewhere.status, 404,
        "the listener answers at /auth and /signin only"
    );
    let signin = get(
        &format!("{base}/signin?rd=http://evil.example/app/hub"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(
        signin.status,
        400,
        "no sign-in for another site: {}",
        signin.text()
    );
    let signed_in = get(
        &format!("{base}/signin?rd=http%3A%2F%2F127.0.0.1%3A8080%2Fapp%2Fhub"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(signed_in.status, 302, "{}", signed_in.text());
    assert_eq!(signed_in.location(), Some("http://127.0.0.1:8080/app/hub"));
}

#[tokio::test]
async fn the_endpoint_answers_over_tls_when_asked_to() {
    use std::sync::Arc;

    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};

    crate::api::tls::install_crypto_provider();
    let certs = crate::api::tls::dev_certificates("forward-auth");
    let authorizers = Authorizers::start().await;
    let tls = format!(
        "{}tls = true\n[tls]\n[[tls.certificates]]\ncert_file = \"{dir}/data-plane.pem\"\nkey_file = \"{dir}/data-plane-key.pem\"\n",
        super::FORWARD_AUTH,
        dir = certs.display()
    );
    let node = crate::harness::DataPlaneNode::start_with(&authorizers.control_plane, &tls).await;
    let cookie = authorizers.alice_session().await;

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(node.forward_auth_address())
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the forward-auth listener");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP handshake");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .uri("/auth")
        .header("host", "localhost");
    for (name, value) in described("GET", "/app/hub", &cookie) {
        request = request.header(name, value);
    }
    let response = sender
        .send_request(request.body(Empty::<bytes::Bytes>::new()).unwrap())
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-qlik-user"],
        qlik_user("CORP", "alice").as_str()
    );
    // The check said nothing of the scheme: the listener's TLS makes it https.
    assert_eq!(
        response.headers()["x-qlik-security"],
        "SecureRequest=true; Context=AppAccess"
    );
    let _ = response.into_body().collect().await;
}

/// A node that allows one address two unknown cookies, then one every ten seconds.
const FEW_UNKNOWN: &str = "[flood.unknown_tokens]\naddress_per_second = 0.1\naddress_burst = 2\n";

#[tokio::test]
async fn checks_past_the_unknown_token_limit_are_429_with_retry_after() {
    let authorizers = Authorizers::start().await;
    let node = crate::harness::DataPlaneNode::start_with(
        &authorizers.control_plane,
        &format!("{}{FEW_UNKNOWN}", super::FORWARD_AUTH),
    )
    .await;
    let url = format!("http://{}/auth", node.forward_auth_address());
    let random = || format!("{COOKIE}={}", crate::harness::fixtures::random_token());
    for _ in 0..2 {
        let login = get(&url, &described("GET", "/app/hub", &random())).await;
        assert_eq!(login.status, 401, "{}", login.text());
    }
    let limited = get(&url, &described("GET", "/app/hub", &random())).await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert!(
        limited
            .text()
            .contains("too many unknown sessions from this address")
    );
    assert!(limited.header("x-qlik-user").is_none());
}
