//! nginx `auth_request` in front of an upstream, asking a node: the ticket login through
//! nginx, identity headers the upstream can trust, access rules, revocation across nodes,
//! and a Redis outage told apart from a missing session.

use std::time::Duration;

use super::Authorizers;
use crate::browser::fixtures::{COOKIE, MODULE, PROPAGATION, logout, qlik_user, seen_header};
use crate::harness::auth_module::{issue_ticket, user};
use crate::harness::client::{get, post};
use crate::harness::eventually;
use crate::harness::fixtures::random_token;
use crate::harness::ingress::Ingress;

/// The whole ticket login through `ingress`, as a browser does it: the login redirect, the
/// module's ticket, the ticket URL. Returns the `name=value` cookie pair.
async fn login_through_nginx(authorizers: &Authorizers, ingress: &Ingress) -> String {
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
    assert_eq!(
        redirect.target_uri,
        ingress.url("/app/hub?page=1"),
        "the target is the URL the browser asked nginx for"
    );
    // nginx cannot pass a redirect on from auth_request: the ticket URL is served, and the
    // session cookie comes with the upstream's answer.
    let landed = get(
        &redirect.url,
        &[("x-qlik-user", "UserDirectory=CORP; UserId=root")],
    )
    .await;
    assert_eq!(landed.status, 200, "{}", landed.text());
    assert_eq!(
        seen_header(&landed.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    landed
        .cookie_pair(COOKIE)
        .unwrap_or_else(|| panic!("no session cookie in {:?}", landed.set_cookies()))
}

#[tokio::test]
async fn a_browser_logs_in_through_nginx_and_the_upstream_sees_its_identity_never_a_forged_one() {
    let authorizers = Authorizers::start().await;
    let Some(ingress) = authorizers.nginx_in_front_of_one().await else {
        return;
    };
    let cookie = login_through_nginx(&authorizers, &ingress).await;

    let forged = [
        ("cookie", cookie.as_str()),
        ("x-qlik-user", "UserDirectory=CORP; UserId=root"),
        (
            "x-qlik-security",
            "SecureRequest=true; Context=AppAccess; Group=admins",
        ),
        ("x-qlik-virtual-proxy-prefix", "other"),
    ];
    let page = get(&ingress.url("/app/hub"), &forged).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json();
    assert_eq!(
        seen["headers"]["x-qlik-user"],
        qlik_user("CORP", "alice"),
        "one value, the node's: {seen}"
    );
    assert_eq!(
        seen["headers"]["x-qlik-security"],
        "SecureRequest=false; Context=AppAccess"
    );
    assert_eq!(seen["headers"]["x-qlik-virtual-proxy-prefix"], "app");
    assert!(
        page.set_cookie(COOKIE).is_none(),
        "no new session for a known cookie"
    );

    let posted = post(
        &ingress.url("/app/api"),
        &[("cookie", cookie.as_str())],
        "x",
    )
    .await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert_eq!(posted.json()["method"], "POST");
    let served = authorizers.upstream.requests().len();

    let denied = get(
        &ingress.url("/app/admin/users"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(denied.status, 403, "the access rule refuses through nginx");
    let unnormalised = get(
        &ingress.url("/app/x/../admin/users"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    // The node decides only on a canonical path (nginx may forward the path as sent): the
    // check is refused, and nginx turns the 400 into a 500, never a 200.
    assert_eq!(
        unnormalised.status,
        500,
        "a path with dot segments is not decided: {}",
        unnormalised.text()
    );
    // A client that names another URI in its own headers is not believed: the check names
    // the URI twice, which is refused (nginx turns the 400 into a 500), never allowed.
    let steered = get(
        &ingress.url("/app/admin/users"),
        &[
            ("cookie", cookie.as_str()),
            ("x-original-url", &ingress.url("/app/hub")),
        ],
    )
    .await;
    assert_eq!(steered.status, 500, "{}", steered.text());
    let without_session = post(&ingress.url("/app/api"), &[], "x").await;
    assert_eq!(
        without_session.status, 401,
        "a POST is not redirected to log in"
    );
    assert_eq!(
        authorizers.upstream.requests().len(),
        served,
        "refused requests never reached the upstream"
    );
}

#[tokio::test]
async fn a_logout_on_one_node_is_refused_through_an_ingress_pointed_at_another() {
    let authorizers = Authorizers::start().await;
    let upstream = authorizers.upstream.node();
    let Some(through_one) = Ingress::nginx(authorizers.one.forward_auth_address(), &upstream).await
    else {
        return;
    };
    let Some(through_two) = Ingress::nginx(authorizers.two.forward_auth_address(), &upstream).await
    else {
        return;
    };
    let cookie = login_through_nginx(&authorizers, &through_one).await;
    let page = get(&through_two.url("/app/hub"), &[("cookie", cookie.as_str())]).await;
    assert_eq!(
        page.status,
        200,
        "node two knows the session: {}",
        page.text()
    );

    let ended = logout(&authorizers.one, &cookie).await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    let url = through_two.url("/app/hub");
    eventually("node two to refuse the session", PROPAGATION, || async {
        let response = get(&url, &[("cookie", cookie.as_str())]).await;
        (response.status == 302
            && response
                .location()
                .is_some_and(|location| location.starts_with(MODULE)))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_is_a_503_through_nginx_never_a_401() {
    let mut authorizers = Authorizers::start().await;
    let Some(ingress) = authorizers.nginx_in_front_of_one().await else {
        return;
    };
    let cookie = login_through_nginx(&authorizers, &ingress).await;
    authorizers.redis.kill().await;

    let unknown = format!("{COOKIE}={}", random_token());
    let url = ingress.url("/app/hub");
    let response = eventually(
        "an unknown session to be answered 503",
        Duration::from_secs(20),
        || async {
            let response = get(&url, &[("cookie", unknown.as_str())]).await;
            assert_ne!(
                response.status, 401,
                "a missing store is not a missing session"
            );
            assert_ne!(response.status, 200);
            (response.status == 503).then_some(response)
        },
    )
    .await;
    assert_eq!(response.header("retry-after"), Some("1"));
    let login = get(&url, &[]).await;
    assert_eq!(login.status, 503, "no login while targets cannot be stored");
    // A session validated before the outage keeps working within the grace.
    let known = get(&url, &[("cookie", cookie.as_str())]).await;
    assert_eq!(known.status, 200, "{}", known.text());
}
