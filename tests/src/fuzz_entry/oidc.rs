//! OpenID Connect: the provider's discovery document, the claims of ID and logout tokens,
//! the callback the browser comes back with, and the login target and redirect URI the node
//! and the control plane both check.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use gatehouse_control_plane::authority::oidc_login::{
    check_redirect_uri, check_target, is_binding,
};
use gatehouse_control_plane::config::OidcConfig;
use gatehouse_control_plane::jwt::{ClaimRules, user_from_claims};
use gatehouse_control_plane::oidc::{claims, discovery};
use gatehouse_data_plane::auth::oidc::{local_target, login_uri};
use gatehouse_data_plane::auth::{cookie, query};
use gatehouse_data_plane::endpoints::oidc::CallbackQuery;
use gatehouse_data_plane::origin::Origin;
use gatehouse_data_plane::virtual_proxy::VirtualProxy;
use gatehouse_proto::origin::{PublicOrigin, url_is_admitted};
use gatehouse_proto::v1 as pb;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::two;

const ISSUER: &str = "https://idp.example.com";
const CLIENT_ID: &str = "gatehouse";
const NONCE: &str = "n-0S6_WzA2Mj";
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const LEEWAY: Duration = Duration::from_secs(60);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn non_empty<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

fn whole_seconds(claims: &Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64).map(f64::floor)
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The claim checks of ID tokens and logout tokens, and the user the claims name
/// (`oidc_tokens`); the input is the claims as JSON. No claims pass as both an ID token and
/// a logout token; each passes only with what its specification requires; the user's
/// attributes are exactly the scalar values of the claims they map.
pub fn token_claims(data: &[u8]) {
    let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let limit = seconds_since_epoch(now() + LEEWAY);
    let id_token = claims::check_id_token(&claims, CLIENT_ID, NONCE, now(), LEEWAY);
    let logout = claims::check_logout_token(&claims, now(), LEEWAY);
    assert!(
        id_token.is_err() || logout.is_err(),
        "one token passes as both: {claims:?}"
    );
    if id_token.is_ok() {
        assert!(non_empty(&claims, "sub").is_some());
        assert_eq!(claims.get("nonce").and_then(Value::as_str), Some(NONCE));
        assert!(whole_seconds(&claims, "iat").is_some_and(|iat| iat <= limit));
        match non_empty(&claims, "azp") {
            Some(azp) => assert_eq!(azp, CLIENT_ID),
            None => assert!(
                claims
                    .get("aud")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.len() <= 1)
            ),
        }
    }
    if let Ok(target) = &logout {
        assert!(!claims.contains_key("nonce"));
        assert_eq!(Some(target.jti.as_str()), non_empty(&claims, "jti"));
        assert!(!target.jti.is_empty());
        assert_eq!(target.sub.as_deref(), non_empty(&claims, "sub"));
        assert_eq!(target.sid.as_deref(), non_empty(&claims, "sid"));
        assert!(target.sub.is_some() || target.sid.is_some());
        assert!(whole_seconds(&claims, "iat").is_some_and(|iat| iat <= limit));
        assert_eq!(
            Some(seconds_since_epoch(target.expires)),
            whole_seconds(&claims, "exp")
        );
        let event = claims
            .get("events")
            .and_then(|events| events.get(LOGOUT_EVENT));
        assert!(event.is_some_and(Value::is_object));
    }

    let attributes = BTreeMap::from([
        ("Group".to_owned(), "groups".to_owned()),
        ("email".to_owned(), "email".to_owned()),
    ]);
    let rules = ClaimRules {
        user_id_claim: "preferred_username",
        user_directory_claim: Some("dir"),
        user_directory: Some("OIDC"),
        attributes: &attributes,
    };
    if let Ok(user) = user_from_claims(&claims, &rules) {
        assert!(!user.id.is_empty() && !user.directory.is_empty());
        for (name, claim) in &attributes {
            let expected: Vec<String> = match claims.get(claim) {
                Some(Value::Array(values)) => values.iter().filter_map(scalar_text).collect(),
                Some(value) => scalar_text(value).into_iter().collect(),
                None => Vec::new(),
            };
            let found: Vec<String> = user
                .attributes
                .iter()
                .filter(|attribute| attribute.name == *name)
                .map(|attribute| attribute.value.clone())
                .collect();
            assert_eq!(found, expected, "{name}");
        }
    }
}

/// Whether `uri` is https, or http on a name of this machine. Written apart from the
/// configuration's own check, to check the discovery document's.
fn secure_or_local(uri: &str) -> bool {
    let Ok(parsed) = uri.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = parsed.host().filter(|host| !host.is_empty()) else {
        return false;
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => {
            host.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
        }
        _ => false,
    }
}

