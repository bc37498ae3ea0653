//! The node's own endpoints under a virtual proxy's prefix, answered by the node instead of
//! the upstream: the Personal API (`/qps/user`, `/qps/csrftoken`, `/qps/user/sessions`) and,
//! on a proxy with OpenID Connect or SAML, their routes. They sit above identification and login, which
//! they use.

pub mod oidc;
pub mod own_sessions;
pub mod personal;
pub mod saml;
mod saml_logout;
mod sign_in;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::state::NodeState;

/// One of the node's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Personal,
    Oidc,
    Saml,
}

/// The endpoint a request's path names, if any.
pub fn find(ctx: &RequestCtx) -> Option<Endpoint> {
    if matches!(ctx.relative_path.as_str(), "/qps/user" | "/qps/csrftoken")
        || own_sessions::is_route(&ctx.relative_path)
    {
        return Some(Endpoint::Personal);
    }
    if saml::is_route(&ctx.proxy, &ctx.relative_path) {
        return Some(Endpoint::Saml);
    }
    oidc::is_route(&ctx.proxy, &ctx.relative_path).then_some(Endpoint::Oidc)
}

/// Answers a request [`find`] gave an endpoint for.
pub async fn serve(
    state: &NodeState,
    ctx: &RequestCtx,
    endpoint: Endpoint,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    match endpoint {
        Endpoint::Personal => {
            let (parts, _) = request.into_parts();
            personal::handle(state, ctx, &parts).await
        }
        Endpoint::Oidc => oidc::route(state, ctx, request).await,
        Endpoint::Saml => saml::route(state, ctx, request).await,
    }
}
