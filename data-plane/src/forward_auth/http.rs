//! The HTTP forward-auth endpoint (`forward_auth.listen`). Two paths:
//!
//! - `/auth`: an ingress's check. Allowed is 200 with the identity headers and the new
//!   session's `Set-Cookie`; a browser to be sent elsewhere (to log in) is 401 with the
//!   address in `X-Gatehouse-Location`, for nginx's `error_page 401`, since nginx
//!   `auth_request` passes on only 2xx, 401 and 403. With `?redirect=true` (Traefik and
//!   Caddy hand the authorizer's answer to the browser) it is the proxy's own 302 instead, and
//!   a page load that redeemed a login ticket is sent to its URL without it.
//! - `/signin?rd=<url>`: a browser sent here by an ingress's sign-in setting
//!   (ingress-nginx `auth-signin`) is sent on to log in for `rd`, or to `rd` if it has a
//!   session.
//!
//! Every other refusal is the proxy's (403 by rule, 503 with `Retry-After` when sessions
//! cannot be checked, 400, 404, 414, 431), rendered by `Refusal` as for proxied requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::original::{self, Caller, Description};
use super::{Allowed, decide};
use crate::auth::query;
use crate::body::{self, ProxyBody};
use crate::refusal::Refusal;
use crate::request::context::Client;
use crate::state::NodeState;

/// Where a browser is to be sent, on a 401 answer.
pub const X_GATEHOUSE_LOCATION: HeaderName = HeaderName::from_static("x-gatehouse-location");

/// How a refusal that sends the browser elsewhere is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 401 with `X-Gatehouse-Location` (nginx `auth_request`).
    Unauthorized,
    /// The redirect itself (Traefik, Caddy, a browser at `/signin`).
    Redirect,
}

/// Answers one request on the forward-auth listener.
pub async fn handle<B>(
    state: Arc<NodeState>,
    trusted_networks: &[ipnet::IpNet],
    request: Request<B>,
    caller: Caller,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (parts, _) = request.into_parts();
    let at_signin = parts.uri.path() == "/signin";
    let (rebuilt, answer) = match parts.uri.path() {
        "/auth" => (
            original::rebuild(parts.headers, caller, trusted_networks),
            Answer::asked_in(parts.uri.query()),
        ),
        "/signin" if parts.method == Method::GET => {
            (signin(&parts, caller, trusted_networks), Answer::Redirect)
        }
        "/signin" => return Refusal::method_not_allowed("GET").into_response(),
        _ => {
            return Refusal::NotFound("forward authentication answers at /auth and /signin".into())
                .into_response();
        }
    };
    let asked = Asked {
        answer,
        at_signin,
        caller,
        started,
    };
    answered(&state, rebuilt, asked).await
}

/// Answers a check of `/auth` whose original request the node's own HTTP/1 loop rebuilt from
/// the check's head as it read it (`original::rebuild_lines`); `query` is the check's. Not an
/// `async fn` itself: it hands `answered`'s future on instead of wrapping it in one more,
/// which every check would copy once more on its way in.
pub fn answer_check<'s>(
    state: &'s NodeState,
    query: Option<&str>,
    rebuilt: Result<(Request<()>, Client), Refusal>,
    caller: Caller,
    started: Instant,
) -> impl Future<Output = Response<ProxyBody>> + use<'s> {
    let asked = Asked {
        answer: Answer::asked_in(query),
        at_signin: false,
        caller,
        started,
    };
    answered(state, rebuilt, asked)
}

/// What a check asked for, and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Asked {
    answer: Answer,
    at_signin: bool,
    caller: Caller,
    started: Instant,
}

impl Answer {
    /// As the check's query asks: redirects with `redirect=true` (or `1`).
    fn asked_in(query: Option<&str>) -> Self {
        let redirect = query::param(query, "redirect")
            .is_some_and(|value| value.eq_ignore_ascii_case("true") || value == "1");
        if redirect {
            Answer::Redirect
        } else {
            Answer::Unauthorized
        }
    }
}

