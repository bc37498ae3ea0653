//! The rewrites around forwarding: the request an upstream receives (the login ticket and
//! the prefix taken out of the URI, `Host` set to the public origin, trace context, the
//! headers of `headers.rs`; no identity on a public path), and what the client's response gains (the new session's
//! cookie, the Kerberos mutual-authentication token).

use http::Uri;
use http::header::{SET_COOKIE, WWW_AUTHENTICATE};
use http::request::Parts;

use crate::auth::identify::Identified;
use crate::auth::login::Authenticated;
use crate::auth::query;
use crate::proxy::headers;
use crate::request::context::{RequestCtx, relative_path};
use crate::state::NodeState;
use crate::virtual_proxy::VirtualProxy;

/// Rewrites `parts` into the request the upstream receives for the `identified` user, or
/// for nobody (`None`, a request on a public path).
pub fn for_upstream(
    state: &NodeState,
    ctx: &RequestCtx,
    parts: &mut Parts,
    identified: Option<&Identified>,
) {
    let proxy = &ctx.proxy;
    if identified.is_some_and(|identified| identified.ticket_in_uri) {
        let clean = query::without_param(parts.uri.path(), parts.uri.query(), "qlikTicket");
        parts.uri = clean.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
    // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host.
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    parts.uri = upstream_path(&parts.uri, proxy);
    if ctx.client.traced {
        gatehouse_runtime::logging::inject_current(&mut parts.headers);
    }
    // Upstreams see the origin the browser used: its scheme behind a TLS-terminating load
    // balancer, and its name when an unknown Host was served as the first origin.
    let origin = &ctx.origin;
    if parts.headers.get(http::header::HOST).is_some_and(|host| {
        !host
            .as_bytes()
            .eq_ignore_ascii_case(origin.host().as_bytes())
    }) {
        parts
            .headers
            .insert(http::header::HOST, origin.authority_header());
    }
    let peer = ctx.client.peer;
    let hop = headers::Hop {
        peer,
        secure: origin.secure,
        trusted_proxy: headers::is_trusted_proxy(&state.trusted_proxies, peer.ip()),
        websocket: ctx.websocket,
    };
    headers::for_upstream(
        &mut parts.headers,
        proxy,
        identified.map(|identified| &*identified.user.session),
        hop,
        ctx.session_cookies(),
    );
}

/// What the client's response gains from the login this request made.
pub fn response(headers: &mut http::HeaderMap, mut user: Authenticated) {
    let cookies = user.take_cookies();
    if !cookies.is_empty() {
        keep_out_of_shared_caches(headers);
    }
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    if let Some(negotiate) = user.www_authenticate {
        headers.insert(WWW_AUTHENTICATE, negotiate);
    }
}

/// The URI the upstream sees: the prefix removed if the proxy says so.
fn upstream_path(uri: &Uri, proxy: &VirtualProxy) -> Uri {
    if !proxy.strip_prefix || proxy.prefix.is_empty() {
        return uri.clone();
    }
    let path = relative_path(uri.path(), proxy);
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    path_and_query.parse().unwrap_or_else(|_| uri.clone())
}

/// A response that now sets one user's cookie must not be stored by a shared cache and
/// handed to others (the upstream may have marked a static asset `public`).
fn keep_out_of_shared_caches(headers: &mut http::HeaderMap) {
    let private = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| {
            let directive = directive.trim();
            directive.eq_ignore_ascii_case("private") || directive.eq_ignore_ascii_case("no-store")
        });
    if !private {
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("private, no-cache"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_setting_a_cookie_is_kept_out_of_shared_caches() {
        let cached = |value: Option<&'static str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static(value),
                );
            }
            keep_out_of_shared_caches(&mut headers);
            headers[http::header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(cached(None), "private, no-cache");
        assert_eq!(cached(Some("public, max-age=3600")), "private, no-cache");
        assert_eq!(cached(Some("max-age=60, Private")), "max-age=60, Private");
        assert_eq!(cached(Some("no-store")), "no-store");
    }
}
