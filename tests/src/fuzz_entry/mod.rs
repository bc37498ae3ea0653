//! Entry points shared by the fuzz targets (`fuzz/`) and their regression tests
//! (`fuzz_regressions`): each takes arbitrary bytes, must never panic, and checks what it can
//! of the function's promise. The node's request parsers are here; the others are grouped by
//! what they read, one file each.

pub mod forward_auth;
pub mod http1;
pub mod jwt;
pub mod kerberos;
pub mod oidc;
pub mod rest;
pub mod saml;
pub mod saml_logout;

use std::net::SocketAddr;

use gatehouse_data_plane::auth::login::allowed_target;
use gatehouse_data_plane::auth::rules::{self, AccessRule};
use gatehouse_data_plane::auth::{cookie, header, query};
use gatehouse_data_plane::cache::CachedSession;
use gatehouse_data_plane::identity_headers::parse_qlik_user;
use gatehouse_data_plane::origin::Origin;
use gatehouse_data_plane::proxy::headers;
use gatehouse_data_plane::request::public::{self, PublicPath};
use gatehouse_data_plane::request::{authority, path};
use gatehouse_data_plane::virtual_proxy::{HeaderAuthentication, HeaderUser, VirtualProxy};
use gatehouse_proto::v1 as pb;
use http::{HeaderMap, HeaderName, HeaderValue};

