//! The upstream engine stand-in: answers every HTTP request `200 ok` and echoes WebSocket
//! messages. It records nothing, so 100k requests through it cost the driver no memory.

use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::client::small_buffers;

/// An upstream serving in this process; stops accepting when dropped.
#[derive(Debug)]
pub struct EchoUpstream {
    pub address: SocketAddr,
    accept: JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start(address: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let accept = tokio::spawn(accept_loop(listener));
        Ok(Self { address, accept })
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves until stdin ends (the driver that started it is gone): the upstream as a process
/// of its own (`gatehouse-bench upstream`), so its sockets count against its own open-file
/// limit, not the driver's.
pub async fn serve_until_stdin_ends(address: SocketAddr) -> Result<()> {
    let upstream = EchoUpstream::start(address).await?;
    tokio::task::spawn_blocking(|| {
        let mut buffer = [0u8; 64];
        let mut stdin = std::io::stdin();
        while stdin.read(&mut buffer)? > 0 {}
        std::io::Result::Ok(())
    })
    .await??;
    drop(upstream);
    Ok(())
}

async fn accept_loop(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close before trying again.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request| async move { Ok::<_, Infallible>(answer(request)) });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn answer(mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    let accept = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .and_then(|accept| HeaderValue::from_str(&accept).ok());
    let Some(accept) = accept else {
        return Response::new(Full::new(Bytes::from_static(b"ok")));
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(small_buffers()),
            )
            .await;
            echo(socket).await;
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo<S>(socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sender, mut receiver) = socket.split();
    while let Some(Ok(message)) = receiver.next().await {
        if message.is_text() || message.is_binary() {
            if sender.send(message).await.is_err() {
                return;
            }
        } else if message.is_close() {
            let _ = sender.close().await;
            return;
        }
    }
}
