//! The OpenID Connect routes under a virtual proxy's prefix: `/oidc/login` (a sign-in
//! link), `/oidc/callback` (the browser back from the provider), `/oidc/backchannel-logout`
//! (the provider's logout token) and `/oidc/logout`. The node relays what arrives to the
//! control plane, which alone talks to the provider.

use std::net::SocketAddr;

use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use crate::auth::client::login_client;
use crate::auth::login::logged_in;
use crate::auth::oidc::{BACKCHANNEL_LOGOUT, CALLBACK, LOGIN, LOGOUT, begin_to, refused};
use crate::auth::{cookie, query};
use crate::body::{self, ProxyBody};
use crate::control::ControlError;
use crate::endpoints::own_sessions;
use crate::endpoints::sign_in::{SignIn, sign_in};
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::respond;
use crate::state::Asker;
use crate::state::NodeState;
use crate::virtual_proxy::{OidcAuthentication, VirtualProxy};

/// Largest back-channel logout request read (a logout token is well under this).
const MAX_LOGOUT_REQUEST: usize = 64 * 1024;

/// Whether `relative_path` (the path after the prefix) is one of this module's routes, on a
/// virtual proxy with OpenID Connect.
pub fn is_route(proxy: &VirtualProxy, relative_path: &str) -> bool {
    proxy.oidc.is_some()
        && matches!(
            relative_path,
            LOGIN | CALLBACK | BACKCHANNEL_LOGOUT | LOGOUT
        )
}

/// Serves a path [`is_route`] accepted.
pub async fn route(
    state: &NodeState,
    ctx: &RequestCtx,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (proxy, origin) = (&*ctx.proxy, &ctx.origin);
    let (parts, body) = request.into_parts();
    match (ctx.relative_path.as_str(), &proxy.oidc) {
        (LOGIN, Some(_)) => login(state, proxy, &parts, origin, ctx.client.peer).await,
        (CALLBACK, _) => callback(state, proxy, &parts, origin, ctx.client.peer).await,
        (BACKCHANNEL_LOGOUT, _) => backchannel_logout(state, proxy, &parts, body).await,
        (LOGOUT, Some(oidc)) => logout(state, proxy, oidc, &parts, origin).await,
        _ => Err(Refusal::NotFound("not found".into())),
    }
}

