//! The caller's own sessions over HTTP, beside `/qps/user`: `GET /{prefix}/qps/user/sessions`
//! lists where the user is logged in through this virtual proxy, `DELETE
//! /{prefix}/qps/user/sessions/{handle}` ends one of those sessions. The control plane's
//! Personal API decides whose sessions they are; a handle of another user is not found.

use gatehouse_proto::v1 as pb;
use http::header::SET_COOKIE;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::auth::{cookie, csrf};
use crate::body::ProxyBody;
use crate::control::ControlError;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::respond;
use crate::state::{Asker, NodeState, Validation};
use crate::virtual_proxy::VirtualProxy;

/// The listing's path below the prefix; one session is `{SESSIONS}/{handle}`.
pub const SESSIONS: &str = "/qps/user/sessions";

/// Whether `relative_path` is the listing or one of its sessions.
pub fn is_route(relative_path: &str) -> bool {
    relative_path
        .strip_prefix(SESSIONS)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Serves a path [`is_route`] accepted.
pub async fn handle(
    state: &NodeState,
    ctx: &RequestCtx,
    parts: &Parts,
) -> Result<Response<ProxyBody>, Refusal> {
    let (proxy, origin) = (&*ctx.proxy, &ctx.origin);
    let handle = ctx
        .relative_path
        .strip_prefix(SESSIONS)
        .unwrap_or_default()
        .trim_start_matches('/');
    let asker = Asker {
        headers: &parts.headers,
        peer: ctx.client.peer,
    };
    match (&parts.method, handle.is_empty()) {
        (&Method::GET, true) => list(state, proxy, parts, asker).await,
        (&Method::DELETE, false) => end(state, proxy, parts, origin, (handle, asker)).await,
        (_, true) => Err(Refusal::method_not_allowed("GET")),
        (_, false) => Err(Refusal::method_not_allowed("DELETE")),
    }
}

/// The request's session token, once the node has checked it is a live session here.
async fn caller<'a>(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &'a Parts,
    asker: Asker<'_>,
) -> Result<(&'a str, String), Refusal> {
    let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) else {
        return Err(Refusal::unauthorized("authentication required"));
    };
    match state.validate(proxy, token, asker).await {
        Validation::Valid(session) => Ok((token, session.handle.clone())),
        Validation::Invalid => Err(Refusal::unauthorized("authentication required")),
        Validation::Unavailable => {
            Err(Refusal::unavailable("sessions cannot be checked right now"))
        }
        Validation::Limited(limited) => Err(limited.refusal()),
    }
}

async fn list(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    asker: Asker<'_>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (token, _) = caller(state, proxy, parts, asker).await?;
    let own = match state.control.own_sessions(&proxy.prefix, token).await {
        Ok(Some(own)) => own,
        Ok(None) => return Err(Refusal::unauthorized("authentication required")),
        Err(error) => return Err(refused(&error)),
    };
    let sessions: Vec<_> = own
        .sessions
        .iter()
        .map(|session| listed(session, &own.current_handle))
        .collect();
    Ok(respond::json(
        StatusCode::OK,
        &json!({ "sessions": sessions }),
    ))
}

/// One session as the listing shows it: never its token, which the control plane does not
/// have either.
fn listed(session: &pb::Session, current_handle: &str) -> serde_json::Value {
    let time = |at: &Option<prost_types::Timestamp>| at.as_ref().map(ToString::to_string);
    json!({
        "handle": session.handle,
        "created": time(&session.created),
        "lastActive": time(&session.last_active),
        "clientAddress": session.client_address,
        "userAgent": session.user_agent,
        "current": session.handle == current_handle,
    })
}

/// Ends one of the caller's sessions. Refused unless the request comes from an allowed
/// origin or carries the CSRF token, as logging out is: a cross-site page must not end the
/// user's sessions. `handle` is the one to end, and who asks.
async fn end(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    (handle, asker): (&str, Asker<'_>),
) -> Result<Response<ProxyBody>, Refusal> {
    let token = cookie::read(&parts.headers, &proxy.cookie_name);
    csrf::admit_own_endpoint_call(parts, proxy, origin, token)?;
    let (token, current_handle) = caller(state, proxy, parts, asker).await?;
    let Ok(handle) = percent_encoding::percent_decode_str(handle).decode_utf8() else {
        return Err(not_yours());
    };
    let ended = match state
        .control
        .end_own_session(&proxy.prefix, token, &handle)
        .await
    {
        Ok(Some(ended)) => ended,
        Ok(None) => return Err(not_yours()),
        Err(ControlError::NotAccepted(_)) => {
            return Err(Refusal::unauthorized("authentication required"));
        }
        Err(error) => return Err(refused(&error)),
    };
    // The revocation reaches every node through Watch; this node need not wait for it.
    state.end_session(&ended.handle);
    let current = ended.handle == current_handle;
    let mut response = respond::json(
        StatusCode::OK,
        &json!({ "session": "ended", "handle": ended.handle, "current": current }),
    );
    if current {
        for clear in cookie::clear_session(proxy, origin.secure) {
            response.headers_mut().append(SET_COOKIE, clear);
        }
    }
    Ok(response)
}

/// One answer for a handle of no session and for another user's: handles cannot be probed.
fn not_yours() -> Refusal {
    Refusal::NotFound("you have no such session".into())
}

fn refused(error: &ControlError) -> Refusal {
    match error {
        ControlError::Unavailable(_) | ControlError::StoreUnavailable(_) => {
            Refusal::unavailable("sessions cannot be reached right now; try again")
        }
        ControlError::Invalid(_) => Refusal::bad_request("that is not a session handle"),
        error => {
            tracing::warn!(%error, "own sessions request failed");
            Refusal::unavailable("sessions cannot be reached right now; try again")
        }
    }
}

/// Ends the session of the request's cookie, if it has one, and returns it. Refused unless
/// the request comes from an allowed origin or carries the CSRF token: a cross-site page
/// must not be able to log the user out.
pub async fn end_own_session(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Result<Option<gatehouse_proto::v1::Session>, Refusal> {
    let token = cookie::read(&parts.headers, &proxy.cookie_name);
    csrf::admit_own_endpoint_call(parts, proxy, origin, token)?;
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
        Err(ControlError::Unavailable(_) | ControlError::StoreUnavailable(_)) => {
            Err(Refusal::unavailable("cannot log out right now; try again"))
        }
        Err(error) => {
            tracing::warn!(%error, "logout refused");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_and_its_sessions_are_routes_and_nothing_else() {
        assert!(is_route("/qps/user/sessions"));
        assert!(is_route("/qps/user/sessions/abc.def"));
        assert!(!is_route("/qps/user/sessionsx"));
        assert!(!is_route("/qps/user"));
    }
}
