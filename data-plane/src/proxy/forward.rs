//! The forward phase for plain HTTP: the rewritten request goes to the virtual proxy's
//! upstream pool, and the answer comes back with the upstream's attempts to set Gatehouse's
//! cookies removed. An upstream that gives no answer is a refusal whose status says how it
//! failed; the detail goes to the log only.

use std::net::SocketAddr;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::cache::CachedSession;
use crate::proxy::headers;
use crate::refusal::{Refusal, UpstreamFailure};
use crate::request::context::RequestCtx;
use crate::state::NodeState;
use crate::upstream::UpstreamError;

/// Which upstream node answered, carried on the response for the access log.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredBy(pub SocketAddr);

/// Sends `request` upstream for `session`'s user (`None` on a public path: sticky balancing
/// then has no session to keep in place).
pub async fn http(
    state: &NodeState,
    ctx: &RequestCtx,
    session: Option<&CachedSession>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let proxy = &ctx.proxy;
    let request = request.map(BodyExt::boxed);
    let sent = std::time::Instant::now();
    match proxy
        .upstream
        .send(request, session.map(|session| session.handle.as_str()))
        .await
    {
        Ok((response, address)) => {
            state
                .metrics
                .upstream_answered(&proxy.metric_label, sent.elapsed().as_secs_f64());
            let (mut parts, body) = response.into_parts();
            headers::from_upstream(&mut parts.headers, ctx.session_cookies());
            parts.extensions.insert(AnsweredBy(address));
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(error) => Err(failed(state, ctx, &error)),
    }
}

/// An upstream failure, counted; the refusal says how it failed, the log why.
pub fn failed(state: &NodeState, ctx: &RequestCtx, error: &UpstreamError) -> Refusal {
    state
        .metrics
        .upstream_failure(&ctx.proxy.prefix, failure_kind(error));
    upstream_refusal(error)
}

fn failure_kind(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::NoNodes => "no-nodes",
        UpstreamError::Connect(_) => "connect",
        UpstreamError::Timeout(_) => "timeout",
        UpstreamError::Failed { .. } => "other",
    }
}

/// What the client is told of an upstream failure; the detail goes to the log only.
pub fn upstream_refusal(error: &UpstreamError) -> Refusal {
    tracing::warn!(%error, "upstream request failed");
    Refusal::Upstream(match error {
        UpstreamError::NoNodes => UpstreamFailure::NoNodes,
        UpstreamError::Timeout(_) => UpstreamFailure::Timeout,
        UpstreamError::Connect(_) | UpstreamError::Failed { .. } => UpstreamFailure::Unreachable,
    })
}
