//! Admission: whether an identified request may go on. A WebSocket must come from an allowed
//! origin (checked before the upgrade's headers are touched), and, where the virtual proxy
//! asks for it, carry the CSRF token unless this very request created its session; every
//! request passes the proxy's access rules. [`identify_and_admit`] is the order every front
//! end (the proxy, forward authentication) runs them in around identification, and where a
//! request on a public path skips identification.

use http::request::Parts;

use crate::auth::identify::{self, Identified, TicketLanding};
use crate::auth::login::Authenticated;
use crate::auth::rules::Visitor;
use crate::auth::{cookie, csrf, query, rules};
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::request::public;
use crate::state::NodeState;

/// Who an admitted request goes on as.
#[derive(Debug)]
pub enum Admitted {
    /// On a public path: nobody. No session was looked up or started, and the upstream gets
    /// no identity header.
    Public,
    User(Identified),
}

/// Identification between the two admission checks: a WebSocket from a foreign origin is
/// refused before any login is attempted for it. A request on a public path is not
/// identified at all, and only the access rules apply to it.
pub async fn identify_and_admit(
    state: &NodeState,
    ctx: &RequestCtx,
    parts: &Parts,
    landing: TicketLanding,
) -> Result<Admitted, Refusal> {
    websocket_origin(ctx, parts)?;
    if is_public(ctx, parts) {
        if let Some(reason) = rules::denied(
            &ctx.proxy.access_rules,
            &ctx.relative_path,
            parts.method.as_str(),
            Visitor::Public,
        ) {
            return Err(Refusal::forbidden(reason));
        }
        state.metrics.public_request(&ctx.proxy.metric_label);
        return Ok(Admitted::Public);
    }
    let found = identify::identify(state, ctx, parts, landing).await?;
    identified(ctx, parts, &found.user)?;
    Ok(Admitted::User(found))
}

/// Whether a request is served without identification: a public path and method, and
/// neither a WebSocket upgrade (a socket lives on after its request, so it belongs to a
/// session a revocation can close) nor a login ticket (redeemed as anywhere else, so that it
/// never reaches the upstream).
fn is_public(ctx: &RequestCtx, parts: &Parts) -> bool {
    !ctx.proxy.public_paths.is_empty()
        && !ctx.websocket
        && public::is_public(
            &ctx.proxy.public_paths,
            &ctx.relative_path,
            parts.method.as_str(),
        )
        && query::param(parts.uri.query(), "qlikTicket").is_none()
}

/// Before identification: a WebSocket upgrade from an origin the proxy does not trust is
/// refused, whatever session it carries.
pub fn websocket_origin(ctx: &RequestCtx, parts: &Parts) -> Result<(), Refusal> {
    if ctx.websocket && !csrf::websocket_origin_allowed(parts, &ctx.proxy, &ctx.origin) {
        return Err(Refusal::forbidden("WebSocket origin is not allowed"));
    }
    Ok(())
}

/// After identification: the WebSocket CSRF token and the access rules.
pub fn identified(ctx: &RequestCtx, parts: &Parts, user: &Authenticated) -> Result<(), Refusal> {
    let proxy = &ctx.proxy;
    // A session this very request created (ticket, header, anonymous) proves intent; an
    // existing cookie alone does not, since a cross-site page can make the browser send it.
    if ctx.websocket && proxy.websocket_requires_csrf_token && user.set_cookie.is_none() {
        let carries = cookie::read(&parts.headers, &proxy.cookie_name)
            .is_some_and(|token| csrf::carries_token(parts, token));
        if !carries {
            return Err(Refusal::forbidden(
                "WebSocket upgrades here need the qlik-csrf-token",
            ));
        }
    }
    if let Some(reason) = rules::denied(
        &proxy.access_rules,
        &ctx.relative_path,
        parts.method.as_str(),
        Visitor::User(&user.session),
    ) {
        return Err(Refusal::forbidden(reason));
    }
    Ok(())
}
