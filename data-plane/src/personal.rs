//! The Personal API over HTTP, under each virtual proxy's prefix as in QPS:
//! `GET /{prefix}/qps/user` tells who is logged in, `DELETE /{prefix}/qps/user` logs out.

use http::header::{ALLOW, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::json;

use crate::auth::{self, Origin, cookie, csrf, query};
use crate::body::ProxyBody;
use crate::control::ControlError;
use crate::respond;
use crate::state::{NodeState, Validation};
use crate::vproxy::VirtualProxy;

pub async fn handle(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Response<ProxyBody> {
    if parts.uri.path().ends_with("/qps/csrftoken") {
        return csrf_token(state, proxy, parts, origin).await;
    }
    match parts.method {
        Method::GET => who_am_i(state, proxy, parts, origin).await,
        Method::DELETE => logout(state, proxy, parts, origin).await,
        _ => {
            let mut response = respond::error(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, DELETE"));
            response
        }
    }
}

async fn who_am_i(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Response<ProxyBody> {
    if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) {
        match state.validate(proxy, token).await {
            Validation::Valid(session) => {
                return respond::json(
                    StatusCode::OK,
                    &json!({
                        "userDirectory": session.user_directory,
                        "userId": session.user_id,
                        "userName": session.user_id,
                        "logoutUri": origin.url(&format!("{}/qps/user", proxy.path_prefix())),
                    }),
                );
            }
            Validation::Invalid => {}
            Validation::Unavailable => {
                return respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sessions cannot be checked right now",
                );
            }
        }
    }
    let mut inactive = json!({ "session": "inactive" });
    let target = query::param(parts.uri.query(), "targetUri");
    if let (Some(target), Some(_)) = (&target, &proxy.oidc) {
        // An OpenID Connect proxy signs in at its own /oidc/login, which comes back only to
        // this host: no open redirects.
        if let Some(login) = auth::oidc::login_uri(proxy, origin, target) {
            inactive["loginUri"] = login.into();
        }
        return respond::json(StatusCode::OK, &inactive);
    }
    if let (Some(target), Some(module)) = (target, &proxy.authentication_module_uri) {
        // Only a target on an allowed host gets a login URI: no open redirects.
        if let Some(target) = auth::allowed_target(proxy, origin, &target) {
            match auth::login_uri(state, proxy, origin, module, &target).await {
                Ok(login) => inactive["loginUri"] = login.into(),
                Err(refusal) => return refusal,
            }
        }
    }
    respond::json(StatusCode::OK, &inactive)
}

async fn logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Response<ProxyBody> {
    let mut response = match end_own_session(state, proxy, parts, origin).await {
        Ok(Some(session)) => {
            let user = session.user.unwrap_or_default();
            respond::json(
                StatusCode::OK,
                &json!({ "session": "ended", "userDirectory": user.user_directory, "userId": user.user_id }),
            )
        }
        Ok(None) => respond::json(StatusCode::OK, &json!({ "session": "inactive" })),
        Err(refusal) => return refusal,
    };
    if let Some(clear) = cookie::clear(proxy, origin.secure) {
        response.headers_mut().append(SET_COOKIE, clear);
    }
    response
}

/// Ends the session of the request's cookie, if it has one, and returns it. Refused unless
/// the request comes from an allowed origin or carries the CSRF token: a cross-site page
/// must not be able to log the user out.
pub async fn end_own_session(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Result<Option<gatehouse_proto::v1::Session>, Response<ProxyBody>> {
    let token = cookie::read(&parts.headers, &proxy.cookie_name);
    let trusted = csrf::same_origin(parts, proxy, origin)
        || token.is_some_and(|token| csrf::carries_token(parts, token));
    if !trusted {
        return Err(respond::error(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: send it from an allowed origin or with the qlik-csrf-token header",
        ));
    }
    let Some(token) = token else {
        return Ok(None);
    };
    match state.control.logout(&proxy.prefix, token).await {
        Ok(Some(session)) => {
            // The revocation reaches every node through Watch; this node need not wait for it.
            state.end_session(&session.handle);
            Ok(Some(session))
        }
        Ok(None) => Ok(None),
        Err(ControlError::Unavailable(_)) => Err(respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot log out right now; try again",
        )),
        Err(ControlError::Refused(status)) => {
            tracing::warn!(message = status.message(), "logout refused");
            Ok(None)
        }
    }
}

/// `GET /{prefix}/qps/csrftoken`: the session's CSRF token in the `qlik-csrf-token` header.
/// With a JWT bearer token (as in QPS) it also logs in and sets the cookie, so a WebSocket
/// client can open its socket with the cookie and the CSRF token.
async fn csrf_token(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Response<ProxyBody> {
    if parts.method != Method::GET {
        return respond::error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    if let Some(login) = auth::bearer(state, proxy, parts, origin).await {
        return match login {
            Ok((authenticated, token)) => {
                let mut response = respond::json(StatusCode::OK, &json!({ "csrf": "issued" }));
                if let Ok(value) = HeaderValue::from_str(&csrf::token_for(&token)) {
                    response.headers_mut().insert(csrf::TOKEN_HEADER, value);
                }
                if let Some(cookie) = authenticated.set_cookie {
                    response.headers_mut().append(SET_COOKIE, cookie);
                }
                response
            }
            Err(refusal) => refusal,
        };
    }
    let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) else {
        return respond::error(StatusCode::UNAUTHORIZED, "authentication required");
    };
    match state.validate(proxy, token).await {
        Validation::Valid(_) => {
            let mut response = respond::json(StatusCode::OK, &json!({ "csrf": "issued" }));
            if let Ok(value) = HeaderValue::from_str(&csrf::token_for(token)) {
                response.headers_mut().insert(csrf::TOKEN_HEADER, value);
            }
            response
        }
        Validation::Invalid => respond::error(StatusCode::UNAUTHORIZED, "authentication required"),
        Validation::Unavailable => respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "sessions cannot be checked right now",
        ),
    }
}
