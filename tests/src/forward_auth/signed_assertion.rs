//! The signed identity assertion through forward authentication: the HTTP endpoint answers
//! it among the headers to copy, `ext_authz` sets it (under the proxy's own header name) and
//! removes a client's copy, and it verifies with the JWKS of any node.

use super::Authorizers;
use super::ext_authz::{ask, check, ok, value};
use crate::browser::fixtures::{qlik_user, seen_header};
use crate::browser::signed_assertion::{jwks, verify};
use crate::harness::client::get;

const AUDIENCE: &str = "https://app.example.com";

#[tokio::test]
async fn forward_auth_answers_carry_the_assertion_an_upstream_verifies() {
    let authorizers = Authorizers::start_with(&[&format!(
        "[virtual_proxies.assertion]\nheader = \"X-App-Identity\"\naudience = \"{AUDIENCE}\""
    )])
    .await;
    let cookie = authorizers.alice_session().await;
    let keys = jwks(&authorizers.two).await;

    let url = format!("http://{}/auth", authorizers.one.forward_auth_address());
    let allowed = get(
        &url,
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/app/hub"),
            ("x-forwarded-host", "127.0.0.1:8080"),
            ("cookie", &cookie),
            ("x-app-identity", "forged"),
        ],
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(
        allowed.header("x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    let token = allowed.header("x-app-identity").expect("the assertion");
    let claims = verify(token, &keys, AUDIENCE).expect("verifies with node two's keys");
    assert_eq!(claims["sub"], "alice");

    let answer = ask(
        &authorizers,
        check(
            "GET",
            "/app/hub",
            &[("cookie", &cookie), ("x-app-identity", "forged")],
        ),
    )
    .await;
    let ok = ok(&answer);
    let token = value(&ok.headers, "x-app-identity").expect("set by ext_authz");
    assert_ne!(token, "forged");
    assert!(verify(token, &keys, AUDIENCE).is_ok());
    // The default name is no one's to send either.
    assert!(
        ok.headers_to_remove
            .iter()
            .any(|name| name == "x-gatehouse-assertion"),
        "{ok:?}"
    );
}

#[tokio::test]
async fn through_nginx_and_caddy_the_upstream_gets_the_nodes_assertion_never_a_clients() {
    let authorizers = Authorizers::start_with(&["[virtual_proxies.assertion]"]).await;
    let cookie = authorizers.alice_session().await;
    let keys = jwks(&authorizers.one).await;
    let forged = [
        ("cookie", cookie.as_str()),
        (
            "x-gatehouse-assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
        ),
    ];
    for ingress in [
        authorizers.nginx_in_front_of_one().await,
        authorizers.caddy_in_front_of_one().await,
    ]
    .into_iter()
    .flatten()
    {
        let page = get(&ingress.url("/app/hub"), &forged).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let seen = page.json();
        assert!(
            seen["headers"]["x-gatehouse-assertion"].is_string(),
            "exactly one: {seen}"
        );
        let token = seen_header(&seen, "x-gatehouse-assertion").unwrap();
        let claims = verify(token, &keys, "gatehouse:virtual-proxy:/app")
            .unwrap_or_else(|error| panic!("{error:?}: {seen}"));
        assert_eq!(claims["sub"], "alice");
    }
}
