//! The signed identity assertion through forward authentication: the HTTP endpoint answers
//! it among the headers to copy, `ext_authz` sets it (under the proxy's own header name) and
//! removes a client's copy, and it verifies with the JWKS of any node.

use super::Authorizers;
use super::ext_authz::{ask, check, ok, value};
use crate::browser::fixtures::qlik_user;
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
