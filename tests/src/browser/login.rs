//! Logging in through a data-plane node as a browser does: redirected to the authentication
//! module, back with a one-time ticket, given a cookie, and from then on served by the
//! upstream as that user, with neither the ticket nor the cookie leaking upstream.

use crate::browser::fixtures::{
    AppProxy, COOKIE, MODULE, PORTAL, qlik_user, resolve, seen_header, with_cookie,
};
use crate::harness::auth_module::{browser_login, issue_ticket, user};
use crate::harness::client::{self, encode, get, post, query_param};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

async fn start() -> (EchoUpstream, ControlPlane, DataPlaneNode) {
    let upstream = EchoUpstream::start("engine").await;
    let control_plane = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    (upstream, control_plane, node)
}

#[tokio::test]
async fn ticket_login_sets_the_cookie_strips_the_ticket_and_identifies_the_user_upstream() {
    let (upstream, control_plane, node) = start().await;
    let url = node.url("/app/hub/stream?view=list");

    // No cookie: to the module, with where to redeem and what was asked for.
    let first = get(&url, &[]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module_url = first.location().expect("Location").to_owned();
    assert!(
        module_url.starts_with(&format!("{MODULE}?")),
        "{module_url}"
    );
    assert_eq!(
        query_param(&module_url, "proxyRestUri").as_deref(),
        Some(format!("http://{}/qps/app/", node.address()).as_str())
    );
    assert!(query_param(&module_url, "targetId").is_some_and(|id| !id.is_empty()));
    assert!(first.set_cookie(COOKIE).is_none());
    assert!(
        upstream.requests().is_empty(),
        "nothing reaches the upstream without a session"
    );

    // The module gets a ticket for the target, which is the URL first asked for.
    let redirect = issue_ticket(&control_plane, &module_url, user("CORP", "alice")).await;
    assert_eq!(redirect.target_uri, url);

    // Redeeming: a cookie, and back to the same URL without the ticket.
    let landed = get(&redirect.url, &[]).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    let location = landed.location().expect("Location");
    assert_eq!(resolve(&url, location), url);
    assert!(
        !location.to_ascii_lowercase().contains("qlikticket")
            && !location.contains(&redirect.ticket),
        "the ticket stays out of the browser history: {location}"
    );
    let set_cookie = landed
        .set_cookie(COOKIE)
        .expect("the session cookie is set");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            set_cookie.split(';').any(|part| part.trim() == attribute),
            "{attribute} missing: {set_cookie}"
        );
    }
    assert!(
        !set_cookie.contains("Secure"),
        "no Secure flag over plain HTTP: {set_cookie}"
    );
    let cookie = landed.cookie_pair(COOKIE).expect("cookie value");
    assert!(cookie.len() > COOKIE.len() + 20, "{cookie}");
    let token = cookie.split_once('=').expect("name=value").1.to_owned();

    // With the cookie: the upstream answers, and sees the user but not the credentials.
    let page = get(&url, &with_cookie(&format!("{cookie}; theme=dark"))).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json();
    assert_eq!(seen["upstream"], "engine");
    assert_eq!(
        seen["path"], "/hub/stream?view=list",
        "the prefix is stripped"
    );
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert_eq!(
        seen_header(&seen, "cookie"),
        Some("theme=dark"),
        "other cookies pass, the session cookie does not"
    );
    let everything_upstream_saw = serde_json::to_string(&upstream.requests()).expect("json");
    assert!(!everything_upstream_saw.contains(&token));
    assert!(!everything_upstream_saw.contains(&redirect.ticket));
    assert!(
        !everything_upstream_saw
            .to_ascii_lowercase()
            .contains("qlikticket")
    );

    // A ticket is good for one login only.
    let replay = get(&redirect.url, &[]).await;
    assert_eq!(replay.status, 403, "{}", replay.text());
    assert!(replay.set_cookie(COOKIE).is_none());
}

