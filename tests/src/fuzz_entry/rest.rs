//! The control plane's HTTP surfaces: the QPS-compatible REST surface (paths, the Xrfkey,
//! JSON bodies) and the `Host` and token checks of its admin ports.

use std::net::IpAddr;

use gatehouse_control_plane::admin_access::{self, AdminToken, HostRule};
use gatehouse_control_plane::rest::json::{self, TicketRequest};
use gatehouse_control_plane::rest::routes::{self, NoRoute, Route};
use gatehouse_control_plane::rest::xrfkey;
use http::{HeaderMap, HeaderValue, Method, Uri};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{text, two};

/// The prefixes configured while routing: `user` and `session` are also endpoint names.
fn is_prefix(prefix: &str) -> bool {
    ["", "app", "user", "session"].contains(&prefix)
}

/// A segment decoded the strict way: every `%` starts two hex digits, and the bytes are
/// UTF-8. Written apart from the router's decoder, to check it.
fn strictly_decoded(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let well_escaped = bytes.iter().enumerate().all(|(at, &byte)| {
        byte != b'%'
            || bytes
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_escaped {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// The path that names `route` with every segment percent-encoded.
fn path_of(route: &Route) -> String {
    let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
    let under = |prefix: &str, rest: &str| {
        if prefix.is_empty() {
            format!("/qps/{rest}")
        } else {
            format!("/qps/{}/{rest}", encode(prefix))
        }
    };
    match route {
        Route::Ticket { prefix } => under(prefix, "ticket"),
        Route::CreateSession { prefix } => under(prefix, "session"),
        Route::Session { prefix, id } => under(prefix, &format!("session/{}", encode(id))),
        Route::User {
            prefix,
            directory,
            user,
        } => under(
            prefix,
            &format!("user/{}/{}", encode(directory), encode(user)),
        ),
        Route::Error => "/qps/error".to_owned(),
    }
}

/// REST routing and its percent-decoding (`rest_route`): the first byte picks the method,
/// the rest is the path. A path is refused as badly encoded exactly when one of its segments
/// is not strictly percent-encoded UTF-8; a route is answered only for its own methods; and
/// the route's parts, encoded again, name the same route.
pub fn route_path(data: &[u8]) {
    let Some((&method, path)) = data.split_first() else {
        return;
    };
    let method =
        [Method::GET, Method::POST, Method::DELETE, Method::PUT][usize::from(method % 4)].clone();
    let path = text(path);
    let routed = routes::route(&method, &path, is_prefix);
    if let Some(rest) = path.strip_prefix("/qps/") {
        let badly_encoded = rest
            .split('/')
            .filter(|segment| !segment.is_empty())
            .any(|segment| strictly_decoded(segment).is_none());
        assert_eq!(
            routed == Err(NoRoute::BadEncoding),
            badly_encoded,
            "{path:?}: {routed:?}"
        );
    } else {
        assert_eq!(routed, Err(NoRoute::NotFound), "{path:?}");
    }
    let Ok(route) = routed else {
        return;
    };
    let allowed = match &route {
        Route::Ticket { .. } | Route::CreateSession { .. } | Route::Error => method == Method::POST,
        Route::Session { .. } | Route::User { .. } => {
            method == Method::GET || method == Method::DELETE
        }
    };
    assert!(allowed, "{path:?}: {route:?} for {method}");
    let again = path_of(&route);
    assert_eq!(
        routes::route(&method, &again, is_prefix),
        Ok(route.clone()),
        "{path:?} is {route:?}, {again:?} is not"
    );
}

/// The Xrfkey check (`rest_xrfkey`): the query, then NUL-separated `X-Qlik-Xrfkey` values. A
/// call passes exactly when the query names `xrfkey` (any case) once, one header is sent,
/// and both are the same 16 letters and digits.
pub fn xrfkey(data: &[u8]) {
    let (query, values) = two(data);
    let mut headers = HeaderMap::new();
    for value in values.split('\0').filter(|_| !values.is_empty()) {
        let Ok(value) = HeaderValue::from_str(value) else {
            return;
        };
        headers.append("x-qlik-xrfkey", value);
    }
    let checked = xrfkey::check(Some(&query), &headers);
    let named: Vec<&str> = query
        .split('&')
        .filter_map(|pair| {
            let name = pair.find('=').map_or(pair, |at| &pair[..at]);
            name.eq_ignore_ascii_case("xrfkey")
                .then(|| pair.get(name.len() + 1..).unwrap_or_default())
        })
        .collect();
    let sent: Vec<&[u8]> = headers
        .get_all("x-qlik-xrfkey")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let key_like = |key: &[u8]| key.len() == 16 && key.iter().all(u8::is_ascii_alphanumeric);
    let expected = matches!((&named[..], &sent[..]),
        ([from_query], [from_header]) if from_query.as_bytes() == *from_header && key_like(from_header));
    assert_eq!(checked.is_ok(), expected, "{query:?} {sent:?}: {checked:?}");
    if checked.is_ok() {
        // The query matched case-insensitively: any spelling of the name passes.
        let shouted = query
            .replace("xrfkey", "XRFKEY")
            .replace("Xrfkey", "XRFKEY");
        assert_eq!(
            xrfkey::check(Some(&shouted), &headers),
            Ok(()),
            "{shouted:?}"
        );
        assert!(xrfkey::check(None, &headers).is_err());
    }
}

/// The ticket request a parsed one was read from, in QPS's own spelling.
fn canonical_body(request: &TicketRequest) -> Value {
    let attributes: Vec<Value> = request
        .user
        .attributes
        .iter()
        .map(|attribute| json!({ attribute.name.clone(): attribute.value }))
        .collect();
    json!({
        "UserDirectory": request.user.directory,
        "UserId": request.user.id,
        "Attributes": attributes,
        "TargetId": request.target_id,
    })
}

/// REST request bodies (`rest_json`): the ticket and session requests read the same user
/// from a body; a user read is valid (trimmed, not blank, no backslash) and reads back the
/// same from the body QPS itself would send.
pub fn request_body(data: &[u8]) {
    let ticket = json::ticket_request(data);
    let session = json::session_request(data);
    if let (Ok(ticket), Ok(session)) = (&ticket, &session) {
        assert_eq!(ticket.user, session.user);
    }
    let Ok(ticket) = ticket else {
        return;
    };
    let user = &ticket.user;
    for field in [&user.directory, &user.id] {
        assert!(!field.is_empty() && *field == field.trim() && !field.contains('\\'));
    }
    let body = canonical_body(&ticket).to_string();
    let again = json::ticket_request(body.as_bytes()).expect("QPS's own spelling reads back");
    assert_eq!(again.user, ticket.user, "{body}");
    assert_eq!(again.target_id, ticket.target_id, "{body}");
}

/// Whether `host` (a `Host` value's host part) is a name for this machine.
fn names_this_machine(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || literal
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The admin ports' access checks (`admin_access`): a `Host` value, then an `Authorization`
/// value. A loopback-only port answers only names of this machine (or none); each looser rule
/// admits at least what a stricter one does; the host is read the same from `Host` and from
/// an absolute URI. A change is authorized only by the configured token as a bearer token.
pub fn admin_access(data: &[u8]) {
    let (host, authorization) = two(data);
    let origin_form = Uri::from_static("/");
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&host) {
        headers.insert(http::header::HOST, value);
    }
    let with_host = |rule, also: &[String]| {
        admin_access::check_host(rule, &origin_form, &headers, also).is_ok()
    };
    let configured = ["gatehouse.example".to_owned()];
    let loopback = with_host(HostRule::Loopback, &[]);
    assert!(
        !loopback || with_host(HostRule::LoopbackOrAddress, &[]),
        "{host:?}"
    );
    assert!(
        !loopback || with_host(HostRule::Loopback, &configured),
        "{host:?}"
    );
    let authority = host.parse::<http::uri::Authority>().ok();
    if loopback && let Some(authority) = &authority {
        assert!(names_this_machine(authority.host()), "{host:?}");
    }
    if let Some(authority) = &authority
        && let Ok(absolute) = format!("http://{authority}/").parse::<Uri>()
        && absolute.authority() == Some(authority)
    {
        let from_uri =
            admin_access::check_host(HostRule::Loopback, &absolute, &HeaderMap::new(), &[]);
        assert_eq!(from_uri.is_ok(), loopback, "{host:?}");
    }

    let token = AdminToken::new("fuzz-admin-token-0123456789abcdef").expect("long enough");
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(&authorization) else {
        return;
    };
    headers.insert(http::header::AUTHORIZATION, value);
    if admin_access::authorize_change(Some(&token), &headers).is_ok() {
        let (scheme, credential) = authorization.split_at(7);
        assert!(scheme.eq_ignore_ascii_case("bearer "), "{authorization:?}");
        assert_eq!(credential.trim(), "fuzz-admin-token-0123456789abcdef");
    }
    assert!(admin_access::authorize_change(None, &headers).is_err());
}
