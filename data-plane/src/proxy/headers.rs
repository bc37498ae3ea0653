//! What an upstream receives: hop-by-hop headers removed, client-supplied identity,
//! forwarding and rewrite headers and the session cookie stripped, the user's identity
//! injected (none for a request on a public path), Gatehouse's own forwarding headers added.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue};

use crate::auth::cookie;
use crate::cache::CachedSession;
use crate::identity_headers::{self, insert_built};
use crate::virtual_proxy::VirtualProxy;

const HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
];
const UPGRADE: HeaderName = HeaderName::from_static("upgrade");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Headers besides `Forwarded` and `X-Forwarded-*` through which upstreams and the frameworks
/// they run on take a client's address, the URL they serve, or the method, from whoever sent
/// the request: a client may never set them.
const CLIENT_FORWARDING: [HeaderName; 11] = [
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    // IIS URL Rewrite, Symfony and Zend read the path to serve from these; an upstream behind
    // its own nginx (auth_request's convention) from X-Original-URI.
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-rewrite-url"),
    // Frameworks read the method from these; an access rule on DELETE must not be a GET.
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-original-method"),
];

/// How a request reached this node, as the forwarding headers tell the upstream.
#[derive(Debug, Clone, Copy)]
pub struct Hop {
    /// The address the connection came from.
    pub peer: SocketAddr,
    /// Over TLS.
    pub secure: bool,
    /// The peer is one of the node's `trusted_proxies`: the `X-Forwarded-For` and
    /// `Forwarded` it sent are kept, and this hop is appended to them.
    pub trusted_proxy: bool,
    /// The request is a WebSocket upgrade: `Upgrade` is passed on, not dropped as
    /// hop-by-hop.
    pub websocket: bool,
}

/// Whether `peer` is in one of the `trusted` networks (IPv4-mapped addresses as IPv4).
pub fn is_trusted_proxy(trusted: &[ipnet::IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|network| network.contains(&peer))
}

/// Drops every request header whose name holds `_`, as nginx does by default
/// (`underscores_in_headers off`): CGI, PHP, WSGI and Rack upstreams fold `_` and `-` into
/// one, so `Transfer_Encoding`, `Content_Length` or `X_Remote_User` would stand in for the
/// framing and authentication headers that Gatehouse reads under their real names.
pub fn drop_underscored(headers: &mut HeaderMap) {
    remove_where(headers, has_underscore);
}

fn has_underscore(name: &HeaderName) -> bool {
    name.as_str().contains('_')
}

/// `Forwarded`, `X-Forwarded-*` and the like: never taken from the client as sent.
fn is_forwarding(name: &HeaderName) -> bool {
    *name == FORWARDED
        || name.as_str().starts_with("x-forwarded-")
        || CLIENT_FORWARDING.contains(name)
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named = connection_named(headers);
    remove_where(headers, |name| is_hop_by_hop(name, &named, keep_upgrade));
}

/// The headers a `Connection` header names, besides the standard hop-by-hop ones (usually
/// there are none: browsers send `keep-alive`, so nothing is allocated).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, named: &[HeaderName], keep_upgrade: bool) -> bool {
    if *name == UPGRADE {
        return !keep_upgrade;
    }
    HOP_BY_HOP.contains(name) || named.contains(name)
}

/// Removes every header `doomed` picks, looking at each name present once: removing a list
/// of names one by one costs a hash lookup each, present or not, on every request.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| doomed(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Rewrites response headers from the upstream: hop-by-hop headers go, and so does any
/// `Set-Cookie` naming a session cookie (an upstream must not plant a session).
pub fn from_upstream(headers: &mut HeaderMap, session_cookies: &[String]) {
    remove_hop_by_hop(headers, false);
    if headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .any(|value| cookie::sets_any(value, session_cookies))
    {
        let kept: Vec<HeaderValue> = headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter(|value| !cookie::sets_any(value, session_cookies))
            .cloned()
            .collect();
        headers.remove(http::header::SET_COOKIE);
        for value in kept {
            headers.append(http::header::SET_COOKIE, value);
        }
    }
}

