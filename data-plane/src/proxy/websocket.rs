//! WebSockets: the upgrade is checked (`Origin` against the host allow list, the session's
//! and the node's WebSocket limits), passed to an upstream node, and the two connections are
//! relayed frame by frame (`websocket_relay`), so that when the session ends the node can
//! send the browser a proper close frame.

use std::sync::Arc;

use http::header::{SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{self, ProxyBody};
use crate::cache::CachedSession;
use crate::proxy::forward::upstream_refusal;
use crate::proxy::{headers, websocket_relay};
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::sockets::{WebSocketLimits, WebSocketRefusal};
use crate::state::NodeState;

/// Passes the upgrade upstream; on 101, splices the two sides until either closes or the
/// session ends.
pub async fn splice(
    state: &NodeState,
    ctx: &RequestCtx,
    session: &Arc<CachedSession>,
    mut parts: Parts,
    client_upgrade: OnUpgrade,
) -> Result<Response<ProxyBody>, Refusal> {
    let session_cookies = ctx.session_cookies();
    // Extensions such as permessage-deflate change the frames; the node relays plain ones.
    parts.headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    parts
        .headers
        .insert(UPGRADE, HeaderValue::from_static("websocket"));
    let limits = WebSocketLimits {
        per_session: state.limits.max_websockets_per_session,
        per_node: state.limits.max_websockets,
    };
    let registration = match state.sockets.register(&session.handle, limits) {
        Ok(registration) => registration,
        Err(refusal) => return Err(refused(state, refusal)),
    };
    let request = Request::from_parts(parts, body::empty());
    let mut upstream = match ctx
        .proxy
        .upstream
        .send_upgrade(request, Some(&session.handle))
        .await
    {
        Ok((response, _)) => response,
        Err(error) => return Err(upstream_refusal(&error)),
    };
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream declined the upgrade; its answer goes back as it is.
        let (mut parts, body) = upstream.into_parts();
        headers::from_upstream(&mut parts.headers, session_cookies);
        return Ok(Response::from_parts(parts, body.boxed()));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upstream.headers().clone();
    headers::from_upstream(response.headers_mut(), session_cookies);
    // The upgrade itself is hop-by-hop; put back what the client must see.
    response.headers_mut().insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    response
        .headers_mut()
        .insert(UPGRADE, HeaderValue::from_static("websocket"));

    let handle = session.handle.clone();
    let max_frame_bytes = state.limits.max_websocket_frame_bytes;
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade did not complete");
                return;
            }
        };
        websocket_relay::relay(
            TokioIo::new(client),
            TokioIo::new(upstream),
            max_frame_bytes,
            registration.ended.clone(),
            registration.shutting_down.clone(),
        )
        .await;
        tracing::debug!(session = %handle, "WebSocket closed");
        drop(registration);
    });
    Ok(response)
}

/// A limit reached: the session's is the client's own doing (429), the node's is a full node
/// that another one may not be (503, with `Retry-After`).
fn refused(state: &NodeState, refusal: WebSocketRefusal) -> Refusal {
    let reason = refusal.to_string();
    match refusal {
        WebSocketRefusal::SessionLimit => {
            state.metrics.websocket_refused("session");
            Refusal::TooMany(reason.into())
        }
        WebSocketRefusal::NodeLimit => {
            state.metrics.websocket_refused("node");
            Refusal::Unavailable(reason.into())
        }
    }
}