/// `GET /{prefix}/oidc/login?target=...`: a sign-in link. With a session, straight to the
/// target; without, to the provider and then to the target.
async fn login(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Refusal> {
    let asker = Asker {
        headers: &parts.headers,
        peer,
    };
    let target = match sign_in(state, proxy, parts, origin, asker).await? {
        SignIn::AlreadyIn(redirect) => return Ok(redirect),
        SignIn::Start(target) => target,
    };
    let answer = begin_to(state, proxy, parts, origin, target).await;
    state.login_answered(proxy, asker, &answer);
    Err(answer)
}

/// `GET /{prefix}/oidc/callback?code=..&state=..`: the browser is back from the provider.
async fn callback(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::GET {
        return Err(Refusal::method_not_allowed("GET"));
    }
    let (login_state, code, iss) = match CallbackQuery::read(parts.uri.query()) {
        CallbackQuery::Code {
            state: login_state,
            code,
            iss,
        } => (login_state, code, iss),
        CallbackQuery::Refused { error } => {
            state.metrics.login("oidc", "refused");
            return Err(Refusal::unauthorized(format!(
                "the identity provider did not log you in ({error})"
            )));
        }
        CallbackQuery::Incomplete => {
            return Err(Refusal::bad_request(
                "the login callback needs code and state",
            ));
        }
    };
    let binding = proxy
        .oidc
        .as_ref()
        .and_then(|oidc| cookie::read(&parts.headers, oidc.binding_cookie(origin.secure)))
        .unwrap_or_default();
    let request = pb::OidcCallbackRequest {
        virtual_proxy: proxy.prefix.clone(),
        state: login_state,
        code,
        binding: binding.to_owned(),
        iss,
        client: Some(login_client(&state.trusted_proxies, &parts.headers, peer)),
    };
    match state.control.oidc_callback(request).await {
        Ok((login, target)) => {
            let mut authenticated = logged_in(state, proxy, origin, Ok(login), "oidc")?;
            let target = query::local_redirect(&target, None, "");
            let mut response = respond::redirect(&target, None);
            for cookie in authenticated.take_cookies() {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            Ok(response)
        }
        // The login's state may be used up: retrying this URL cannot work.
        Err(ControlError::Unavailable(detail) | ControlError::StoreUnavailable(detail)) => {
            tracing::warn!(%detail, "OpenID callback: control plane unavailable");
            Err(Refusal::unavailable(
                "the login could not be finished; open the page you wanted again to log in",
            ))
        }
        Err(error) => Err(refused(state, error)),
    }
}

/// What the provider sent the browser back with (RFC 6749, 4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackQuery {
    /// A code to exchange, for the login `state` names; `iss` is empty when not sent.
    Code {
        state: String,
        code: String,
        iss: String,
    },
    /// The provider did not log the user in. `error` is shown to the user: the provider's
    /// code when it is a plain OAuth error code (`access_denied`), else just `error`.
    Refused { error: String },
    /// Neither `error` nor both `code` and `state`.
    Incomplete,
}

impl CallbackQuery {
    /// Reads the callback's query string; an `error` wins over a code.
    pub fn read(query: Option<&str>) -> Self {
        if let Some(error) = query::param(query, "error") {
            let plain = !error.is_empty()
                && error.len() <= 64
                && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            return Self::Refused {
                error: if plain { error } else { "error".to_owned() },
            };
        }
        match (query::param(query, "state"), query::param(query, "code")) {
            (Some(state), Some(code)) => Self::Code {
                state,
                code,
                iss: query::param(query, "iss").unwrap_or_default(),
            },
            _ => Self::Incomplete,
        }
    }
}

/// `POST /{prefix}/oidc/backchannel-logout` (form field `logout_token`), from the provider.
/// 200 once the sessions are ended, 400 for a request or token that is not acceptable.
async fn backchannel_logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::POST {
        return Err(Refusal::method_not_allowed("POST"));
    }
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(';').next().is_some_and(|kind| {
                kind.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(logout_error(
            "the request must be application/x-www-form-urlencoded",
        ));
    }
    let body: Bytes = match Limited::new(body, MAX_LOGOUT_REQUEST).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(logout_error(
                "the request body is too large or was cut short",
            ));
        }
    };
    let form = String::from_utf8_lossy(&body);
    let Some(token) = query::param(Some(&form), "logout_token").filter(|t| !t.is_empty()) else {
        return Err(logout_error("logout_token is required"));
    };
    match state
        .control
        .oidc_backchannel_logout(&proxy.prefix, &token)
        .await
    {
        Ok(_) => {
            let mut response = Response::new(body::empty());
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            Ok(response)
        }
        Err(ControlError::Invalid(_)) => Err(logout_error("the logout token is not valid")),
        Err(error) => Err(refused(state, error)),
    }
}

/// `GET` or `POST /{prefix}/oidc/logout`: ends the session here, then sends the browser to
/// the provider's end-session page (when it has one and the redirect is on). Same cross-site
/// rule as `DELETE /qps/user`.
async fn logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    oidc: &OidcAuthentication,
    parts: &Parts,
    origin: &Origin,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(Refusal::method_not_allowed("GET, POST"));
    }
    own_sessions::end_own_session(state, proxy, parts, origin).await?;
    let end_session = if oidc.end_session_redirect {
        match state.control.oidc_end_session(&proxy.prefix).await {
            Ok(uri) => uri,
            Err(error) => {
                // Logged out here all the same; only the provider's session lives on.
                tracing::warn!(%error, "cannot find the provider's end-session page");
                None
            }
        }
    } else {
        None
    };
    let mut response = match end_session {
        Some(uri) => respond::redirect(&uri, None),
        None => respond::html(
            StatusCode::OK,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
             <body><h1>You are signed out.</h1></body></html>\n",
        ),
    };
    for clear in cookie::clear_session(proxy, origin.secure) {
        response.headers_mut().append(SET_COOKIE, clear);
    }
    Ok(response)
}

/// Back-Channel Logout 1.0, section 2.8: 400 with an OAuth error body.
fn logout_error(description: &'static str) -> Refusal {
    Refusal::InvalidOAuthRequest(description.into())
}
