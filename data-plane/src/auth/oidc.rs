//! OpenID Connect login on a node. The node sends a browser without a session to the
//! provider (with a URL the control plane makes), and relays the browser's return (`code`,
//! `state` and the binding cookie) and the provider's back-channel logout token to the
//! control plane, which alone talks to the provider. Four routes under the prefix:
//! `/oidc/login` (a sign-in link), `/oidc/callback`, `/oidc/backchannel-logout` and
//! `/oidc/logout`.

use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::header::{ALLOW, CONTENT_TYPE, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tonic::Code;

use super::{Origin, Refusal, cookie, logged_in, login_failed, query, unavailable};
use crate::body::{self, ProxyBody};
use crate::control::ControlError;
use crate::personal;
use crate::respond;
use crate::state::NodeState;
use crate::vproxy::{OidcAuthentication, VirtualProxy};

pub const LOGIN: &str = "/oidc/login";
pub const CALLBACK: &str = "/oidc/callback";
pub const BACKCHANNEL_LOGOUT: &str = "/oidc/backchannel-logout";
pub const LOGOUT: &str = "/oidc/logout";

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
    proxy: &VirtualProxy,
    relative_path: &str,
    request: Request<Incoming>,
    origin: &Origin,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    match (relative_path, &proxy.oidc) {
        (LOGIN, Some(oidc)) => login(state, proxy, oidc, &parts, origin).await,
        (CALLBACK, _) => callback(state, proxy, &parts, origin).await,
        (BACKCHANNEL_LOGOUT, _) => backchannel_logout(state, proxy, &parts, body).await,
        (LOGOUT, Some(oidc)) => logout(state, proxy, oidc, &parts, origin).await,
        _ => respond::error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A browser without a session: 302 to the provider, with the binding cookie that ties the
/// login to this browser. It comes back to the page it asked for.
pub async fn begin(
    state: &NodeState,
    proxy: &VirtualProxy,
    oidc: &OidcAuthentication,
    parts: &Parts,
    origin: &Origin,
) -> Refusal {
    let target = query::local_redirect(parts.uri.path(), parts.uri.query(), "forceAuthentication");
    begin_to(state, proxy, oidc, parts, origin, target).await
}

/// The sign-in URL of this virtual proxy, `/{prefix}/oidc/login?target=...`, coming back to
/// `target`; `None` unless `target` is on this site (see [`local_target`]).
pub fn login_uri(proxy: &VirtualProxy, origin: &Origin, target: &str) -> Option<String> {
    let target = local_target(proxy, target, origin)?;
    Some(origin.url(&format!(
        "{}{LOGIN}?target={}",
        proxy.path_prefix(),
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
    )))
}

/// `GET /{prefix}/oidc/login?target=...`: a sign-in link. With a session, straight to the
/// target; without, to the provider and then to the target. The target is a path on this
/// site, or a URL on this host (its path is kept); default: the virtual proxy's root.
async fn login(
    state: &NodeState,
    proxy: &VirtualProxy,
    oidc: &OidcAuthentication,
    parts: &Parts,
    origin: &Origin,
) -> Response<ProxyBody> {
    if parts.method != Method::GET {
        return method_not_allowed("GET");
    }
    let requested = query::param(parts.uri.query(), "target")
        .unwrap_or_else(|| format!("{}/", proxy.path_prefix()));
    let Some(target) = local_target(proxy, &requested, origin) else {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "target must be a path on this site",
        );
    };
    if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) {
        match state.validate(proxy, token).await {
            crate::state::Validation::Valid(_) => return respond::redirect(&target, None),
            crate::state::Validation::Invalid => {}
            crate::state::Validation::Unavailable => return unavailable(),
        }
    }
    begin_to(state, proxy, oidc, parts, origin, target).await
}

/// `requested` as a path on this site: a path with one leading `/`, or an absolute URL on one
/// of the proxy's own origins (reduced to its path and query). Anything else (another host,
/// `//host`, `/\host`, another scheme) is `None`: no open redirect.
fn local_target(proxy: &VirtualProxy, requested: &str, origin: &Origin) -> Option<String> {
    let path = if requested.starts_with('/') {
        requested.to_owned()
    } else {
        if !crate::origin::is_on_own_origin(proxy, origin, requested) {
            return None;
        }
        let uri: http::Uri = requested.parse().ok()?;
        uri.path_and_query()?.as_str().to_owned()
    };
    let local = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.chars().any(char::is_control);
    local.then_some(path)
}

async fn begin_to(
    state: &NodeState,
    proxy: &VirtualProxy,
    oidc: &OidcAuthentication,
    parts: &Parts,
    origin: &Origin,
    target: String,
) -> Refusal {
    let redirect_uri = origin.url(&format!("{}{CALLBACK}", proxy.path_prefix()));
    let request = pb::OidcBeginRequest {
        virtual_proxy: proxy.prefix.clone(),
        redirect_uri,
        target,
        binding: cookie::read(&parts.headers, oidc.binding_cookie(origin.secure))
            .unwrap_or_default()
            .to_owned(),
    };
    match state.control.oidc_begin(request).await {
        Ok(started) => {
            let max_age = started
                .login_timeout
                .and_then(|timeout| u64::try_from(timeout.seconds).ok())
                .unwrap_or(600);
            let binding = binding_cookie(proxy, oidc, &started.binding, max_age, origin.secure);
            respond::redirect(&started.authorization_uri, binding)
        }
        Err(error) => refused(state, error),
    }
}

