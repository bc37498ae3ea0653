//! Requests whose meaning an upstream could read differently from Gatehouse never get past the
//! node: exactly one well-formed `Host` (HTTP/2: one that agrees with `:authority`), no header
//! with `_` in its name (upstreams fold `Transfer_Encoding` into `Transfer-Encoding`), no
//! client-sent forwarding or rewrite header (Gatehouse writes its own), no path spelled with
//! `;`, `%3B` or double encoding unless the virtual proxy allows it, and access rules that also
//! see the Unicode look-alikes of the paths they name.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::browser::fixtures::{AppProxy, COOKIE, seen_header, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{get, post};
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

fn anonymous(proxy: AppProxy) -> AppProxy {
    proxy.key("anonymous = \"always\"")
}

/// Sends raw bytes on a new connection; returns the status line's code and the whole answer.
async fn raw(node: &DataPlaneNode, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(node.address()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// A GET with these header lines (each `Name: value`, raw bytes), `Connection: close` added.
async fn raw_get(node: &DataPlaneNode, target: &str, lines: &[&[u8]]) -> (u16, String) {
    let mut request = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    for line in lines {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    raw(node, &request).await
}

/// `/app` followed by `path` with every non-ASCII character percent-encoded, as browsers send
/// it.
fn browser_path(path: &str) -> String {
    let mut out = String::from("/app");
    for character in path.chars() {
        if character.is_ascii() {
            out.push(character);
        } else {
            let mut buffer = [0; 4];
            for byte in character.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_request_needs_exactly_one_well_formed_host() {
    // Which hosts are the proxy's own is the public origins' business; these make the
    // well-formed hosts below acceptable, so what is refused is refused for its syntax.
    let origins = |proxy| {
        anonymous(proxy)
            .key("public_origins = [\"http://sense.example\", \"http://10.0.0.1:8080\", \"http://[::1]:8080\"]")
    };
    let (upstream, _control, node) = system(origins, "").await;
    let own = b"Host: sense.example";
    let (status, _) = raw_get(&node, "/app/hub", &[own]).await;
    assert_eq!(status, 200, "one good Host is served");

    let (status, answer) = raw_get(&node, "/app/hub", &[]).await;
    assert_eq!(status, 400, "HTTP/1.1 without Host: {answer}");
    assert!(answer.contains("no Host header"), "{answer}");
    let (status, answer) = raw_get(&node, "/app/hub", &[own, b"Host: evil.example"]).await;
    assert_eq!(status, 400, "two Host headers: {answer}");
    assert!(answer.contains("more than one Host header"), "{answer}");
    let malformed: [(&[u8], &str); 9] = [
        (b"Host: user@sense.example", "user info"),
        (b"Host: sense.example/admin", "a path"),
        (b"Host: sense.example:", "an empty port"),
        (b"Host: sense.example:99999", "a port out of range"),
        (b"Host: sense.example:8o", "a port that is not a number"),
        (b"Host: sense\xc3\xa9.example", "non-ASCII"),
        (b"Host: ", "empty"),
        (b"Host: [::1", "an unclosed IPv6 literal"),
        (b"Host: a b", "a space"),
    ];
    for (line, what) in malformed {
        let (status, answer) = raw_get(&node, "/app/hub", &[line]).await;
        assert_eq!(status, 400, "Host with {what}: {answer}");
        assert!(answer.contains("Host"), "{what}: {answer}");
    }
    // The absolute form names the authority too: it must agree with Host.
    let absolute = format!("http://{}/app/hub", node.address());
    let (status, _) = raw_get(&node, &absolute, &[b"Host: evil.example"]).await;
    assert_eq!(status, 400, "absolute-form target and Host disagree");
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the good request went on"
    );

    // HTTP/1.0 has no Host requirement.
    let (status, answer) = raw(&node, b"GET /app/hub HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{answer}");
    for good in [
        "Host: Sense.Example",
        "Host: 10.0.0.1:8080",
        "Host: [::1]:8080",
    ] {
        let (status, answer) = raw_get(&node, "/app/hub", &[good.as_bytes()]).await;
        assert_eq!(status, 200, "{good}: {answer}");
    }
}

/// An HTTP/2 (h2c, prior knowledge) GET of `/app/hub` with `:authority` and these headers.
async fn h2_get(node: &DataPlaneNode, authority: &str, headers: &[(&str, &str)]) -> u16 {
    let stream = TcpStream::connect(node.address()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder().uri(format!("http://{authority}/app/hub"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn http2_host_must_agree_with_the_authority() {
    let (upstream, _control, node) = system(anonymous, "").await;
    let own = node.address().to_string();
    assert_eq!(h2_get(&node, &own, &[]).await, 200, ":authority alone");
    assert_eq!(
        h2_get(&node, &own, &[("host", &own)]).await,
        200,
        "Host equal to :authority"
    );
    assert_eq!(
        h2_get(&node, &own, &[("host", "evil.example")]).await,
        400,
        "Host differs from :authority"
    );
    assert_eq!(
        h2_get(&node, "user@sense.example", &[]).await,
        400,
        ":authority with user info"
    );
    assert_eq!(upstream.requests().len(), 2);
}

fn header_login(proxy: AppProxy) -> AppProxy {
    proxy.table(
        "[virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"\n\
         user_directory = \"CORP\"\ntrusted_networks = [\"127.0.0.0/8\"]",
    )
}

#[tokio::test]
async fn headers_with_underscores_are_dropped_before_anything_reads_them() {
    let (upstream, control, node) = system(header_login, "").await;
    // The header-authentication header's look-alike logs nobody in, even from a trusted
    // network.
    let refused = post(&node.url("/app/hub"), &[("X_Remote_User", "admin")], "").await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(upstream.requests().is_empty());

    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    let host = node.address().to_string();
    let lines = [
        format!("Host: {host}"),
        format!("Cookie: {cookie}"),
        "X_Remote_User: admin".to_owned(),
        "Transfer_Encoding: chunked".to_owned(),
        "Content_Length: 5".to_owned(),
        "X_Qlik_User: UserDirectory=INTERNAL; UserId=sa_repository".to_owned(),
        "X_Forwarded_For: 10.9.9.9".to_owned(),
        "Some_Header: x".to_owned(),
        "X-Kept: yes".to_owned(),
    ];
    let lines: Vec<&[u8]> = lines.iter().map(|line| line.as_bytes()).collect();
    let (status, answer) = raw_get(&node, "/app/hub", &lines).await;
    assert_eq!(status, 200, "{answer}");
    let seen = upstream.requests().pop().expect("the upstream was asked");
    let names: Vec<&String> = seen["headers"].as_object().unwrap().keys().collect();
    assert!(
        names.iter().all(|name| !name.contains('_')),
        "no underscore header reached the upstream: {names:?}"
    );
    assert_eq!(seen["headers"]["x-kept"], "yes");
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some("UserDirectory=CORP; UserId=alice"),
        "the session's user, not the header's"
    );
}

/// Every forwarding and rewrite header a client might send, with a value no upstream may see.
const CLIENT_FORWARDING: [(&str, &str); 18] = [
    ("Forwarded", "for=10.6.6.6;host=evil.example;proto=https"),
    ("X-Forwarded-For", "10.6.6.6"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Forwarded-Server", "evil.example"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Real-IP", "10.6.6.6"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Forwarded-Method", "DELETE"),
    ("X-Original-URL", "/admin"),
    // nginx's auth_request convention: an upstream behind its own nginx reads it as the path.
    ("X-Original-URI", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Original-Method", "DELETE"),
];

fn assert_no_client_value(seen: &Value) {
    for (name, value) in CLIENT_FORWARDING {
        let name = name.to_ascii_lowercase();
        let reached = match &seen["headers"][&name] {
            Value::String(seen) => seen.contains(value),
            Value::Array(values) => values
                .iter()
                .any(|seen| seen.as_str().is_some_and(|seen| seen.contains(value))),
            _ => false,
        };
        assert!(!reached, "the client's {name} reached the upstream: {seen}");
    }
}

#[tokio::test]
async fn client_forwarding_headers_are_replaced_by_gatehouses_own() {
    let (upstream, _control, node) = system(anonymous, "").await;
    let response = get(&node.url("/app/hub"), &CLIENT_FORWARDING).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_no_client_value(&seen);
    assert_eq!(seen["method"], "GET");
    let host = node.address().to_string();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], host);
    assert_eq!(
        seen["headers"]["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{host}\"")
    );
    for gone in [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-real-ip",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-http-method-override",
        "x-method-override",
        "x-http-method",
        "x-original-method",
    ] {
        assert!(seen["headers"].get(gone).is_none(), "{gone}: {seen}");
    }
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_chain_and_gatehouse_appends_the_peer() {
    let (_upstream, _control, node) =
        system(anonymous, "trusted_proxies = [\"127.0.0.0/8\"]").await;
    let host = node.address().to_string();
    let response = get(
        &node.url("/app/hub"),
        &[
            ("X-Forwarded-For", "203.0.113.9, 198.51.100.2"),
            ("Forwarded", "for=203.0.113.9;proto=https"),
            ("X-Real-IP", "10.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        "203.0.113.9, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(
        seen["headers"]["forwarded"],
        format!("for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"{host}\"")
    );
    assert!(seen["headers"].get("x-real-ip").is_none());
    assert_eq!(seen["headers"]["x-forwarded-host"], host);

    // A peer outside the trusted networks gets its chain dropped.
    let (_upstream, _control, node) = system(anonymous, "trusted_proxies = [\"10.0.0.0/8\"]").await;
    let response = get(
        &node.url("/app/hub"),
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9"),
        ],
    )
    .await;
    let seen = response.json();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(
        !seen_header(&seen, "forwarded")
            .unwrap_or_default()
            .contains("203.0.113.9"),
        "{seen}"
    );
}

/// Spellings Tomcat, Jetty, IIS or a second decoding step read as another path.
const AMBIGUOUS: [&str; 8] = [
    "/app/hub;jsessionid=1",
    "/app/admin;/x",
    "/app/x/..;/admin",
    "/app/hub%3Bx",
    "/app/hub%3bx",
    "/app/%252e%252e/admin",
    "/app/%2561dmin",
    "/app/x/%25%32%65",
];

#[tokio::test]
async fn ambiguous_path_spellings_are_400_unless_the_proxy_allows_them() {
    let (upstream, _control, node) = system(anonymous, "").await;
    for path in AMBIGUOUS {
        let response = get(&node.url(path), &[]).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // A literal percent sign not followed by hex is ordinary.
    assert_eq!(get(&node.url("/app/100%25"), &[]).await.status, 200);

    let (upstream, _control, node) = system(
        |proxy| anonymous(proxy).key("allow_path_parameters = true"),
        "",
    )
    .await;
    let response = get(&node.url("/app/hub;jsessionid=1"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["path"], "/hub;jsessionid=1");
    assert_eq!(get(&node.url("/app/hub%3Bx"), &[]).await.status, 200);
    // Still refused: a dot segment hidden behind a parameter, and double encoding.
    for path in [
        "/app/x/..;/admin",
        "/app/x/.;x/admin",
        "/app/;x/admin",
        "/app/%2561dmin",
    ] {
        assert_eq!(get(&node.url(path), &[]).await.status, 400, "{path}");
    }
    assert_eq!(upstream.requests().len(), 2);

    let (_upstream, _control, node) = system(
        |proxy| anonymous(proxy).key("allow_double_encoding = true"),
        "",
    )
    .await;
    let response = get(&node.url("/app/%2561dmin"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["path"], "/%2561dmin");
    assert_eq!(get(&node.url("/app/hub;x"), &[]).await.status, 400);
}

#[tokio::test]
async fn unicode_look_alikes_of_a_denied_path_are_denied() {
    let rules = "[[virtual_proxies.access_rules]]\npath_prefix = \"/admin\"\naction = \"deny\"\n\
                 [[virtual_proxies.access_rules]]\npath_prefix = \"/settings\"\naction = \"deny\"\n\
                 [[virtual_proxies.access_rules]]\npath_prefix = \"/kpi\"\naction = \"deny\"";
    let (upstream, control, node) = system(|proxy| proxy.table(rules), "").await;
    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    let mut leaked = Vec::new();
    for path in [
        "/ａｄｍｉｎ/x",   // fullwidth letters
        "/ＡＤＭＩＮ",     // fullwidth capitals
        "/／ａｄｍｉｎ",   // a fullwidth solidus too
        "/adm\u{131}n",    // dotless i, which Java upper-cases to I
        "/\u{17F}ettings", // long s, which Java folds to s
        "/\u{212A}pi",     // the Kelvin sign
        "/\u{1D41A}dmin",  // mathematical bold a
        "/x/．．/admin",   // fullwidth full stops as a dot segment
    ] {
        let response = get(&node.url(&browser_path(path)), &with_cookie(&cookie)).await;
        if response.status != 403 {
            leaked.push(format!("{path} -> {}", response.status));
        }
    }
    assert!(
        leaked.is_empty(),
        "look-alikes got past the deny rules: {leaked:?}; upstream saw {:?}",
        upstream
            .requests()
            .iter()
            .map(|request| request["path"].clone())
            .collect::<Vec<_>>()
    );
    assert!(upstream.requests().is_empty());

    // Ordinary UTF-8 paths are served, spelled as the browser sent them.
    let response = get(
        &node.url(&browser_path("/café/menü")),
        &with_cookie(&cookie),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["path"], "/caf%C3%A9/men%C3%BC");
    let response = get(
        &node.url(&browser_path("/東京/admin")),
        &with_cookie(&cookie),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn an_allow_rule_matched_only_through_folding_grants_nothing() {
    // Everything but /public is denied; a look-alike of /public is not /public.
    let rules = "[[virtual_proxies.access_rules]]\npath_prefix = \"/public\"\naction = \"allow\"\n\
                 [[virtual_proxies.access_rules]]\npath_prefix = \"/\"\naction = \"deny\"";
    let (_upstream, control, node) = system(|proxy| proxy.table(rules), "").await;
    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    let allowed = get(&node.url("/app/public/x"), &with_cookie(&cookie)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let look_alike = get(
        &node.url(&browser_path("/ｐｕｂｌｉｃ/x")),
        &with_cookie(&cookie),
    )
    .await;
    assert_eq!(look_alike.status, 403, "{}", look_alike.text());
}
