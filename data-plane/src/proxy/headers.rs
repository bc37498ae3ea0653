//! What an upstream receives: hop-by-hop headers removed, client-supplied identity headers
//! and the session cookie stripped, the user's identity injected, forwarding headers added.

use std::net::SocketAddr;

use http::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::auth::cookie;
use crate::cache::CachedSession;
use crate::vproxy::{IdentityPreset, VirtualProxy};

/// URL-encoding for identity values: everything but RFC 3986 unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

const X_QLIK_USER: HeaderName = HeaderName::from_static("x-qlik-user");
const X_QLIK_SECURITY: HeaderName = HeaderName::from_static("x-qlik-security");
const X_QLIK_PROXYID: HeaderName = HeaderName::from_static("x-qlik-proxyid");
const X_QLIK_VIRTUAL_PROXY_PREFIX: HeaderName =
    HeaderName::from_static("x-qlik-virtual-proxy-prefix");
const X_GATEHOUSE_USER_DIRECTORY: HeaderName =
    HeaderName::from_static("x-gatehouse-user-directory");
const X_GATEHOUSE_USER_ID: HeaderName = HeaderName::from_static("x-gatehouse-user-id");
const X_GATEHOUSE_ATTRIBUTES: HeaderName = HeaderName::from_static("x-gatehouse-attributes");
const X_GATEHOUSE_VIRTUAL_PROXY: HeaderName = HeaderName::from_static("x-gatehouse-virtual-proxy");

/// Identity headers of both presets: never accepted from a client.
pub const IDENTITY_HEADERS: [HeaderName; 8] = [
    X_QLIK_USER,
    X_QLIK_SECURITY,
    X_QLIK_PROXYID,
    X_QLIK_VIRTUAL_PROXY_PREFIX,
    X_GATEHOUSE_USER_DIRECTORY,
    X_GATEHOUSE_USER_ID,
    X_GATEHOUSE_ATTRIBUTES,
    X_GATEHOUSE_VIRTUAL_PROXY,
];

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

/// Rewrites request headers for the upstream.
pub fn for_upstream(
    headers: &mut HeaderMap,
    proxy: &VirtualProxy,
    session: &CachedSession,
    peer: SocketAddr,
    secure: bool,
    websocket: bool,
    session_cookies: &[String],
) {
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
    // The client's own identity and forwarding headers are never passed on.
    remove_where(headers, |name| {
        is_hop_by_hop(name, &named, websocket)
            || IDENTITY_HEADERS.contains(name)
            || header_login == Some(name)
            // The JWT is the client's credential for this proxy, consumed here like the
            // session cookie; upstreams get the identity headers instead.
            || (proxy.jwt_authentication && *name == http::header::AUTHORIZATION)
            || *name == X_FORWARDED_HOST
            || is_identity_lookalike(name)
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

    let earlier = headers.get(&X_FORWARDED_FOR).cloned();
    insert_built(headers, X_FORWARDED_FOR, |out| {
        if let Some(earlier) = earlier.as_ref().and_then(|value| value.to_str().ok()) {
            out.push_str(earlier);
            out.push_str(", ");
        }
        push_ip(out, peer.ip());
    });
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if secure { "https" } else { "http" }),
    );
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    inject_identity(headers, proxy, session, secure);
}

/// `X_Qlik_User` and the like: CGI-style upstreams read them as the identity headers.
fn is_identity_lookalike(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.contains(&b'_')
        && IDENTITY_HEADERS.iter().any(|identity| {
            let identity = identity.as_str().as_bytes();
            identity.len() == name.len()
                && identity
                    .iter()
                    .zip(name)
                    .all(|(i, n)| i == n || (*i == b'-' && *n == b'_'))
        })
}

