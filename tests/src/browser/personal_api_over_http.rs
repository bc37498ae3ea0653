//! The Personal API over HTTP under a virtual proxy's prefix, as QPS offers it: who am I
//! (`GET /app/qps/user`), where do I log in (`?targetUri=`), and log out
//! (`DELETE /app/qps/user`, only from the site itself or with the session's CSRF token).

use crate::browser::fixtures::{AppProxy, COOKIE, MODULE, PORTAL, logout, rejected, with_cookie};
use crate::harness::auth_module::{browser_login, issue_ticket, session_cookie, user};
use crate::harness::client::{self, delete, encode, get, query_param};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

async fn start() -> (EchoUpstream, ControlPlane, DataPlaneNode) {
    let upstream = EchoUpstream::start("engine").await;
    let control_plane = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    (upstream, control_plane, node)
}

#[tokio::test]
async fn who_am_i_names_the_user_of_the_cookie_and_says_inactive_without_one() {
    let (upstream, control_plane, node) = start().await;
    let (_, cookie) = browser_login(
        &control_plane,
        &node.url("/app/hub"),
        COOKIE,
        user("CORP", "alice"),
    )
    .await;

    let me = get(&node.url("/app/qps/user"), &with_cookie(&cookie)).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.header("content-type"), Some("application/json"));
    let me = me.json();
    assert_eq!(me["userDirectory"], "CORP");
    assert_eq!(me["userId"], "alice");
    assert_eq!(
        me["logoutUri"],
        format!("http://{}/app/qps/user", node.address())
    );

    let nobody = get(&node.url("/app/qps/user"), &[]).await;
    assert_eq!(nobody.status, 200);
    assert_eq!(nobody.json(), serde_json::json!({ "session": "inactive" }));

    let forged = get(
        &node.url("/app/qps/user"),
        &with_cookie(&format!("{COOKIE}=made-up")),
    )
    .await;
    assert_eq!(forged.json()["session"], "inactive");
    assert!(
        upstream.requests().is_empty(),
        "the Personal API is answered by the node, not the upstream"
    );
}

#[tokio::test]
async fn target_uri_gets_a_login_uri_only_for_an_allowed_host() {
    let (_upstream, control_plane, node) = start().await;

    let target = format!("http://{PORTAL}/x");
    let allowed = get(
        &node.url(&format!("/app/qps/user?targetUri={}", encode(&target))),
        &[],
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let allowed = allowed.json();
    assert_eq!(allowed["session"], "inactive");
    let login_uri = allowed["loginUri"].as_str().expect("a loginUri").to_owned();
    assert!(login_uri.starts_with(&format!("{MODULE}?")), "{login_uri}");
    assert!(query_param(&login_uri, "targetId").is_some());
    // The module can act on it: the ticket's target is the page asked about.
    let redirect = issue_ticket(&control_plane, &login_uri, user("CORP", "alice")).await;
    assert_eq!(redirect.target_uri, target);

    for foreign in ["http://evil.test/x", "javascript:alert(1)", "//evil.test/x"] {
        let refused = get(
            &node.url(&format!("/app/qps/user?targetUri={}", encode(foreign))),
            &[],
        )
        .await;
        assert_eq!(refused.status, 200, "{foreign}: {}", refused.text());
        let refused = refused.json();
        assert_eq!(refused["session"], "inactive");
        assert!(
            refused.get("loginUri").is_none(),
            "{foreign} got a login URI: {refused}"
        );
    }
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let (_upstream, control_plane, node) = start().await;
    let (_, cookie) = browser_login(
        &control_plane,
        &node.url("/app/hub"),
        COOKIE,
        user("CORP", "alice"),
    )
    .await;

    let ended = logout(&node, &cookie).await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    let body = ended.json();
    assert_eq!(body["session"], "ended");
    assert_eq!(body["userId"], "alice");
    let cleared = ended.set_cookie(COOKIE).expect("the cookie is cleared");
    assert!(cleared.starts_with(&format!("{COOKIE}=;")), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // At once on this node: no grace for a session its holder ended.
    assert!(rejected(&node.url("/app/hub"), &cookie).await);
    let me = get(&node.url("/app/qps/user"), &with_cookie(&cookie)).await;
    assert_eq!(me.json()["session"], "inactive");

    // Logging out twice is harmless.
    let again = logout(&node, &cookie).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["session"], "inactive");

    let other = client::request(
        "PUT".parse().expect("method"),
        &node.url("/app/qps/user"),
        &with_cookie(&cookie),
        "",
    )
    .await;
    assert_eq!(other.status, 405);
    assert_eq!(other.header("allow"), Some("GET, DELETE"));
}

#[tokio::test]
async fn a_cross_site_page_cannot_log_the_user_out() {
    let (_upstream, control_plane, node) = start().await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let url = node.url("/app/qps/user");

    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("origin", "http://evil.test")],
        vec![
            ("cookie", cookie.as_str()),
            ("referer", "http://evil.test/page"),
        ],
        vec![
            ("cookie", cookie.as_str()),
            ("qlik-csrf-token", "0123456789abcdef0123456789abcdef"),
        ],
    ] {
        let refused = delete(&url, &headers).await;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.text());
        assert!(refused.set_cookie(COOKIE).is_none());
    }
    assert_eq!(
        get(&node.url("/app/hub"), &with_cookie(&cookie))
            .await
            .status,
        200,
        "the session survived"
    );

    // From an allowed host's page it works...
    let from_portal = delete(
        &url,
        &[("cookie", &cookie), ("origin", &format!("http://{PORTAL}"))],
    )
    .await;
    assert_eq!(from_portal.json()["session"], "ended");

    // ...and so does a script holding the session's CSRF token, whatever its origin.
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let issued = get(&node.url("/app/qps/csrftoken"), &with_cookie(&cookie)).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let token = issued
        .header("qlik-csrf-token")
        .expect("the token comes in a header")
        .to_owned();
    assert!(
        !cookie.contains(&token),
        "the CSRF token is not the session token"
    );
    let with_token = delete(&url, &[("cookie", &cookie), ("qlik-csrf-token", &token)]).await;
    assert_eq!(with_token.status, 200, "{}", with_token.text());
    assert_eq!(with_token.json()["session"], "ended");
    let no_session = get(&node.url("/app/qps/csrftoken"), &[]).await;
    assert_eq!(no_session.status, 401);
}
