//! Public paths: what a virtual proxy serves without identification. A cookieless request
//! on one reaches the upstream with no login, no session written and no call to the control
//! plane; no identity header reaches the upstream, whoever claims one; only the path and
//! methods listed are public, on the path as the proxy normalises it; access rules still
//! apply; and a bad public path keeps the control plane from starting.

use gatehouse_proto::v1 as pb;

use crate::browser::fixtures::{AppProxy, COOKIE, MODULE, qlik_user, seen_header, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{get, post, request};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

/// "app" with `/static/` public to GET and HEAD, `/health` to every method, and anonymous
/// access allowed elsewhere (which, unlike a public path, starts a session).
fn public_proxy(upstream: &EchoUpstream) -> AppProxy {
    AppProxy::new([upstream.node()])
        .key("anonymous = \"allow\"")
        .table(
            "[[virtual_proxies.public_paths]]\nprefix = \"/static/\"\nmethods = [\"GET\", \"HEAD\"]\n\
             [[virtual_proxies.public_paths]]\nprefix = \"/health\"",
        )
}

async fn start(proxy: AppProxy) -> (ControlPlane, DataPlaneNode) {
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    (control_plane, node)
}

/// Sessions of "app" the control plane holds, through the Session API.
async fn stored_sessions(control_plane: &ControlPlane) -> usize {
    control_plane
        .sessions()
        .list_sessions(pb::ListSessionsRequest {
            virtual_proxy: Some("app".to_owned()),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("ListSessions succeeds")
        .into_inner()
        .sessions
        .len()
}

/// Calls the control plane has answered, besides the node's `Watch` stream.
async fn control_plane_calls(control_plane: &ControlPlane) -> f64 {
    let metrics = get(
        &format!("http://{}/metrics", control_plane.admin_address()),
        &[],
    )
    .await;
    assert_eq!(metrics.status, 200);
    metrics
        .text()
        .lines()
        .filter(|line| line.starts_with("gatehouse_control_plane_rpcs_total{"))
        .filter(|line| !line.contains("/Watch\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_cookieless_get_on_a_public_path_reaches_the_upstream_and_stores_no_session() {
    let upstream = EchoUpstream::start("engine").await;
    let (control_plane, node) = start(public_proxy(&upstream)).await;
    let calls_before = control_plane_calls(&control_plane).await;

    for path in ["/app/static/a.css", "/app/static/js/app.js", "/app/health"] {
        let response = get(&node.url(path), &[]).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert!(response.set_cookies().is_empty(), "{path}: no cookie set");
        assert_eq!(response.json()["path"], path.trim_start_matches("/app"));
    }
    let head = request(http::Method::HEAD, &node.url("/app/static/a.css"), &[], "").await;
    assert_eq!(head.status, 200);
    let webhook = post(&node.url("/app/health/ping"), &[], "{}").await;
    assert_eq!(webhook.status, 200, "every method is public under /health");
    // A cookie the node has never seen is not looked up either.
    let unknown = format!("{COOKIE}=never-issued");
    let with_unknown = get(&node.url("/app/static/a.css"), &with_cookie(&unknown)).await;
    assert_eq!(with_unknown.status, 200, "{}", with_unknown.text());

    assert_eq!(
        control_plane_calls(&control_plane).await,
        calls_before,
        "no call to the control plane for a public request"
    );
    assert_eq!(stored_sessions(&control_plane).await, 0);
    let metrics = get(&format!("http://{}/metrics", node.admin_address()), &[]).await;
    assert!(
        metrics
            .text()
            .contains("gatehouse_public_requests_total{virtual_proxy=\"app\"} 6\n"),
        "public requests are counted: {}",
        metrics.text()
    );

    // Anonymous access, by contrast, calls the control plane and writes a session per
    // cookieless browser.
    let calls_listed = control_plane_calls(&control_plane).await;
    let anonymous = get(&node.url("/app/hub"), &[]).await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    assert!(anonymous.set_cookie(COOKIE).is_some());
    assert!(control_plane_calls(&control_plane).await > calls_listed);
    assert_eq!(stored_sessions(&control_plane).await, 1);
}

#[tokio::test]
async fn a_spoofed_identity_on_a_public_path_never_reaches_the_upstream() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()])
        .table(
            "[virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"\n\
             user_directory = \"CORP\"\ntrusted_networks = [\"127.0.0.0/8\"]",
        )
        .table("[[virtual_proxies.public_paths]]\nprefix = \"/static/\"");
    let (control_plane, node) = start(proxy).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let forged = [
        (
            "x-qlik-user",
            "UserDirectory=INTERNAL; UserId=sa_repository",
        ),
        ("x-qlik-security", "SecureRequest=true; group=admins"),
        ("x-qlik-proxyid", "ProxyId=admin"),
        ("x-qlik-virtual-proxy-prefix", "admin"),
        ("x-gatehouse-user-directory", "INTERNAL"),
        ("x-gatehouse-user-id", "root"),
        ("x-gatehouse-attributes", "group=admins"),
        ("x-gatehouse-virtual-proxy", "admin"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-real-ip", "10.0.0.1"),
        ("X-Remote-User", "bob"),
    ];
    let identity_seen = |seen: &serde_json::Value| -> Vec<String> {
        seen["headers"]
            .as_object()
            .map(|headers| {
                headers
                    .keys()
                    .filter(|name| {
                        name.starts_with("x-qlik-")
                            || name.starts_with("x-gatehouse-")
                            || *name == "x-remote-user"
                            || *name == "x-real-ip"
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };

    let cookieless = get(&node.url("/app/static/a.css"), &forged).await;
    assert_eq!(cookieless.status, 200, "{}", cookieless.text());
    let seen = cookieless.json();
    assert_eq!(identity_seen(&seen), Vec::<String>::new(), "{seen}");
    assert_eq!(seen_header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert!(
        cookieless.set_cookie(COOKIE).is_none(),
        "the trusted header logs nobody in on a public path"
    );

    // A valid session does not make a public request identified: the upstream sees nobody,
    // and never the session cookie.
    let with_session: Vec<(&str, &str)> = forged
        .iter()
        .copied()
        .chain([("cookie", cookie.as_str())])
        .collect();
    let signed_in = get(&node.url("/app/static/a.css"), &with_session).await;
    assert_eq!(signed_in.status, 200);
    let seen = signed_in.json();
    assert_eq!(identity_seen(&seen), Vec::<String>::new(), "{seen}");
    assert!(
        seen_header(&seen, "cookie").is_none_or(|sent| !sent.contains(COOKIE)),
        "{seen}"
    );

    // Off the public path the same session is alice, and the forged headers are gone (the
    // trusted header would log its user in there, so it stays out).
    let without_login: Vec<(&str, &str)> = with_session
        .iter()
        .copied()
        .filter(|(name, _)| *name != "X-Remote-User")
        .collect();
    let private = get(&node.url("/app/hub"), &without_login).await;
    assert_eq!(
        seen_header(&private.json(), "x-qlik-user"),
        Some(qlik_user("CORP", "alice").as_str())
    );
    assert_eq!(stored_sessions(&control_plane).await, 1);
}

#[tokio::test]
async fn only_the_listed_paths_and_methods_are_public() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()]).table(
        "[[virtual_proxies.public_paths]]\nprefix = \"/static/\"\nmethods = [\"GET\", \"HEAD\"]\n\
         [[virtual_proxies.public_paths]]\nprefix = \"/health\"",
    );
    let (control_plane, node) = start(proxy).await;
    let sent_to_login = |response: &crate::harness::client::HttpResponse| {
        response.status == 302
            && response
                .location()
                .is_some_and(|location| location.starts_with(MODULE))
    };

    for path in [
        "/app/static/../hub",
        "/app/static/%2e%2e/hub",
        "/app/static//../hub",
        "/app/hub",
        "/app/static",
        "/app/STATIC/a.css",
        "/app/healthcheck-admin",
        "/app/other/static/a.css",
    ] {
        let response = get(&node.url(path), &[]).await;
        assert!(
            sent_to_login(&response),
            "{path} is not public: {} {}",
            response.status,
            response.text()
        );
    }
    // A method not listed gets the normal flow (401 for what a redirect would lose).
    let put = request(http::Method::PUT, &node.url("/app/static/a.css"), &[], "x").await;
    assert_eq!(put.status, 401, "{}", put.text());
    // A login ticket on a public path is redeemed as anywhere else, never passed upstream.
    let ticket = get(&node.url("/app/static/a.css?qlikTicket=abc"), &[]).await;
    assert_eq!(ticket.status, 403, "{}", ticket.text());
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );

    // A WebSocket upgrade on a public path is not public: it needs a session.
    let upgrade = get(
        &node.url("/app/static/ws"),
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert!(
        sent_to_login(&upgrade),
        "{} {}",
        upgrade.status,
        upgrade.text()
    );

    // The public path itself, by contrast.
    assert_eq!(get(&node.url("/app/static/a.css"), &[]).await.status, 200);
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    assert_eq!(
        get(&node.url("/app/hub"), &with_cookie(&cookie))
            .await
            .status,
        200,
        "a non-public path is served with a session"
    );
}

#[tokio::test]
async fn access_rules_restrict_public_paths() {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = AppProxy::new([upstream.node()])
        .table("[[virtual_proxies.public_paths]]\nprefix = \"/hooks/\"")
        .table("[[virtual_proxies.public_paths]]\nprefix = \"/static/\"")
        // Webhooks are POSTs: anything else on them is refused.
        .table(
            "[[virtual_proxies.access_rules]]\npath_prefix = \"/hooks/\"\nmethods = [\"POST\"]\n\
             action = \"allow\"",
        )
        .table("[[virtual_proxies.access_rules]]\npath_prefix = \"/hooks/\"\naction = \"deny\"")
        // A rule scoped to public requests: nothing under /static/private/ is served publicly.
        .table(
            "[[virtual_proxies.access_rules]]\npath_prefix = \"/static/private/\"\n\
             public = true\naction = \"deny\"",
        );
    let (control_plane, node) = start(proxy).await;

    let hook = post(&node.url("/app/hooks/github"), &[], "{}").await;
    assert_eq!(hook.status, 200, "{}", hook.text());
    let not_a_hook = get(&node.url("/app/hooks/github"), &[]).await;
    assert_eq!(not_a_hook.status, 403, "{}", not_a_hook.text());
    assert!(
        not_a_hook.text().contains("access rules"),
        "{}",
        not_a_hook.text()
    );
    let private = get(&node.url("/app/static/private/key.pem"), &[]).await;
    assert_eq!(private.status, 403, "{}", private.text());
    assert_eq!(get(&node.url("/app/static/a.css"), &[]).await.status, 200);
    assert_eq!(upstream.requests().len(), 2, "refused requests never left");
    assert_eq!(stored_sessions(&control_plane).await, 0);
}

#[tokio::test]
async fn a_bad_public_path_keeps_the_control_plane_from_starting() {
    let binary = crate::harness::processes::binary("control-plane");
    for (bad, named) in [
        (
            "prefix = \"/static/../admin\"",
            "public_paths prefix \"/static/../admin\"",
        ),
        ("prefix = \"static/\"", "must start with '/'"),
        ("prefix = \"/a//b\"", "'//'"),
        ("prefix = \"/%61\"", "percent-encoded"),
        (
            "prefix = \"/s\"\nmethods = [\"GET HEAD\"]",
            "public_paths method \"GET HEAD\"",
        ),
    ] {
        let file = std::env::temp_dir().join(format!(
            "gatehouse-public-paths-{}-{}.toml",
            std::process::id(),
            rand_suffix(bad)
        ));
        std::fs::write(
            &file,
            format!(
                "[[virtual_proxies]]\nprefix = \"app\"\n[[virtual_proxies.public_paths]]\n{bad}\n"
            ),
        )
        .expect("write the configuration");
        let output = std::process::Command::new(&binary)
            .arg("--config")
            .arg(&file)
            .arg("--check-config")
            .output()
            .expect("run the control plane");
        let _ = std::fs::remove_file(&file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{bad}: {stderr}");
        assert!(
            stderr.contains("virtual proxy \"app\"") && stderr.contains(named),
            "{bad}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    }
}

/// A file name part that tells the cases of one test apart.
fn rand_suffix(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