/// The phases run on the rebuilt original, the answer rendered, counted and logged.
async fn answered(
    state: &NodeState,
    rebuilt: Result<(Request<()>, Client), Refusal>,
    asked: Asked,
) -> Response<ProxyBody> {
    let (response, proxy) = match rebuilt {
        Ok((original, client)) => match decide(state, original, client).await {
            Ok(allowed) => {
                let proxy = allowed.proxy.clone();
                (allow(allowed, asked.answer, asked.at_signin), Some(proxy))
            }
            Err(refusal) => (refuse(refusal, asked.answer), None),
        },
        Err(refusal) => (refusal.into_response(), None),
    };
    state
        .metrics
        .forward_auth_check("http", response.status().as_u16());
    tracing::info!(
        target: "gatehouse::access",
        front_end = "forward-auth",
        status = response.status().as_u16(),
        latency_us = u64::try_from(asked.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        virtual_proxy = proxy.as_deref().map(|proxy| proxy.prefix.as_str()),
        peer = %asked.caller.peer,
    );
    response
}

/// `/signin?rd=<url>`: the original is a GET of `rd`, by the browser that came here.
fn signin(
    parts: &http::request::Parts,
    caller: Caller,
    trusted_networks: &[ipnet::IpNet],
) -> Result<(Request<()>, Client), Refusal> {
    if !original::is_trusted(trusted_networks, caller.peer.ip()) {
        return Err(Refusal::bad_request(
            "sign-in is accepted only through an ingress in forward_auth.trusted_networks",
        ));
    }
    let rd = query::param(parts.uri.query(), "rd")
        .ok_or_else(|| Refusal::bad_request("rd, the URL to sign in for, is missing"))?;
    if !(rd.starts_with("https://") || rd.starts_with("http://")) {
        return Err(Refusal::bad_request("rd must be an absolute http(s) URL"));
    }
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let described = Description::from_headers(&parts.headers)?;
    let description = Description {
        method: Some("GET"),
        uri: Some(&rd),
        client: described.client,
        ..Description::default()
    };
    original::describe(description, headers, caller, None)
}

/// 200 with what the ingress copies; a page load that redeemed a ticket, or a browser at
/// `/signin`, is sent on to its URL when redirects are answered.
fn allow(allowed: Allowed, answer: Answer, signin: bool) -> Response<ProxyBody> {
    if answer == Answer::Redirect {
        // A signed-in browser at /signin goes where it meant to, on the origin the request
        // context chose (never `rd` as written: an unknown host may be served as the first
        // origin).
        let location = match allowed.without_ticket {
            Some(clean) => Some(clean),
            None => signin.then(|| allowed.url()),
        };
        if let Some(location) = location {
            return Refusal::Redirect {
                location,
                cookies: allowed.cookies,
            }
            .into_response();
        }
    }
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    *headers = allowed.identity;
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    // One `Set-Cookie` at most: nginx hands an `auth_request` answer's cookie on through
    // `$upstream_http_set_cookie`, which holds the first one (1.22) or all of them joined
    // into one broken header (1.23 on). A new session's cookie goes first; its seal follows
    // on a later check (the node renews a missing seal when it next asks the control plane).
    if let Some(cookie) = allowed.cookies.into_iter().next() {
        headers.append(SET_COOKIE, cookie);
    }
    if let Some(negotiate) = allowed.www_authenticate {
        headers.insert(WWW_AUTHENTICATE, negotiate);
    }
    response
}

/// The proxy's refusal; one that sends the browser elsewhere becomes a 401 naming the place
/// when the ingress cannot pass a redirect on.
fn refuse(refusal: Refusal, answer: Answer) -> Response<ProxyBody> {
    match (refusal, answer) {
        (Refusal::Redirect { location, cookies }, Answer::Unauthorized) => {
            let Ok(location) = HeaderValue::from_str(&location) else {
                return Refusal::bad_request("the redirect target is not a valid URL")
                    .into_response();
            };
            let mut response = Refusal::unauthorized("authentication required").into_response();
            let headers = response.headers_mut();
            headers.insert(X_GATEHOUSE_LOCATION, location);
            for cookie in cookies {
                headers.append(SET_COOKIE, cookie);
            }
            response
        }
        (refusal, _) => refusal.into_response(),
    }
}

/// The caller of one check, for the listener on `listener_port`.
pub fn caller(peer: SocketAddr, listener_port: u16, secure: bool) -> Caller {
    Caller {
        peer,
        listener_port,
        secure,
    }
}
