//! Who the upstream is told the user is: only ever the proxy's own identity headers (never a
//! client's copy), header authentication only from trusted networks, and access rules that
//! keep users out of paths before the upstream sees them.

use crate::browser::fixtures::{AppProxy, COOKIE, MODULE, qlik_user, seen_header, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{get, post};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

async fn start(proxy: AppProxy) -> (ControlPlane, DataPlaneNode) {
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    (control_plane, node)
}

#[tokio::test]
async fn client_supplied_identity_headers_never_reach_the_upstream() {
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = start(AppProxy::new([upstream.node()])).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;

    let forged = [
        ("cookie", cookie.as_str()),
        (
            "x-qlik-user",
            "UserDirectory=INTERNAL; UserId=sa_repository",
        ),
        (
            "X-Qlik-Security",
            "SecureRequest=true; Context=ManagementAccess; group=admins",
        ),
        ("x-qlik-virtual-proxy-prefix", "admin"),
        ("x-gatehouse-user-id", "root"),
    ];
    let response = get(&node.url("/app/hub"), &forged).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(
        seen["headers"]["x-qlik-user"],
        qlik_user("CORP", "alice"),
        "exactly one X-Qlik-User, the proxy's"
    );
    let security = seen_header(&seen, "x-qlik-security").expect("X-Qlik-Security is set");
    assert!(
        security.starts_with("SecureRequest=false; Context=AppAccess"),
        "{security}"
    );
    assert!(!security.contains("admins"), "{security}");
    assert_eq!(seen["headers"]["x-qlik-virtual-proxy-prefix"], "app");
    assert!(seen["headers"].get("x-gatehouse-user-id").is_none());

    // Without a session, forged headers get nobody in.
    let anonymous = post(&node.url("/app/api"), &forged[1..], "").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(upstream.requests().len(), 1);
}

fn header_proxy(upstream: &EchoUpstream, trusted: &str) -> AppProxy {
    AppProxy::new([upstream.node()]).table(&format!(
        "[virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"\n\
         user_directory = \"CORP\"\ntrusted_networks = [\"{trusted}\"]"
    ))
}

#[tokio::test]
async fn header_authentication_from_a_trusted_network_logs_the_user_in() {
    let upstream = EchoUpstream::start("engine").await;
    let (_control_plane, node) = start(header_proxy(&upstream, "127.0.0.0/8")).await;

    let response = get(&node.url("/app/hub"), &[("X-Remote-User", "alice")]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert!(
        seen["headers"].get("x-remote-user").is_none(),
        "the trusted header itself is not forwarded"
    );
    let cookie = response
        .cookie_pair(COOKIE)
        .expect("header login creates a normal session");

    // The session works on its own afterwards.
    let later = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(later.status, 200);
    assert!(later.set_cookie(COOKIE).is_none());
    assert_eq!(
        seen_header(&later.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );

    // A different user in the header wins over the cookie: the front end says who it is now.
    let switched = get(
        &node.url("/app/hub"),
        &[("cookie", cookie.as_str()), ("X-Remote-User", "bob")],
    )
    .await;
    assert_eq!(switched.status, 200);
    assert_eq!(
        seen_header(&switched.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "bob").as_str())
    );
    assert!(switched.set_cookie(COOKIE).is_some());
}

#[tokio::test]
async fn header_authentication_from_an_untrusted_network_is_ignored() {
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = start(header_proxy(&upstream, "10.0.0.0/8")).await;

    let get_response = get(&node.url("/app/hub"), &[("X-Remote-User", "alice")]).await;
    assert_eq!(get_response.status, 302, "{}", get_response.text());
    assert!(
        get_response
            .location()
            .is_some_and(|location| location.starts_with(MODULE))
    );
    assert!(get_response.set_cookie(COOKIE).is_none());
    let post_response = post(&node.url("/app/hub"), &[("X-Remote-User", "alice")], "").await;
    assert_eq!(post_response.status, 401);
    assert!(upstream.requests().is_empty());

    // With a real session the request goes through, as that session's user, and the
    // untrusted header is dropped on the way.
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "bob")).await;
    let response = get(
        &node.url("/app/hub"),
        &[("cookie", cookie.as_str()), ("X-Remote-User", "alice")],
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = response.json();
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user("CORP", "bob").as_str())
    );
    assert!(seen["headers"].get("x-remote-user").is_none());
}

#[tokio::test]
async fn access_rules_deny_before_the_upstream_is_asked() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()])
        .table("[[virtual_proxies.access_rules]]\npath_prefix = \"/admin\"\naction = \"deny\"");
    let (control_plane, node) = start(proxy).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;

    let denied = get(&node.url("/app/admin/x"), &with_cookie(&cookie)).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let denied_post = post(&node.url("/app/admin"), &with_cookie(&cookie), "x").await;
    assert_eq!(denied_post.status, 403);
    let allowed = get(&node.url("/app/hub"), &with_cookie(&cookie)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.json()["path"], "/hub");
    assert_eq!(upstream.requests().len(), 1, "denied requests never left");

    // A rule is no way around logging in: without a session it is still the login flow.
    let anonymous = get(&node.url("/app/admin/x"), &[]).await;
    assert_eq!(anonymous.status, 302);
}

/// Dot segments, doubled slashes, percent-encoded letters and other letter case are the same
/// path to many upstream servers, which normalise before routing; a rule on `/admin` must
/// cover them.
#[tokio::test]
async fn access_rules_cannot_be_bypassed_with_unnormalised_paths() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()])
        .table("[[virtual_proxies.access_rules]]\npath_prefix = \"/admin\"\naction = \"deny\"");
    let (control_plane, node) = start(proxy).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let mut leaked = Vec::new();
    for path in [
        "/app/hub/../admin/x",
        "/app/./admin/x",
        "/app//admin/x",
        "/app/%61dmin/x",
        "/app/hub/%2e%2e/admin/x",
        "/app/ADMIN/x",
    ] {
        let response = get(&node.url(path), &with_cookie(&cookie)).await;
        // Refusing such a path outright (400) would do as well as applying the rule (403).
        if ![400, 403].contains(&response.status.as_u16()) {
            leaked.push(format!("{path} -> {}", response.status));
        }
    }
    assert!(
        leaked.is_empty(),
        "reached the upstream past the deny rule: {leaked:?}; upstream saw {:?}",
        upstream
            .requests()
            .iter()
            .map(|request| request["path"].clone())
            .collect::<Vec<_>>()
    );
}
