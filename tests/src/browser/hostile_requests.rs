//! Hostile input gets its documented status and never a panic: oversized requests (414,
//! 431), slow and idle connections (cut), too many connections (503), malformed bytes in
//! cookies, tickets, header-auth values and paths (absent or 400), open-redirect tricks
//! (refused); and the cookie attributes of each mode, and the CSRF token on WebSockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::browser::fixtures::{AppProxy, COOKIE, PORTAL, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{self, get, websocket};
use crate::harness::upstream::EchoUpstream;
use crate::harness::{ControlPlane, DataPlaneNode};

/// An echo upstream behind virtual proxy "app" (shaped by `configure`), and one node.
async fn system(
    configure: impl FnOnce(AppProxy) -> AppProxy,
    node_toml: &str,
) -> (EchoUpstream, ControlPlane, DataPlaneNode) {
    let upstream = EchoUpstream::start("engine").await;
    let proxy = configure(AppProxy::new([upstream.node()]));
    let control = ControlPlane::start(&proxy.toml()).await;
    let node = DataPlaneNode::start_with(&control, node_toml).await;
    (upstream, control, node)
}

/// Sends raw bytes and returns what came back before the server closed or `wait` passed.
async fn raw(node: &DataPlaneNode, request: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(node.address()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    answer
}

fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn oversized_requests_get_414_and_431() {
    let (_upstream, _control, node) = system(|proxy| proxy, "").await;
    let long_uri = format!("/app/{}", "a".repeat(9000));
    assert_eq!(get(&node.url(&long_uri), &[]).await.status, 414);
    let long_line = "v".repeat(9000);
    assert_eq!(
        get(&node.url("/app/hub"), &[("x-long", &long_line)])
            .await
            .status,
        431
    );
    // Every line short, all of them together too long: hyper's own limit.
    let mut request = b"GET /app/hub HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for index in 0..4 {
        request.extend_from_slice(format!("x-pad-{index}: {}\r\n", "p".repeat(5000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    assert_eq!(
        status_of(&raw(&node, &request, Duration::from_secs(3)).await),
        431
    );
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let (_upstream, _control, node) = system(
        |proxy| proxy,
        "[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"500ms\"",
    )
    .await;
    // Slowloris: the head never completes.
    let started = std::time::Instant::now();
    raw(
        &node,
        b"GET /app/hub HTTP/1.1\r\nHost: localhost\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a slow head is cut"
    );
    // A connection that sends nothing at all.
    let started = std::time::Instant::now();
    raw(&node, b"", Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "an idle connection is closed"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_gets_only_the_header_timeout() {
    // The idle timeout is far away: only the header timeout can close this connection.
    let (_upstream, _control, node) = system(
        |proxy| proxy,
        "[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"60s\"",
    )
    .await;
    let started = std::time::Instant::now();
    raw(&node, b"", Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a silent connection is closed after the header timeout, not the idle timeout"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    let (_upstream, _control, node) = system(
        |proxy| proxy.key("anonymous = \"always\""),
        "[limits]\nmax_connections = 2",
    )
    .await;
    let _first = TcpStream::connect(node.address()).await.unwrap();
    let _second = TcpStream::connect(node.address()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw(
        &node,
        b"GET /app/hub HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&answer), 503);
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    drop((_first, _second));
    crate::harness::eventually(
        "room again once connections close",
        Duration::from_secs(5),
        || async {
            let answer = raw(
                &node,
                b"GET /app/hub HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                Duration::from_secs(3),
            )
            .await;
            (status_of(&answer) != 503).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_bytes_are_absent_or_400() {
    let (upstream, _control, node) = system(
        |proxy| proxy.table(
            "[virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"\nuser_directory = \"CORP\"\ntrusted_networks = [\"127.0.0.0/8\"]",
        ),
        "",
    )
    .await;
    // A cookie that is not text is no cookie: a GET goes to log in, a POST gets 401.
    let mut request = b"GET /app/hub HTTP/1.1\r\nHost: localhost\r\nCookie: X-Qlik-Session-app=\xff\xfe\r\nConnection: close\r\n\r\n".to_vec();
    assert_eq!(
        status_of(&raw(&node, &request, Duration::from_secs(3)).await),
        302
    );
    request = b"POST /app/hub HTTP/1.1\r\nHost: localhost\r\nCookie: X-Qlik-Session-app=\xff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    assert_eq!(
        status_of(&raw(&node, &request, Duration::from_secs(3)).await),
        401
    );
    // A header-auth value that is not ASCII is no user.
    request = b"POST /app/hub HTTP/1.1\r\nHost: localhost\r\nX-Remote-User: \xc3\xa9\xff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    assert_eq!(
        status_of(&raw(&node, &request, Duration::from_secs(3)).await),
        401
    );
    // Tickets with bad percent-encoding or bytes that are not UTF-8.
    for ticket in ["%ZZ", "%C3%28", "a%00b", "%3Cscript%3E"] {
        let response = get(&node.url(&format!("/app/hub?qlikTicket={ticket}")), &[]).await;
        assert_eq!(response.status, 400, "ticket {ticket}");
    }
    // Paths that could mean something else to a Windows upstream.
    for path in ["/app/a%2Fb", "/app/a%5Cb", "/app/%2e%2e/%2e%2e/x"] {
        assert_eq!(get(&node.url(path), &[]).await.status, 400, "{path}");
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing malformed reached the upstream"
    );
}

#[tokio::test]
async fn open_redirect_tricks_are_refused() {
    let (_upstream, _control, node) = system(|proxy| proxy, "").await;
    for target in [
        "//evil.example/",
        "https://evil.example/",
        "\\\\evil.example",
        "/%2F%2Fevil.example",
        &format!("https://{PORTAL}@evil.example/"),
        "HTTPS://EVIL.example/",
        "https://évil.example/",
        "javascript:alert(1)",
    ] {
        let url = node.url(&format!("/app/hub?reloadUri={}", client::encode(target)));
        let response = get(&url, &[]).await;
        assert_eq!(response.status, 400, "reloadUri {target}");
    }
    let allowed = node.url(&format!(
        "/app/hub?reloadUri={}",
        client::encode(&format!("https://{PORTAL}/x"))
    ));
    assert_eq!(get(&allowed, &[]).await.status, 302);
}

async fn first_cookie(node: &DataPlaneNode) -> String {
    let response = get(&node.url("/app/hub"), &[]).await;
    response
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.contains("X-Qlik-Session-app="))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", response.set_cookies()))
}

#[tokio::test]
async fn cookie_attributes_follow_the_virtual_proxy() {
    let anonymous = |proxy: AppProxy| proxy.key("anonymous = \"always\"");
    let (_u, _c, node) = system(anonymous, "").await;
    let cookie = first_cookie(&node).await;
    assert!(cookie.starts_with(&format!("{COOKIE}=")), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Secure")
    );

    let (_u, _c, node) = system(|p| anonymous(p).key("same_site = \"strict\""), "").await;
    assert!(first_cookie(&node).await.contains("SameSite=Strict"));

    // None needs Secure: over plain HTTP it falls back to Lax.
    let (_u, _c, node) = system(|p| anonymous(p).key("same_site = \"none\""), "").await;
    assert!(first_cookie(&node).await.contains("SameSite=Lax"));

    let (_u, _c, node) = system(|p| anonymous(p).key("cookie_host_prefix = true"), "").await;
    let cookie = first_cookie(&node).await;
    assert!(cookie.starts_with(&format!("__Host-{COOKIE}=")), "{cookie}");
    assert!(cookie.contains("Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"));

    let (_u, _c, node) = system(|p| anonymous(p).key("cookie_domain = \"example.com\""), "").await;
    assert!(first_cookie(&node).await.contains("Domain=example.com"));
}

#[tokio::test]
async fn websocket_upgrades_can_require_the_csrf_token() {
    let (_upstream, control, node) = system(
        |proxy| proxy.key("websocket_requires_csrf_token = true"),
        "",
    )
    .await;
    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    let refused = websocket(&node.ws_url("/app/ws"), &with_cookie(&cookie)).await;
    assert_eq!(refused.err(), Some(403), "no token, no upgrade");

    let issued = get(&node.url("/app/qps/csrftoken"), &with_cookie(&cookie)).await;
    assert_eq!(issued.status, 200);
    let token = issued
        .header("qlik-csrf-token")
        .expect("token header")
        .to_owned();
    let wrong = websocket(
        &node.ws_url("/app/ws"),
        &[("cookie", &cookie), ("qlik-csrf-token", "0000")],
    )
    .await;
    assert_eq!(wrong.err(), Some(403));
    assert!(
        websocket(
            &node.ws_url("/app/ws"),
            &[("cookie", &cookie), ("qlik-csrf-token", &token)]
        )
        .await
        .is_ok()
    );
    let by_query = node.ws_url(&format!("/app/ws?qlik-csrf-token={token}"));
    assert!(websocket(&by_query, &with_cookie(&cookie)).await.is_ok());

    assert_eq!(
        get(&node.url("/app/qps/csrftoken"), &[]).await.status,
        401,
        "no session, no token"
    );
}
