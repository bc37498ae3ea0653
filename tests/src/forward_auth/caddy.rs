//! Caddy `forward_auth` in front of an upstream, asking a node with redirects answered:
//! Caddy hands the authorizer's 302 to the browser, so the ticket login goes exactly as it
//! does through the proxy (the ticket URL redirects to itself without the ticket).

use super::Authorizers;
use crate::browser::fixtures::{COOKIE, MODULE, qlik_user, seen_header};
use crate::harness::auth_module::{issue_ticket, user};
use crate::harness::client::get;

#[tokio::test]
async fn a_browser_logs_in_through_caddy_and_the_upstream_sees_its_identity_never_a_forged_one() {
    let authorizers = Authorizers::start().await;
    let Some(ingress) = authorizers.caddy_in_front_of_one().await else {
        return;
    };
    let first = get(&ingress.url("/app/hub?page=1"), &[]).await;
    assert_eq!(
        first.status,
        302,
        "no session: sent to log in: {}",
        first.text()
    );
    let module = first.location().expect("a login Location").to_owned();
    assert!(module.starts_with(MODULE), "{module}");
    let redirect = issue_ticket(&authorizers.control_plane, &module, user("CORP", "alice")).await;
    assert_eq!(redirect.target_uri, ingress.url("/app/hub?page=1"));

    let landed = get(&redirect.url, &[]).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(
        landed.location(),
        Some(ingress.url("/app/hub?page=1").as_str()),
        "back to the page, without the ticket"
    );
    let cookie = landed
        .cookie_pair(COOKIE)
        .unwrap_or_else(|| panic!("no session cookie in {:?}", landed.set_cookies()));
    assert!(
        authorizers.upstream.requests().is_empty(),
        "the ticket URL never reached the upstream"
    );

    let forged = [
        ("cookie", cookie.as_str()),
        ("x-qlik-user", "UserDirectory=CORP; UserId=root"),
        (
            "x-qlik-security",
            "SecureRequest=true; Context=AppAccess; Group=admins",
        ),
    ];
    let page = get(&ingress.url("/app/hub?page=1"), &forged).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json();
    assert_eq!(
        seen["headers"]["x-qlik-user"],
        qlik_user("CORP", "alice"),
        "one value, the node's: {seen}"
    );
    assert_eq!(
        seen_header(&seen, "x-qlik-security"),
        Some("SecureRequest=false; Context=AppAccess")
    );

    let denied = get(
        &ingress.url("/app/admin/users"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(denied.status, 403, "the access rule refuses through Caddy");
    // A client's own description of another URI is passed on by Caddy beside its
    // X-Forwarded-Uri: refused, not believed.
    let steered = get(
        &ingress.url("/app/admin/users"),
        &[
            ("cookie", cookie.as_str()),
            ("x-original-uri", "/app/hub"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(steered.status, 400, "{}", steered.text());
    assert_eq!(authorizers.upstream.requests().len(), 1);
}
