//! The Personal API over HTTP, under each virtual proxy's prefix as in QPS:
//! `GET /{prefix}/qps/user` tells who is logged in, `DELETE /{prefix}/qps/user` logs out;
//! the user's other sessions are under `/qps/user/sessions` (`own_sessions`).

use std::net::SocketAddr;

use http::header::SET_COOKIE;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::json;

use crate::auth::identify::bearer;
use crate::auth::login::{allowed_target, login_uri};
use crate::auth::{cookie, csrf, oidc, query, saml};
use crate::body::ProxyBody;
use crate::endpoints::own_sessions;
use crate::endpoints::saml_logout::ToIdp;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::respond;
use crate::state::{Asker, NodeState, Validation};
use crate::virtual_proxy::VirtualProxy;

pub async fn handle(
    state: &NodeState,
    ctx: &RequestCtx,
    parts: &Parts,
) -> Result<Response<ProxyBody>, Refusal> {
    let (proxy, origin) = (&*ctx.proxy, &ctx.origin);
    if ctx.relative_path == "/qps/csrftoken" {
        return csrf_token(state, proxy, parts, origin, ctx.client.peer).await;
    }
    if own_sessions::is_route(&ctx.relative_path) {
        return own_sessions::handle(state, ctx, parts).await;
    }
    let asker = Asker {
        headers: &parts.headers,
        peer: ctx.client.peer,
    };
    match parts.method {
        Method::GET => who_am_i(state, proxy, parts, origin, asker).await,
        Method::DELETE => logout(state, proxy, parts, origin).await,
        _ => Err(Refusal::MethodNotAllowed {
            reason: "use GET or DELETE".into(),
            allow: "GET, DELETE",
        }),
    }
}

async fn who_am_i(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    asker: Asker<'_>,
) -> Result<Response<ProxyBody>, Refusal> {
    if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) {
        match state.validate(proxy, token, asker).await {
            Validation::Valid(session) => {
                return Ok(respond::json(
                    StatusCode::OK,
                    &json!({
                        "userDirectory": session.user_directory,
                        "userId": session.user_id,
                        "userName": session.user_id,
                        "logoutUri": origin.url(&format!("{}/qps/user", proxy.path_prefix())),
                    }),
                ));
            }
            Validation::Invalid => {}
            Validation::Unavailable => {
                return Err(Refusal::unavailable("sessions cannot be checked right now"));
            }
            Validation::Limited(limited) => return Err(limited.refusal()),
        }
    }
    let mut inactive = json!({ "session": "inactive" });
    let target = query::param(parts.uri.query(), "targetUri");
    if let Some(target) = &target
        && (proxy.oidc.is_some() || proxy.saml.is_some())
    {
        // An OpenID Connect or SAML proxy signs in at its own /oidc/login or /saml/login,
        // which comes back only to this host: no open redirects.
        let login = if proxy.oidc.is_some() {
            oidc::login_uri(proxy, origin, target)
        } else {
            saml::login_uri(proxy, origin, target)
        };
        if let Some(login) = login {
            inactive["loginUri"] = login.into();
        }
        return Ok(respond::json(StatusCode::OK, &inactive));
    }
    if let (Some(target), Some(module)) = (target, &proxy.authentication_module_uri) {
        // Only a target on an allowed host gets a login URI: no open redirects.
        if let Some(target) = allowed_target(proxy, origin, &target) {
            state.start_login(proxy, asker)?;
            let login = login_uri(state, proxy, origin, module, &target).await;
            if let Err(refusal) = &login {
                state.login_answered(proxy, asker, refusal);
            }
            inactive["loginUri"] = login?.into();
        }
    }
    Ok(respond::json(StatusCode::OK, &inactive))
}

async fn logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Result<Response<ProxyBody>, Refusal> {
    let mut response = match own_sessions::end_own_session(state, proxy, parts, origin).await? {
        Some(session) => {
            // A SAML session is also ended at the identity provider: the page that called
            // this sends the browser to `samlLogoutUri`, or posts `samlLogoutForm` (a
            // redirect would be followed by the script's request, not the browser).
            let at_provider =
                super::saml_logout::idp_logout(state, proxy, parts, origin, &session.handle).await;
            let user = session.user.unwrap_or_default();
            let mut ended = json!({ "session": "ended", "userDirectory": user.user_directory, "userId": user.user_id });
            let mut binding = None;
            match at_provider {
                Some((ToIdp::Redirect(uri), cookie)) => {
                    ended["samlLogoutUri"] = uri.into();
                    binding = cookie;
                }
                // The provider takes only HTTP-POST: the page posts this form there.
                Some((ToIdp::Post(form), cookie)) => {
                    ended["samlLogoutForm"] = json!({
                        "action": form.action,
                        "SAMLRequest": form.value,
                        "RelayState": form.relay_state,
                    });
                    binding = cookie;
                }
                None => {}
            }
            let mut response = respond::json(StatusCode::OK, &ended);
            if let Some(binding) = binding {
                response.headers_mut().append(SET_COOKIE, binding);
            }
            response
        }
        None => respond::json(StatusCode::OK, &json!({ "session": "inactive" })),
    };
    for clear in cookie::clear_session(proxy, origin.secure) {
        response.headers_mut().append(SET_COOKIE, clear);
    }
    Ok(response)
}

/// `GET /{prefix}/qps/csrftoken`: the session's CSRF token in the `qlik-csrf-token` header.
/// With a JWT bearer token (as in QPS) it also logs in and sets the cookie, so a WebSocket
/// client can open its socket with the cookie and the CSRF token.
async fn csrf_token(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::GET {
        return Err(Refusal::method_not_allowed("GET"));
    }
    if let Some(login) = bearer(state, proxy, parts, origin, peer).await {
        return match login {
            Ok((mut authenticated, token)) => {
                let mut response = respond::json(StatusCode::OK, &json!({ "csrf": "issued" }));
                if let Ok(value) = HeaderValue::from_str(&csrf::token_for(&token)) {
                    response.headers_mut().insert(csrf::TOKEN_HEADER, value);
                }
                for cookie in authenticated.take_cookies() {
                    response.headers_mut().append(SET_COOKIE, cookie);
                }
                Ok(response)
            }
            Err(refusal) => Err(refusal),
        };
    }
    let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) else {
        return Err(Refusal::unauthorized("authentication required"));
    };
    let asker = Asker {
        headers: &parts.headers,
        peer,
    };
    match state.validate(proxy, token, asker).await {
        Validation::Valid(_) => {
            let mut response = respond::json(StatusCode::OK, &json!({ "csrf": "issued" }));
            if let Ok(value) = HeaderValue::from_str(&csrf::token_for(token)) {
                response.headers_mut().insert(csrf::TOKEN_HEADER, value);
            }
            Ok(response)
        }
        Validation::Invalid => Err(Refusal::unauthorized("authentication required")),
        Validation::Unavailable => {
            Err(Refusal::unavailable("sessions cannot be checked right now"))
        }
        Validation::Limited(limited) => Err(limited.refusal()),
    }
}