/// The user's identity headers. Those that are the same for every user of the proxy were
/// made with the proxy; the user's own are written straight into one buffer each (no
/// intermediate strings), which is cheap enough not to be worth keeping per session: a
/// per-session copy would double the memory a cached session takes.
fn inject_identity(
    headers: &mut HeaderMap,
    proxy: &VirtualProxy,
    session: &CachedSession,
    secure: bool,
) {
    for (name, value) in &proxy.proxy_identity_headers {
        headers.insert(name.clone(), value.clone());
    }
    let attributes = |out: &mut String| {
        for (index, (name, value)) in session.attributes.iter().enumerate() {
            if index > 0 {
                out.push_str("; ");
            }
            encode_into(out, name);
            out.push('=');
            encode_into(out, value);
        }
    };
    match proxy.identity {
        IdentityPreset::Qlik => {
            insert_built(headers, X_QLIK_USER, |out| {
                out.push_str("UserDirectory=");
                encode_into(out, &session.user_directory);
                out.push_str("; UserId=");
                encode_into(out, &session.user_id);
            });
            insert_built(headers, X_QLIK_SECURITY, |out| {
                out.push_str(if secure {
                    "SecureRequest=true; Context=AppAccess"
                } else {
                    "SecureRequest=false; Context=AppAccess"
                });
                if !session.attributes.is_empty() {
                    out.push_str("; ");
                    attributes(out);
                }
            });
        }
        IdentityPreset::Generic => {
            insert_built(headers, X_GATEHOUSE_USER_DIRECTORY, |out| {
                encode_into(out, &session.user_directory);
            });
            insert_built(headers, X_GATEHOUSE_USER_ID, |out| {
                encode_into(out, &session.user_id);
            });
            insert_built(headers, X_GATEHOUSE_ATTRIBUTES, |out| attributes(out));
        }
    }
}

/// The identity headers that do not depend on the user.
pub fn proxy_identity_headers(
    preset: IdentityPreset,
    proxy_id: &str,
    prefix: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let headers = match preset {
        IdentityPreset::Qlik => vec![
            (
                X_QLIK_PROXYID,
                format!("ProxyId={proxy_id}; Prefix={prefix}"),
            ),
            (X_QLIK_VIRTUAL_PROXY_PREFIX, prefix.to_owned()),
        ],
        IdentityPreset::Generic => vec![(X_GATEHOUSE_VIRTUAL_PROXY, prefix.to_owned())],
    };
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            // Configuration the control plane validated; a value that is not a valid header
            // would only be left out, never panic.
            Some((name, HeaderValue::from_str(&value).ok()?))
        })
        .collect()
}

/// Builds a header value in one buffer and inserts it. Every piece is percent-encoded or a
/// fixed ASCII string, so the value is always valid; if not, the header is left out.
fn insert_built(headers: &mut HeaderMap, name: HeaderName, build: impl FnOnce(&mut String)) {
    let mut value = String::with_capacity(64);
    build(&mut value);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(name, value);
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

fn encode_into(out: &mut String, value: &str) {
    for piece in utf8_percent_encode(value, ENCODE) {
        out.push_str(piece);
    }
}

/// Reads `X-Qlik-User` (`UserDirectory=<dir>; UserId=<id>`, URL-encoded, with or without the
/// space) back into directory and id: what an upstream does with it.
pub fn parse_qlik_user(value: &str) -> Option<(String, String)> {
    let mut directory = None;
    let mut id = None;
    for part in value.split(';') {
        let (key, encoded) = part.trim().split_once('=')?;
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .ok()?
            .into_owned();
        match key {
            "UserDirectory" => directory = Some(decoded),
            "UserId" => id = Some(decoded),
            _ => return None,
        }
    }
    Some((directory?, id?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use gatehouse_proto::v1 as pb;

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
            for_upstream(&mut headers, proxy, &user, peer, secure, false, &cookies());
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
            &session(),
            peer,
            false,
            false,
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
            for_upstream(&mut headers, &proxy(pb::IdentityPreset::Qlik), &user, peer, false, false, &cookies());
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
            for_upstream(&mut headers, &proxy(pb::IdentityPreset::Qlik), &user, peer, false, false, &cookies());
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
            &session(),
            peer,
            true,
            false,
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
}
