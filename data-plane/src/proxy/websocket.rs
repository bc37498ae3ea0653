//! WebSockets: the upgrade is checked (`Origin` against the host allow list, the session's
//! and the node's WebSocket limits), passed to an upstream node, and the two connections are
//! relayed frame by frame (`websocket_relay`), so that when the session ends the node can
//! send the browser a proper close frame.

use std::sync::Arc;

use http::header::{CONNECTION, SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{self, ProxyBody};
use crate::cache::CachedSession;
use crate::respond;
use crate::sockets::{WebSocketLimits, WebSocketRefusal};
use crate::state::NodeState;
use crate::vproxy::VirtualProxy;

/// Whether a request asks to become a WebSocket.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket")
}

/// Passes the upgrade upstream; on 101, splices the two sides until either closes or the
/// session ends.
pub async fn splice(
    state: &NodeState,
    proxy: &Arc<VirtualProxy>,
    session: &Arc<CachedSession>,
    mut parts: Parts,
    client_upgrade: OnUpgrade,
    session_cookies: &[String],
) -> Response<ProxyBody> {
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
        Err(refusal) => return refused(state, refusal),
    };
    let request = Request::from_parts(parts, body::empty());
    let mut upstream = match proxy
        .upstream
        .send_upgrade(request, Some(&session.handle))
        .await
    {
        Ok((response, _)) => response,
        Err(error) => return super::upstream_failure(&error),
    };
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream declined the upgrade; its answer goes back as it is.
        let (mut parts, body) = upstream.into_parts();
        super::headers::from_upstream(&mut parts.headers, session_cookies);
        return Response::from_parts(parts, body.boxed());
    }
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upstream.headers().clone();
    super::headers::from_upstream(response.headers_mut(), session_cookies);
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
        super::websocket_relay::relay(
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
    response
}

/// A limit reached: the session's is the client's own doing (429), the node's is a full node
/// that another one may not be (503, with `Retry-After`).
fn refused(state: &NodeState, refusal: WebSocketRefusal) -> Response<ProxyBody> {
    let (status, limit) = match refusal {
        WebSocketRefusal::SessionLimit => (StatusCode::TOO_MANY_REQUESTS, "session"),
        WebSocketRefusal::NodeLimit => (StatusCode::SERVICE_UNAVAILABLE, "node"),
    };
    state.metrics.websocket_refused(limit);
    respond::error(status, &refusal.to_string())
}