/// A fuzz target's body.
pub type Entry = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/`.
pub const TARGETS: &[(&str, Entry)] = &[
    ("cookie", cookie_header),
    ("query", ticket_query),
    ("header_pattern", header_pattern),
    ("identity", identity_headers),
    ("redirect_target", redirect_target),
    ("public_origin", public_origin),
    ("path", request_path),
    ("config", configuration),
    ("authority_syntax", authority_syntax),
    ("access_rules", access_rules),
    ("rest_route", rest::route_path),
    ("rest_xrfkey", rest::xrfkey),
    ("rest_json", rest::request_body),
    ("admin_access", rest::admin_access),
    ("jwt_bearer", jwt::bearer_token),
    ("jwt_claims", jwt::signed_claims),
    ("oidc_tokens", oidc::token_claims),
    ("oidc_discovery", oidc::discovery_document),
    ("oidc_callback", oidc::callback),
    ("oidc_login_target", oidc::login_target),
    ("saml_response", saml::response),
    ("saml_logout", saml_logout::logout_message),
    ("negotiate", kerberos::negotiate_header),
    ("kerberos_principal", kerberos::principal),
    ("forward_auth_headers", forward_auth::described_by_headers),
    ("ext_authz", forward_auth::ext_authz_check),
    ("http1_request", http1::request_framing),
    ("http1_chunked", http1::chunked_response),
];

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Splits input into two strings at the first NUL.
fn two(data: &[u8]) -> (String, String) {
    match data.iter().position(|&byte| byte == 0) {
        Some(at) => (text(&data[..at]), text(&data[at + 1..])),
        None => (text(data), String::new()),
    }
}

fn proxy() -> VirtualProxy {
    VirtualProxy::from_proto(
        &pb::VirtualProxy {
            prefix: "app".into(),
            cookie_name: "X-Qlik-Session-app".into(),
            host_allow_list: vec!["portal.example".into()],
            proxy_id: "gatehouse".into(),
            ..Default::default()
        },
        None,
    )
    .expect("fixed virtual proxy")
}

/// The cookie parser: reading never panics, and after stripping, the session cookie is gone.
pub fn cookie_header(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, value);
    let _ = cookie::read(&headers, "X-Qlik-Session-app");
    cookie::strip(&mut headers, &["X-Qlik-Session-app".to_owned()]);
    assert!(cookie::read(&headers, "X-Qlik-Session-app").is_none());
}

/// Ticket extraction and removal: a redirect never leaves the host and never keeps a ticket.
/// The input is a request target, split into path and query as the server does.
pub fn ticket_query(data: &[u8]) {
    let Ok(uri) = text(data).parse::<http::Uri>() else {
        return;
    };
    let _ = query::param(uri.query(), "qlikTicket");
    let location = query::local_redirect(uri.path(), uri.query(), "qlikTicket");
    assert!(
        location.starts_with('/') && !location.starts_with("//") && !location.starts_with("/\\")
    );
    let query_part = location.split_once('?').map_or("", |(_, q)| q);
    assert!(
        query::param(Some(query_part), "qlikTicket").is_none(),
        "{location}"
    );
}

/// The header-authentication pattern matcher: a user it finds has a directory and an id.
pub fn header_pattern(data: &[u8]) {
    let (pattern, value) = two(data);
    let Ok(value) = HeaderValue::from_str(&value) else {
        return;
    };
    let config = HeaderAuthentication {
        header: HeaderName::from_static("x-remote-user"),
        user: HeaderUser::Pattern(pattern),
        trusted_networks: vec!["127.0.0.0/8".parse().expect("network")],
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-remote-user", value);
    if let Some((directory, id)) = header::user(&config, &headers, [127, 0, 0, 1].into()) {
        assert!(!directory.is_empty() && !id.is_empty());
    }
}

/// The identity-header encoder and decoder: what goes upstream reads back as what was sent.
pub fn identity_headers(data: &[u8]) {
    let (directory, id) = two(data);
    let session = CachedSession {
        handle: "h".into(),
        virtual_proxy: "app".into(),
        user_directory: directory.clone(),
        user_id: id.clone(),
        attributes: vec![(directory.clone(), id.clone())],
        absolute_expiry: std::time::SystemTime::UNIX_EPOCH,
        assertion: Default::default(),
    };
    let mut request_headers = HeaderMap::new();
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    headers::for_upstream(
        &mut request_headers,
        &proxy(),
        Some(&session),
        headers::Hop {
            peer,
            secure: false,
            trusted_proxy: false,
            websocket: false,
        },
        &[],
    );
    let user = request_headers
        .get("x-qlik-user")
        .and_then(|value| value.to_str().ok())
        .expect("X-Qlik-User is always set");
    assert_eq!(parse_qlik_user(user), Some((directory, id)));
}

/// The redirect-target validator: anything it allows is on an allowed host.
pub fn redirect_target(data: &[u8]) {
    let uri = text(data);
    let origin = Origin::new(true, "sense.example").expect("a valid host");
    if let Some(allowed) = allowed_target(&proxy(), &origin, &uri) {
        let parsed: http::Uri = allowed.parse().expect("allowed targets parse");
        let host = parsed
            .host()
            .expect("allowed targets have a host")
            .to_ascii_lowercase();
        assert!(
            host == "portal.example" || host == "sense.example",
            "{allowed}"
        );
        assert!(
            !parsed
                .authority()
                .expect("authority")
                .as_str()
                .contains('@')
        );
    }
}

/// Public origins: a `Host` (the input up to the first NUL) is served only as one of the
/// configured origins, and a URL (the rest) is admitted only on an origin or the allow list.
/// A host is never taken apart differently from how a browser reads it: no user information,
/// path or percent sign survives the parse.
pub fn public_origin(data: &[u8]) {
    use gatehouse_proto::origin::{self, Authority, PublicOrigin};
    let (host, url) = two(data);
    let origins = [
        PublicOrigin::parse("https://sense.example").expect("fixed origin"),
        PublicOrigin::parse("http://sense.example:8080").expect("fixed origin"),
    ];
    let allow_list = ["portal.example".to_owned()];
    if let Ok(authority) = Authority::parse(&host) {
        assert!(
            !authority
                .host()
                .contains(['@', '/', '\\', '%', '?', '#', ' '])
        );
        let port = authority
            .port()
            .map_or(String::new(), |port| format!(":{port}"));
        assert_eq!(
            Authority::parse(&format!("{}{port}", authority.host())),
            Ok(authority)
        );
        if let Some(served) = origin::served_origin(&origins, &authority) {
            assert!(
                authority.same_host("sense.example"),
                "{host:?} served as {served}"
            );
        }
    }
    if origin::url_is_admitted(&url, &origins, &allow_list) {
        let (_, authority) = origin::url_origin(&url).expect("admitted URLs have an origin");
        assert!(
            authority.same_host("sense.example") || authority.same_host("portal.example"),
            "{url:?}"
        );
        // Where a URL parser reads a host, it is the same one.
        if let Some(parsed_host) = url
            .parse::<http::Uri>()
            .ok()
            .as_ref()
            .and_then(http::Uri::host)
        {
            assert!(
                authority.same_host(parsed_host),
                "{url:?}: http reads {parsed_host:?}"
            );
        }
    }
    // The node's own matching of a request's Host.
    let Ok(value) = HeaderValue::from_str(&host) else {
        return;
    };
    let proxy = VirtualProxy::from_proto(
        &pb::VirtualProxy {
            prefix: "app".into(),
            public_origins: vec!["https://sense.example".into()],
            ..Default::default()
        },
        None,
    )
    .expect("fixed virtual proxy");
    let mut request = http::Request::new(());
    request.headers_mut().insert(http::header::HOST, value);
    if let Ok(origin) = Origin::resolve(&proxy, &request, 443, true) {
        assert_eq!(origin.url("/"), "https://sense.example/", "{host:?}");
    }
}

/// Path normalisation: stable, rooted, no empty or dot segments.
pub fn request_path(data: &[u8]) {
    let raw = text(data);
    if let Some(normalized) = path::normalize(&raw)
        && normalized != "*"
    {
        assert!(normalized.starts_with('/'));
        assert!(
            !normalized.contains("//")
                && !normalized.contains("/./")
                && !normalized.contains("/../")
        );
        assert_eq!(path::normalize(&normalized).as_deref(), Some(&*normalized));
    }
}

/// Both configuration parsers: any text is a configuration or one clear error line.
pub fn configuration(data: &[u8]) {
    let toml = text(data);
    if let Err(error) = gatehouse_control_plane::Config::from_toml_str(&toml) {
        assert!(!error.to_string().contains('\n'), "{error}");
    }
    if let Err(error) = gatehouse_data_plane::Config::from_toml_str(&toml) {
        assert!(!error.to_string().contains('\n'), "{error}");
    }
}

/// The `Host` syntax check: what it accepts is a host name, IPv4 or bracketed IPv6 address
/// and an optional port, nothing else, and the `http` crate reads the same host and port in
/// it; as the only `Host` of a request it gives the same answer.
pub fn authority_syntax(data: &[u8]) {
    let parsed = authority::parse(data);
    if let Ok(accepted) = &parsed {
        let text = accepted.as_str();
        assert_eq!(text.as_bytes(), data);
        assert!(
            !text.contains(['@', '/', '?', '#', '\\', ' ', '%']),
            "{text}"
        );
        assert!(!accepted.host().is_empty() && accepted.port() != Some(0));
        let theirs: http::uri::Authority = text.parse().expect("http parses what we accept");
        assert!(
            theirs.host().eq_ignore_ascii_case(accepted.host()),
            "{text}"
        );
        assert_eq!(theirs.port_u16(), accepted.port(), "{text}");
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut request_headers = HeaderMap::new();
    request_headers.insert(http::header::HOST, value);
    let root = http::Uri::from_static("/");
    let from_request =
        authority::request_authority(http::Version::HTTP_11, &root, &request_headers);
    assert_eq!(from_request.is_ok(), parsed.is_ok());
}

/// `.` and empty segments dropped, `..` resolved, `;` parameters cut: how an upstream may
/// read a path. Written apart from the access rules' own, to check them.
fn as_an_upstream_reads(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
    {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            name => kept.push(name),
        }
    }
    format!("/{}", kept.join("/"))
}

/// Access rules on the paths a request may spell (`access_rules`): the input is a request
/// path, normalised as the node does before the rules run. With `/admin` denied, a path
/// that is allowed does not lead to `/admin` as written, percent-decoded, or Unicode-folded
/// (NFKC and case, as Java compares), whatever the dots, slashes and parameters in it. And
/// public paths, which grant: a path public under `/public/` reads as below it in every
/// spelling.
pub fn access_rules(data: &[u8]) {
    let raw = text(data);
    let Some(path) = path::normalize(&raw) else {
        return;
    };
    if public::is_public(&[PublicPath::new("/public/", &[])], &path, "GET") {
        let decoded = percent_encoding::percent_decode_str(&path)
            .decode_utf8_lossy()
            .into_owned();
        let folded = rules::fold(&decoded);
        for spelling in [path.to_string(), decoded, folded] {
            let read = as_an_upstream_reads(&spelling);
            assert!(
                read == "/public" || read.starts_with("/public/"),
                "{raw:?} is public, yet reads as {read:?}"
            );
        }
    }
    let rule = |prefix: &str, allow: bool| AccessRule {
        path_prefix: prefix.to_owned(),
        folded_prefix: rules::fold(prefix),
        methods: Vec::new(),
        allow,
        user_directory: None,
        user_id: None,
        attribute: None,
        scope: rules::Scope::Any,
    };
    let access = [rule("/admin", false), rule("/", true)];
    let session = CachedSession {
        handle: "h".into(),
        virtual_proxy: "app".into(),
        user_directory: "CORP".into(),
        user_id: "alice".into(),
        attributes: Vec::new(),
        absolute_expiry: std::time::SystemTime::UNIX_EPOCH,
        assertion: Default::default(),
    };
    if rules::denied(&access, &path, "GET", &session).is_some() {
        return;
    }
    let decoded = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    let folded = rules::fold(&decoded);
    for spelling in [path.to_string(), decoded, folded] {
        let read = as_an_upstream_reads(&spelling);
        let leads_to_admin = read
            .get(..6)
            .is_some_and(|head| head.eq_ignore_ascii_case("/admin"));
        assert!(!leads_to_admin, "{raw:?} is allowed, yet reads as {read:?}");
    }
}
