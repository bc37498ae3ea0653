//! Forward authentication: the original request rebuilt from what an ingress says about it,
//! in `X-Original-*` / `X-Forwarded-*` headers (nginx, Traefik, Caddy) or in an Envoy
//! `ext_authz` check.

use std::net::{IpAddr, SocketAddr};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use gatehouse_data_plane::forward_auth::ext_authz;
use gatehouse_data_plane::forward_auth::original::{self, Caller};
use gatehouse_data_plane::request::context::Client;
use gatehouse_data_plane::request::path;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use prost::Message as _;

use super::text;

/// The headers an ingress describes the original request with.
const DESCRIBING: [&str; 9] = [
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-for",
    "x-real-ip",
];

/// An ingress inside `forward_auth.trusted_networks` (10.0.0.0/8), over plain HTTP.
const INGRESS: Caller = Caller {
    peer: SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)), 40000),
    listener_port: 9904,
    secure: false,
};

fn trusted_networks() -> Vec<ipnet::IpNet> {
    vec!["10.0.0.0/8".parse().expect("a network")]
}

/// `name: value` lines; a line that is no header ends the input's use.
fn header_lines(data: &[u8]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for line in text(data).lines().filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
        let value = HeaderValue::from_str(value.trim()).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

fn one<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

/// What the rebuilt request must be, whichever way it was described: origin-form, one
/// `Host`, and otherwise exactly the headers `passed_on`.
fn check_rebuilt(request: &Request<()>, passed_on: &HeaderMap) {
    let uri = request.uri();
    assert!(uri.scheme().is_none() && uri.authority().is_none(), "{uri}");
    assert!(uri.path().starts_with('/'), "{uri}");
    assert_eq!(request.headers().get_all(HOST).iter().count(), 1);
    let mut rest = request.headers().clone();
    rest.remove(HOST);
    assert_eq!(&rest, passed_on);
    // The path check made next must take any rebuilt path.
    let _ = path::normalize(uri.path());
}

/// `X-Original-*` / `X-Forwarded-*` descriptions (`forward_auth_headers`): the input is
/// `name: value` lines, the check's headers. From outside the trusted networks nothing is
/// read. A rebuilt request has the method, target, host, scheme and client the description
/// names, by the convention it follows, and carries every other header unchanged but the
/// description and the framing.
pub fn described_by_headers(data: &[u8]) {
    let Some(headers) = header_lines(data) else {
        return;
    };
    let stranger = Caller {
        peer: "203.0.113.1:5000".parse().expect("an address"),
        ..INGRESS
    };
    assert!(original::rebuild(headers.clone(), stranger, &trusted_networks()).is_err());
    let Ok((request, client)) = original::rebuild(headers.clone(), INGRESS, &trusted_networks())
    else {
        return;
    };
    let mut passed_on = headers.clone();
    for name in DESCRIBING.iter().copied().chain([HOST.as_str()]) {
        passed_on.remove(name);
    }
    passed_on.remove(CONTENT_LENGTH);
    passed_on.remove(TRANSFER_ENCODING);
    check_rebuilt(&request, &passed_on);

    let (uri, method) = match one(&headers, "x-forwarded-uri") {
        Some(uri) => (uri, one(&headers, "x-forwarded-method")),
        None => (
            one(&headers, "x-original-uri")
                .or_else(|| one(&headers, "x-original-url"))
                .expect("a rebuilt request was described"),
            one(&headers, "x-original-method"),
        ),
    };
    assert_eq!(Some(request.method().as_str()), method);
    assert!(!uri.contains('#'));
    let host = request.headers()[HOST].to_str().expect("a text host");
    if uri.starts_with('/') {
        assert_eq!(
            request.uri().path_and_query().map(|pq| pq.as_str()),
            Some(uri)
        );
        let named = one(&headers, "x-forwarded-host").or_else(|| one(&headers, "host"));
        assert_eq!(Some(host), named);
        let secure = match one(&headers, "x-forwarded-proto") {
            Some(proto) => proto.eq_ignore_ascii_case("https"),
            None => INGRESS.secure,
        };
        assert_eq!(client.secure, secure);
    } else {
        let url: http::Uri = uri.parse().expect("an absolute URL was accepted");
        assert_eq!(Some(host), url.authority().map(|a| a.as_str()));
        assert_eq!(client.secure, url.scheme_str() == Some("https"));
    }

    // The last entry of the last X-Forwarded-For, else X-Real-IP: whatever its bytes, a
    // request is rebuilt only when it is an address, never with the ingress's own instead.
    let named_client = headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .map(|list| {
            list.as_bytes()
                .rsplit(|&byte| byte == b',')
                .next()
                .unwrap_or_default()
        })
        .or_else(|| headers.get("x-real-ip").map(HeaderValue::as_bytes));
    let expected = match named_client {
        Some(address) => std::str::from_utf8(address)
            .ok()
            .and_then(|address| address.trim().parse::<IpAddr>().ok())
            .expect("a rebuilt request names an address")
            .to_canonical(),
        None => INGRESS.peer.ip(),
    };
    assert_eq!(client.peer, SocketAddr::new(expected, INGRESS.peer.port()));
}

/// Envoy `ext_authz` checks (`ext_authz`): the input is a `CheckRequest` as Envoy encodes it.
/// A rebuilt request has the check's method, target, host, scheme and client, and its
/// headers but the pseudo-headers.
pub fn ext_authz_check(data: &[u8]) {
    let Ok(check) = CheckRequest::decode(data) else {
        return;
    };
    let Ok((request, client)) = ext_authz::rebuild(&check, INGRESS) else {
        return;
    };
    let attributes = check
        .attributes
        .as_ref()
        .expect("a rebuilt check has attributes");
    let http = attributes
        .request
        .as_ref()
        .and_then(|request| request.http.as_ref())
        .expect("a rebuilt check describes an HTTP request");
    let mut passed_on = HeaderMap::new();
    let sent: Vec<(&str, &[u8])> = match &http.header_map {
        Some(map) => map
            .headers
            .iter()
            .map(|header| {
                let value = if header.raw_value.is_empty() {
                    header.value.as_bytes()
                } else {
                    header.raw_value.as_slice()
                };
                (header.key.as_str(), value)
            })
            .collect(),
        None => http
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect(),
    };
    for (name, value) in sent.into_iter().filter(|(name, _)| !name.starts_with(':')) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a rebuilt check's name");
        if name != HOST {
            passed_on.append(name, HeaderValue::from_bytes(value).expect("its value"));
        }
    }
    check_rebuilt(&request, &passed_on);
    assert_eq!(request.method().as_str(), http.method);
    let host = request.headers()[HOST].as_bytes();
    if http.path.starts_with('/') {
        assert_eq!(
            request.uri().path_and_query().map(|pq| pq.as_str()),
            Some(http.path.as_str())
        );
        assert_eq!(host, http.host.as_bytes());
        let secure = match http.scheme.as_str() {
            "" => INGRESS.secure,
            scheme => scheme.eq_ignore_ascii_case("https"),
        };
        assert_eq!(client.secure, secure);
    } else {
        let url: http::Uri = http.path.parse().expect("an absolute URL was accepted");
        assert_eq!(Some(host), url.authority().map(|a| a.as_str().as_bytes()));
        assert_eq!(client.secure, url.scheme_str() == Some("https"));
    }
    let source = attributes
        .source
        .as_ref()
        .and_then(|source| source.address.as_ref())
        .and_then(|address| match &address.address {
            Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                socket,
            )) => socket.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    let Client { peer, .. } = client;
    assert_eq!(peer.ip(), source.unwrap_or(INGRESS.peer.ip()));
}