/// Rewrites request headers for the upstream; `session` is the user's, `None` on a public
/// path (no identity header at all then).
pub fn for_upstream(
    headers: &mut HeaderMap,
    proxy: &VirtualProxy,
    session: Option<&CachedSession>,
    hop: Hop,
    session_cookies: &[String],
) {
    let websocket = hop.websocket;
    // A body framed by Transfer-Encoding has no meaningful Content-Length; keeping it would
    // make the upstream read the wrong amount.
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        headers.remove(http::header::CONTENT_LENGTH);
    }
    let named = connection_named(headers);
    let header_login = proxy
        .header_authentication
        .as_ref()
        .map(|header| &header.header);
    let chain = hop.trusted_proxy.then(|| Chain::of(headers));
    // The client's own identity and forwarding headers are never passed on.
    remove_where(headers, |name| {
        is_hop_by_hop(name, &named, websocket)
            || identity_headers::is_identity_header(name.as_str())
            || proxy.identity.assertion_header() == Some(name)
            || header_login == Some(name)
            // The JWT is the client's credential for this proxy, consumed here like the
            // session cookie; upstreams get the identity headers instead.
            || (proxy.jwt_authentication && *name == http::header::AUTHORIZATION)
            || is_forwarding(name)
            || has_underscore(name)
    });
    // The client's Kerberos token is for the proxy, not the upstream.
    if proxy.kerberos.is_some()
        && headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|value| {
                value
                    .as_bytes()
                    .get(..10)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"negotiate "))
            })
    {
        headers.remove(http::header::AUTHORIZATION);
    }
    if websocket {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    cookie::strip(headers, session_cookies);
    add_forwarding(headers, hop, chain.as_ref());
    if let Some(session) = session {
        identity_headers::inject(headers, &proxy.identity, session, hop.secure);
    }
}

/// What a trusted proxy in front said about the hops before it.
#[derive(Debug, Default)]
struct Chain {
    forwarded_for: String,
    forwarded: String,
}

impl Chain {
    /// Every `X-Forwarded-For` and `Forwarded` line, each kind joined with `, ` (lines that
    /// are not text are left out).
    fn of(headers: &HeaderMap) -> Self {
        let joined = |name: &HeaderName| {
            let mut out = String::new();
            for value in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
                let value = value.trim();
                if value.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push_str(value);
            }
            out
        };
        Self {
            forwarded_for: joined(&X_FORWARDED_FOR),
            forwarded: joined(&FORWARDED),
        }
    }
}