/// The provider's discovery document (`oidc_discovery`): one that is accepted names the
/// configured issuer exactly, every endpoint in it is https (http only on this machine),
/// and PKCE with S256 is not ruled out.
pub fn discovery_document(data: &[u8]) {
    let Ok(metadata) = discovery::parse(data, ISSUER) else {
        return;
    };
    assert_eq!(metadata.issuer, ISSUER);
    let endpoints = [
        Some(&metadata.authorization_endpoint),
        Some(&metadata.token_endpoint),
        Some(&metadata.jwks_uri),
        metadata.userinfo_endpoint.as_ref(),
        metadata.end_session_endpoint.as_ref(),
    ];
    for endpoint in endpoints.into_iter().flatten() {
        assert!(secure_or_local(endpoint), "{endpoint:?}");
    }
    if let Some(methods) = &metadata.code_challenge_methods_supported {
        assert!(methods.iter().any(|method| method == "S256"));
    }
}

/// The virtual proxy `app` with OpenID Connect, served at `https://sense.example`.
fn oidc_proxy() -> VirtualProxy {
    VirtualProxy::from_proto(
        &pb::VirtualProxy {
            prefix: "app".into(),
            cookie_name: "X-Qlik-Session-app".into(),
            public_origins: vec!["https://sense.example".into()],
            oidc_authentication: Some(pb::OidcAuthentication {
                enabled: true,
                ..Default::default()
            }),
            ..Default::default()
        },
        None,
    )
    .expect("fixed virtual proxy")
}

/// The callback the browser comes back with (`oidc_callback`): its query string, then its
/// `Cookie` header. A provider's error wins and is shown only as a plain OAuth error code;
/// a code is relayed with exactly the `state`, `code` and `iss` the query holds; a binding
/// cookie is taken only in the shape the control plane sets it.
pub fn callback(data: &[u8]) {
    let (query_text, cookies) = two(data);
    let query_string = Some(query_text.as_str());
    let read = CallbackQuery::read(query_string);
    let param = |name| query::param(query_string, name);
    match &read {
        CallbackQuery::Refused { error } => {
            assert!(param("error").is_some());
            let plain = (1..=64).contains(&error.len())
                && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(plain, "{error:?} is shown to the user");
        }
        CallbackQuery::Code { state, code, iss } => {
            assert!(param("error").is_none());
            assert_eq!(Some(state), param("state").as_ref());
            assert_eq!(Some(code), param("code").as_ref());
            assert_eq!(*iss, param("iss").unwrap_or_default());
        }
        CallbackQuery::Incomplete => {
            assert!(param("error").is_none());
            assert!(param("state").is_none() || param("code").is_none());
        }
    }
    let Ok(value) = HeaderValue::from_str(&cookies) else {
        return;
    };
    let proxy = oidc_proxy();
    let oidc = proxy.oidc.as_ref().expect("OpenID Connect is on");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, value);
    if let Some(binding) = cookie::read(&headers, oidc.binding_cookie(true))
        && is_binding(binding)
    {
        assert_eq!(binding.len(), 43);
        assert!(
            binding
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}

/// Where a login goes back to, and where the provider sends the code (`oidc_login_target`):
/// a requested target, then a redirect URI. A target the node takes as local is one the
/// control plane accepts (up to its length limit), the sign-in link carries it unchanged, and
/// the node's redirect after the login goes exactly there. A redirect URI the control plane
/// accepts for `app` on `https://sense.example` is that proxy's callback on that host.
pub fn login_target(data: &[u8]) {
    let (requested, redirect_uri) = two(data);
    let proxy = oidc_proxy();
    let origin = Origin::new(true, "sense.example").expect("a valid host");
    let local = local_target(&proxy, &requested, &origin);
    if let Some(target) = &local {
        assert!(target.starts_with('/') && !target.starts_with("//"));
        if target.len() <= 4096 {
            assert!(check_target(target).is_ok(), "{target:?}");
        }
        let link = login_uri(&proxy, &origin, &requested).expect("a local target has a link");
        let prefix = "https://sense.example/app/oidc/login?";
        let link_query = link
            .strip_prefix(prefix)
            .expect("the link is on the origin");
        assert_eq!(
            query::param(Some(link_query), "target").as_ref(),
            Some(target),
            "{link}"
        );
    } else {
        assert!(login_uri(&proxy, &origin, &requested).is_none());
    }
    if check_target(&requested).is_ok() {
        // After the callback, the node sends the browser to the stored target.
        assert_eq!(query::local_redirect(&requested, None, ""), requested);
    }

    let origins = [PublicOrigin::parse("https://sense.example").expect("fixed origin")];
    if check_redirect_uri("app", &redirect_uri).is_ok()
        && url_is_admitted(&redirect_uri, &origins, &[])
    {
        let parsed: http::Uri = redirect_uri.parse().expect("an accepted URI parses");
        assert_eq!(parsed.scheme_str(), Some("https"), "{redirect_uri:?}");
        assert!(
            parsed
                .host()
                .is_some_and(|host| host.eq_ignore_ascii_case("sense.example")),
            "{redirect_uri:?}"
        );
        assert_eq!(parsed.port_u16().unwrap_or(443), 443, "{redirect_uri:?}");
        assert_eq!(parsed.path(), OidcConfig::callback_path("app"));
        assert!(parsed.query().is_none() && !redirect_uri.contains('@'));
    }
}