/// `GET /{prefix}/oidc/callback?code=..&state=..`: the browser is back from the provider.
async fn callback(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Response<ProxyBody> {
    if parts.method != Method::GET {
        return method_not_allowed("GET");
    }
    let query = parts.uri.query();
    if let Some(error) = query::param(query, "error") {
        state.metrics.login("oidc", "refused");
        // The provider's error code is shown only if it is a plain OAuth error code.
        let code = if !error.is_empty()
            && error.len() <= 64
            && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            error
        } else {
            "error".to_owned()
        };
        return respond::error(
            StatusCode::UNAUTHORIZED,
            &format!("the identity provider did not log you in ({code})"),
        );
    }
    let (Some(login_state), Some(code)) =
        (query::param(query, "state"), query::param(query, "code"))
    else {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "the login callback needs code and state",
        );
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
        iss: query::param(query, "iss").unwrap_or_default(),
    };
    match state.control.oidc_callback(request).await {
        Ok((login, target)) => match logged_in(state, proxy, origin, Ok(login), "oidc") {
            Ok(authenticated) => {
                let target = query::local_redirect(&target, None, "");
                respond::redirect(&target, authenticated.set_cookie)
            }
            Err(refusal) => refusal,
        },
        // The login's state may be used up: retrying this URL cannot work.
        Err(ControlError::Unavailable(detail)) => {
            tracing::warn!(%detail, "OpenID callback: control plane unavailable");
            respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the login could not be finished; open the page you wanted again to log in",
            )
        }
        Err(error) => refused(state, error),
    }
}

/// `POST /{prefix}/oidc/backchannel-logout` (form field `logout_token`), from the provider.
/// 200 once the sessions are ended, 400 for a request or token that is not acceptable.
async fn backchannel_logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    body: Incoming,
) -> Response<ProxyBody> {
    if parts.method != Method::POST {
        return method_not_allowed("POST");
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
        return logout_error("the request must be application/x-www-form-urlencoded");
    }
    let body: Bytes = match Limited::new(body, MAX_LOGOUT_REQUEST).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return logout_error("the request body is too large or was cut short"),
    };
    let form = String::from_utf8_lossy(&body);
    let Some(token) = query::param(Some(&form), "logout_token").filter(|t| !t.is_empty()) else {
        return logout_error("logout_token is required");
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
            response
        }
        Err(ControlError::Refused(status)) if status.code() == Code::InvalidArgument => {
            logout_error("the logout token is not valid")
        }
        Err(error) => refused(state, error),
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
) -> Response<ProxyBody> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return method_not_allowed("GET, POST");
    }
    if let Err(refusal) = personal::end_own_session(state, proxy, parts, origin).await {
        return refusal;
    }
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
        None => {
            let mut page = respond::error(StatusCode::OK, "");
            *page.body_mut() = body::full(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
                 <body><h1>You are signed out.</h1></body></html>\n",
            );
            page.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            page
        }
    };
    if let Some(clear) = cookie::clear(proxy, origin.secure) {
        response.headers_mut().append(SET_COOKIE, clear);
    }
    response
}

/// `Set-Cookie` for the binding cookie: SameSite=Lax always, since the browser comes back
/// from the provider's site with a top-level GET; no Domain, so it stays with this host;
/// over TLS a `__Host-` name, which browsers accept only from this host over HTTPS.
fn binding_cookie(
    proxy: &VirtualProxy,
    oidc: &OidcAuthentication,
    value: &str,
    max_age: u64,
    secure: bool,
) -> Option<HeaderValue> {
    let mut cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        oidc.binding_cookie(secure)
    );
    if oidc.binding_is_secure(secure) || proxy.cookie_host_prefix {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

/// What the browser (or provider) gets when the control plane says no or cannot answer:
/// its own short reason for a login it refused or a request it found malformed, else what
/// any other login would get.
fn refused(state: &NodeState, error: ControlError) -> Response<ProxyBody> {
    match &error {
        ControlError::Refused(status)
            if matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument) =>
        {
            state.metrics.login("oidc", "refused");
            // The control plane's reasons are short fixed texts meant for the user.
            let http = if status.code() == Code::Unauthenticated {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            respond::error(http, status.message())
        }
        _ => login_failed(state, error, "oidc"),
    }
}

/// Back-Channel Logout 1.0, section 2.8: 400 with an OAuth error body.
fn logout_error(description: &str) -> Response<ProxyBody> {
    respond::json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": "invalid_request", "error_description": description }),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut response = respond::error(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_sites_paths_are_login_targets() {
        let origin = Origin::new(true, "gh.example.com").unwrap();
        let proxy = VirtualProxy::from_proto(&Default::default(), None).unwrap();
        let local = |requested: &str| local_target(&proxy, requested, &origin);
        assert_eq!(local("/app/hub?x=1").as_deref(), Some("/app/hub?x=1"));
        assert_eq!(
            local("https://gh.example.com/app/a?b=c").as_deref(),
            Some("/app/a?b=c")
        );
        assert_eq!(local("https://GH.example.com").as_deref(), Some("/"));
        for refused in [
            "https://evil.example.com/app/",
            "//evil.example.com/",
            "/\\evil.example.com/",
            "javascript:alert(1)",
            "app/hub",
            "/a\nb",
        ] {
            assert_eq!(local(refused), None, "{refused}");
        }
    }
}
