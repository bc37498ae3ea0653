//! WebSockets: the upgrade is checked (`Origin` against the host allow list), passed to an
//! upstream node, and the two connections are spliced message by message, so that when the
//! session ends the node can send the browser a proper close frame.

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{CONNECTION, SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::upstream::ProxyBody;
use crate::cache::CachedSession;
use crate::respond;
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
    let registration = state.sockets.register(&session.handle);
    let request = Request::from_parts(parts, respond::empty());
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
    let mut response = Response::new(respond::empty());
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
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade did not complete");
                return;
            }
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(limits()))
                .await;
        let upstream =
            WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(limits()))
                .await;
        relay(
            client,
            upstream,
            registration.ended.clone(),
            registration.shutting_down.clone(),
        )
        .await;
        tracing::debug!(session = %handle, "WebSocket closed");
        drop(registration);
    });
    response
}

/// Messages are relayed whole, so each is bounded: 16 MiB (tungstenite's default is 64).
/// Reads go through a 4 KiB buffer rather than tungstenite's 128 KiB, which it zero-fills
/// before every read: 256 KiB of touched memory per idle WebSocket (two streams each) made
/// 10k open WebSockets cost 2.5 GiB. Larger frames still arrive whole, in more reads.
fn limits() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
        .read_buffer_size(4 << 10)
}

async fn relay<C, U>(
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    ended: tokio_util::sync::CancellationToken,
    shutting_down: tokio_util::sync::CancellationToken,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    loop {
        tokio::select! {
            () = shutting_down.cancelled() => {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "node shutting down".into(),
                };
                let _ = client_tx.send(Message::Close(Some(frame))).await;
                let _ = upstream_tx.send(Message::Close(None)).await;
                let _ = client_tx.close().await;
                let _ = upstream_tx.close().await;
                return;
            }
            () = ended.cancelled() => {
                let frame = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "session ended".into(),
                };
                let _ = client_tx.send(Message::Close(Some(frame))).await;
                let _ = upstream_tx.send(Message::Close(None)).await;
                let _ = client_tx.close().await;
                let _ = upstream_tx.close().await;
                return;
            }
            message = client_rx.next() => match message {
                Some(Ok(message)) => {
                    let closing = message.is_close();
                    if upstream_tx.send(message).await.is_err() || closing {
                        let _ = client_tx.close().await;
                        return;
                    }
                }
                _ => {
                    let _ = upstream_tx.close().await;
                    return;
                }
            },
            message = upstream_rx.next() => match message {
                Some(Ok(message)) => {
                    let closing = message.is_close();
                    if client_tx.send(message).await.is_err() || closing {
                        let _ = upstream_tx.close().await;
                        return;
                    }
                }
                _ => {
                    let _ = client_tx.close().await;
                    return;
                }
            },
        }
    }
}