#[tokio::test]
async fn the_ticket_parameter_is_found_in_any_case_and_other_parameters_are_kept() {
    let (upstream, control_plane, node) = start().await;
    let url = node.url("/app/sheet?id=7&mode=edit");
    let first = get(&url, &[]).await;
    let redirect = issue_ticket(
        &control_plane,
        first.location().expect("Location"),
        user("CORP", "bob"),
    )
    .await;
    let shouting = format!(
        "{}&QLIKTICKET={}",
        redirect.target_uri,
        encode(&redirect.ticket)
    );
    let landed = get(&shouting, &[]).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(resolve(&url, landed.location().expect("Location")), url);
    let cookie = landed.cookie_pair(COOKIE).expect("cookie");
    let page = get(&url, &with_cookie(&cookie)).await;
    assert_eq!(page.json()["path"], "/sheet?id=7&mode=edit");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn requests_other_than_get_without_a_session_get_401_not_a_redirect() {
    let (upstream, _control_plane, node) = start().await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let response = client::request(
            method.parse().expect("method"),
            &node.url("/app/api/things"),
            &[("content-type", "application/json")],
            "{\"a\":1}",
        )
        .await;
        assert_eq!(response.status, 401, "{method}: {}", response.text());
        assert!(response.location().is_none(), "{method} is not redirected");
        assert!(response.set_cookie(COOKIE).is_none());
    }
    // An unknown cookie is no better than none.
    let forged = post(
        &node.url("/app/api/things"),
        &with_cookie(&format!("{COOKIE}=forged-token-value")),
        "{}",
    )
    .await;
    assert_eq!(forged.status, 401);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn an_unknown_cookie_on_a_get_is_sent_to_log_in() {
    let (_upstream, _control_plane, node) = start().await;
    let response = get(
        &node.url("/app/hub"),
        &with_cookie(&format!("{COOKIE}=not-a-session")),
    )
    .await;
    assert_eq!(response.status, 302);
    assert!(
        response
            .location()
            .is_some_and(|location| location.starts_with(MODULE))
    );
}

#[tokio::test]
async fn reload_uri_must_point_to_an_allowed_host() {
    let (_upstream, control_plane, node) = start().await;

    let foreign = get(
        &node.url(&format!(
            "/app/hub?reloadUri={}",
            encode("http://evil.test/steal")
        )),
        &[],
    )
    .await;
    assert_eq!(foreign.status, 400, "{}", foreign.text());
    assert!(foreign.location().is_none(), "no open redirect");

    // Userinfo tricks do not get past the check either.
    let tricked = get(
        &node.url(&format!(
            "/app/hub?reloadUri={}",
            encode(&format!("http://{PORTAL}@evil.test/"))
        )),
        &[],
    )
    .await;
    assert_eq!(tricked.status, 400, "{}", tricked.text());

    // An allowed host becomes the login target, and the browser ends up there.
    let back = format!("http://{PORTAL}/after-login?x=1");
    let allowed = get(
        &node.url(&format!("/app/hub?reloadUri={}", encode(&back))),
        &[],
    )
    .await;
    assert_eq!(allowed.status, 302, "{}", allowed.text());
    let redirect = issue_ticket(
        &control_plane,
        allowed.location().expect("Location"),
        user("CORP", "carol"),
    )
    .await;
    assert_eq!(redirect.target_uri, back);
}

#[tokio::test]
async fn a_logged_in_browser_keeps_its_session_across_requests() {
    let (upstream, control_plane, node) = start().await;
    let (_, cookie) = browser_login(
        &control_plane,
        &node.url("/app/hub"),
        COOKIE,
        user("CORP", "dave"),
    )
    .await;
    for path in ["/app/hub", "/app/sense/app/1", "/app/api/v1/about"] {
        let response = get(&node.url(path), &with_cookie(&cookie)).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert!(
            response.set_cookie(COOKIE).is_none(),
            "no new cookie for a session in use"
        );
    }
    let posted = post(&node.url("/app/api/save"), &with_cookie(&cookie), "payload").await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.json()["body"], "payload");
    assert_eq!(upstream.requests().len(), 4);
}

#[tokio::test]
async fn unknown_and_malformed_tickets_are_refused_without_a_session() {
    let (upstream, _control_plane, node) = start().await;
    let unknown = get(
        &node.url("/app/hub?qlikTicket=AAAAAAAAAAAAAAAAAAAAAAAA"),
        &[],
    )
    .await;
    assert_eq!(unknown.status, 403, "{}", unknown.text());
    assert!(unknown.set_cookie(COOKIE).is_none());
    let malformed = get(
        &node.url(&format!(
            "/app/hub?qlikTicket={}",
            encode("<script>alert(1)</script>")
        )),
        &[],
    )
    .await;
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    assert!(upstream.requests().is_empty());
}