/// `X-Forwarded-For` (the peer, after a trusted proxy's chain), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and their RFC 7239 equivalent, `Forwarded: for=..;proto=..;host=..`.
fn add_forwarding(headers: &mut HeaderMap, hop: Hop, chain: Option<&Chain>) {
    let proto = if hop.secure { "https" } else { "http" };
    let host = headers.get(HOST).cloned();
    insert_built(headers, X_FORWARDED_FOR, |out| {
        if let Some(chain) = chain.filter(|chain| !chain.forwarded_for.is_empty()) {
            out.push_str(&chain.forwarded_for);
            out.push_str(", ");
        }
        push_ip(out, hop.peer.ip());
    });
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    insert_built(headers, FORWARDED, |out| {
        if let Some(chain) = chain.filter(|chain| !chain.forwarded.is_empty()) {
            out.push_str(&chain.forwarded);
            out.push_str(", ");
        }
        out.push_str("for=");
        let ip = hop.peer.ip().to_canonical();
        if ip.is_ipv6() {
            out.push_str("\"[");
            push_ip(out, ip);
            out.push_str("]\"");
        } else {
            push_ip(out, ip);
        }
        out.push_str(";proto=");
        out.push_str(proto);
        if let Some(host) = host.as_ref().and_then(|host| host.to_str().ok()) {
            push_forwarded_host(out, host);
        }
    });
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// `;host=` with the host as a token, or quoted when it holds `:` or `[` (a port, an IPv6
/// literal); left out if it holds anything a quoted string would need escaped.
fn push_forwarded_host(out: &mut String, host: &str) {
    let is_token_char =
        |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    if host.is_empty()
        || !host
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
    {
        return;
    }
    out.push_str(";host=");
    if host.bytes().all(is_token_char) {
        out.push_str(host);
    } else {
        out.push('"');
        out.push_str(host);
        out.push('"');
    }
}

/// The client's address as `X-Forwarded-For` carries it (an IPv4-mapped IPv6 address as
/// IPv4). IPv4 is written digit by digit: the formatting machinery cost 2% of a request.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        v6 => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use gatehouse_proto::v1 as pb;

    use crate::identity_headers::parse_qlik_user;

    fn proxy(preset: pb::IdentityPreset) -> VirtualProxy {
        VirtualProxy::from_proto(
            &pb::VirtualProxy {
                prefix: "sales".into(),
                cookie_name: "X-Qlik-Session-sales".into(),
                identity_headers: Some(pb::IdentityHeaders {
                    preset: preset.into(),
                }),
                proxy_id: "gatehouse".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap()
    }

    fn session() -> CachedSession {
        CachedSession {
            handle: "h".into(),
            virtual_proxy: "sales".into(),
            user_directory: "CORP".into(),
            user_id: "alice smith".into(),
            attributes: vec![
                ("group".into(), "a;b".into()),
                ("group".into(), "admins".into()),
            ],
            absolute_expiry: SystemTime::now(),
            assertion: Default::default(),
        }
    }

    fn hop(peer: SocketAddr, secure: bool) -> Hop {
        Hop {
            peer,
            secure,
            trusted_proxy: false,
            websocket: false,
        }
    }

    fn cookies() -> Vec<String> {
        vec!["X-Qlik-Session-sales".into(), "X-Qlik-Session".into()]
    }

    fn client_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-qlik-user",
            HeaderValue::from_static("UserDirectory=EVIL; UserId=root"),
        );
        headers.insert("x-gatehouse-user-id", HeaderValue::from_static("root"));
        headers.insert(
            "x_qlik_user",
            HeaderValue::from_static("UserDirectory=EVIL"),
        );
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        headers.insert(
            "cookie",
            HeaderValue::from_static("X-Qlik-Session-sales=secret; other=1"),
        );
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("hop"));
        headers.insert("host", HeaderValue::from_static("sense.example.com"));
        headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        headers
    }

    #[test]
    fn a_client_sent_assertion_is_removed_even_when_none_can_be_signed() {
        // The proxy sends its assertion under its own name, but holds no key yet.
        let signing = VirtualProxy::from_proto(
            &pb::VirtualProxy {
                prefix: "sales".into(),
                identity_assertion: Some(pb::IdentityAssertion {
                    header: "x-sales-identity".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        for proxy in [&signing, &proxy(pb::IdentityPreset::Qlik)] {
            let mut headers = client_headers();
            headers.insert("x-gatehouse-assertion", HeaderValue::from_static("forged"));
            headers.insert("x-sales-identity", HeaderValue::from_static("forged"));
            for_upstream(
                &mut headers,
                proxy,
                Some(&session()),
                hop(peer, false),
                &cookies(),
            );
            assert!(!headers.contains_key("x-gatehouse-assertion"));
            let own = std::ptr::eq(proxy, &signing);
            assert_eq!(headers.contains_key("x-sales-identity"), !own, "{own}");
        }
    }

    #[test]
    fn client_addresses_are_written_as_the_standard_library_writes_them() {
        let addresses = [
            "0.0.0.0",
            "9.10.99.100",
            "192.0.2.7",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ];
        for address in addresses {
            let ip: std::net::IpAddr = address.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, address);
        }
        let mut mapped = String::new();
        push_ip(&mut mapped, "::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, "10.0.0.1");
    }

    #[test]
    fn a_public_request_reaches_the_upstream_with_no_identity_at_all() {
        for preset in [pb::IdentityPreset::Qlik, pb::IdentityPreset::Generic] {
            let mut headers = client_headers();
            headers.insert("x-qlik-security", HeaderValue::from_static("group=admins"));
            headers.insert("x-qlik-virtual-proxy-prefix", HeaderValue::from_static("x"));
            let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
            for_upstream(
                &mut headers,
                &proxy(preset),
                None,
                hop(peer, false),
                &cookies(),
            );
            let identity: Vec<_> = headers
                .keys()
                .filter(|name| identity_headers::is_identity_header(name.as_str()))
                .collect();
            assert!(identity.is_empty(), "{preset:?}: {identity:?}");
            assert_eq!(headers["cookie"], "other=1");
            assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_ipv4_address_is_written_like_display(octets in proptest::array::uniform4(0u8..)) {
            let ip = std::net::IpAddr::from(octets);
            let mut out = String::new();
            push_ip(&mut out, ip);
            proptest::prop_assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn identity_headers_follow_the_connection_and_the_preset() {
        let user = session();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let qlik = proxy(pb::IdentityPreset::Qlik);
        let generic = proxy(pb::IdentityPreset::Generic);
        let headers_for = |proxy: &VirtualProxy, secure: bool| {
            let mut headers = client_headers();
            for_upstream(
                &mut headers,
                proxy,
                Some(&user),
                hop(peer, secure),
                &cookies(),
            );
            headers
        };
        let plain = headers_for(&qlik, false);
        assert!(
            plain["x-qlik-security"]
                .to_str()
                .unwrap()
                .starts_with("SecureRequest=false")
        );
        assert_eq!(headers_for(&qlik, false), plain);
        let tls = headers_for(&qlik, true);
        assert!(
            tls["x-qlik-security"]
                .to_str()
                .unwrap()
                .starts_with("SecureRequest=true")
        );
        let other = headers_for(&generic, true);
        assert_eq!(other["x-gatehouse-user-id"], "alice%20smith");
        assert!(other.get("x-qlik-user").is_none());
        assert_eq!(headers_for(&qlik, true)["x-qlik-user"], tls["x-qlik-user"]);
    }

    #[test]
    fn the_qlik_preset_replaces_client_identity_and_hides_the_cookie() {
        let mut headers = client_headers();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        for_upstream(
            &mut headers,
            &proxy(pb::IdentityPreset::Qlik),
            Some(&session()),
            hop(peer, false),
            &cookies(),
        );
        assert_eq!(
            headers["x-qlik-user"],
            "UserDirectory=CORP; UserId=alice%20smith"
        );
        assert_eq!(
            headers["x-qlik-security"],
            "SecureRequest=false; Context=AppAccess; group=a%3Bb; group=admins"
        );
        assert_eq!(headers["x-qlik-virtual-proxy-prefix"], "sales");
        assert_eq!(headers["x-qlik-proxyid"], "ProxyId=gatehouse; Prefix=sales");
        assert!(headers.get("x-gatehouse-user-id").is_none());
        assert_eq!(headers["cookie"], "other=1");
        assert!(headers.get("x_qlik_user").is_none());
        assert!(headers.get("x-private").is_none() && headers.get("connection").is_none());
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "sense.example.com");
        assert_eq!(headers["traceparent"], "00-abc-def-01");
    }

    proptest::proptest! {
        #[test]
        fn qlik_user_round_trips(directory in "\\PC{1,40}", id in "\\PC{1,40}") {
            let mut headers = HeaderMap::new();
            let user = CachedSession {
                user_directory: directory.clone(),
                user_id: id.clone(),
                ..session()
            };
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            for_upstream(&mut headers, &proxy(pb::IdentityPreset::Qlik), Some(&user), hop(peer, false), &cookies());
            let header = headers["x-qlik-user"].to_str().unwrap();
            proptest::prop_assert_eq!(parse_qlik_user(header), Some((directory, id)));
        }

        #[test]
        fn identity_headers_are_always_valid_header_values(value in "\\PC{0,60}") {
            let mut headers = HeaderMap::new();
            let user = CachedSession {
                user_id: value.clone(),
                attributes: vec![(value.clone(), value)],
                ..session()
            };
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            for_upstream(&mut headers, &proxy(pb::IdentityPreset::Qlik), Some(&user), hop(peer, false), &cookies());
            proptest::prop_assert!(headers.contains_key("x-qlik-user"));
            proptest::prop_assert!(headers.contains_key("x-qlik-security"));
        }
    }

    #[test]
    fn the_generic_preset_uses_its_own_headers() {
        let mut headers = client_headers();
        let peer: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        for_upstream(
            &mut headers,
            &proxy(pb::IdentityPreset::Generic),
            Some(&session()),
            hop(peer, true),
            &cookies(),
        );
        assert_eq!(headers["x-gatehouse-user-id"], "alice%20smith");
        assert_eq!(
            headers["x-gatehouse-attributes"],
            "group=a%3Bb; group=admins"
        );
        assert!(headers.get("x-qlik-user").is_none());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
    }

    fn forwarding_client_headers() -> HeaderMap {
        let mut headers = client_headers();
        for (name, value) in [
            ("forwarded", "for=10.6.6.6"),
            ("x-forwarded-for", "10.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/evil"),
            ("x-real-ip", "10.6.6.6"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("transfer_encoding", "chunked"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers.append("x-forwarded-for", HeaderValue::from_static("10.7.7.7"));
        headers
    }

    #[test]
    fn gatehouse_writes_the_forwarding_headers_itself() {
        let mut headers = forwarding_client_headers();
        let peer: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        for_upstream(
            &mut headers,
            &proxy(pb::IdentityPreset::Qlik),
            Some(&session()),
            hop(peer, true),
            &cookies(),
        );
        assert_eq!(headers["x-forwarded-for"], "2001:db8::7");
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "sense.example.com");
        assert_eq!(
            headers["forwarded"],
            "for=\"[2001:db8::7]\";proto=https;host=sense.example.com"
        );
        for gone in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
            "x-original-url",
            "x-http-method-override",
            "transfer_encoding",
        ] {
            assert!(headers.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn a_trusted_proxys_chain_is_kept_and_this_hop_appended() {
        let mut headers = forwarding_client_headers();
        headers.insert("host", HeaderValue::from_static("sense.example.com:8443"));
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let trusted = Hop {
            trusted_proxy: true,
            ..hop(peer, false)
        };
        for_upstream(
            &mut headers,
            &proxy(pb::IdentityPreset::Qlik),
            Some(&session()),
            trusted,
            &cookies(),
        );
        assert_eq!(headers["x-forwarded-for"], "10.6.6.6, 10.7.7.7, 10.0.0.2");
        assert_eq!(
            headers["forwarded"],
            "for=10.6.6.6, for=10.0.0.2;proto=http;host=\"sense.example.com:8443\""
        );
        assert!(headers.get("x-real-ip").is_none() && headers.get("x-forwarded-port").is_none());
        assert_eq!(headers["x-forwarded-host"], "sense.example.com:8443");
    }

    #[test]
    fn trusted_proxies_are_matched_by_network() {
        let networks: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted_proxy(&networks, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted_proxy(
            &networks,
            "::ffff:10.1.2.3".parse().unwrap()
        ));
        assert!(!is_trusted_proxy(&networks, "192.0.2.1".parse().unwrap()));
        assert!(!is_trusted_proxy(&[], "10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn underscored_headers_are_dropped() {
        let mut headers = forwarding_client_headers();
        headers.insert("content_length", HeaderValue::from_static("5"));
        drop_underscored(&mut headers);
        assert!(headers.keys().all(|name| !name.as_str().contains('_')));
        assert_eq!(headers["x-private"], "hop");
    }
}
