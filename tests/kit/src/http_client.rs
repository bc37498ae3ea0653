//! A lean HTTP and WebSocket client: one kept-alive HTTP/1.1 connection per poller, so that a
//! poll costs one loopback round trip and no connect, and WebSockets with small buffers, so
//! that ten thousand idle ones cost the client little. Readiness probes and `/metrics` use it
//! too.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::header::{COOKIE, HOST, ORIGIN};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest a single request may take before the run is called failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One kept-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Connection {
    sender: http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connect to {address}"))?;
        // Polls are tiny: Nagle would hold each one back behind the previous ACK.
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: address.to_string(),
        })
    }

    /// GET `path` with an optional `Cookie` header; the body is read to its end so the
    /// connection can carry the next request.
    pub async fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::get(path).header(HOST, &self.host);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let request = request.body(Empty::new())?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("GET {path} on {}: no answer in time", self.host))?
    }
}

/// GET on a fresh connection (readiness probes, metrics).
pub async fn get_once(address: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
    Connection::open(address).await?.get(path, None).await
}

pub type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket through a node with a session cookie, and an `Origin` that is the
/// node's own host (the node refuses foreign origins).
pub async fn websocket(address: SocketAddr, path: &str, cookie: &str) -> Result<WebSocket> {
    let mut request = format!("ws://{address}{path}").into_client_request()?;
    request
        .headers_mut()
        .insert(ORIGIN, format!("http://{address}").parse()?);
    request.headers_mut().insert(COOKIE, cookie.parse()?);
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to {address}"))?;
    stream.set_nodelay(true)?;
    let connect = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(small_buffers()),
    );
    match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => bail!("WebSocket upgrade through {address} refused: {error}"),
        Err(_) => bail!("WebSocket upgrade through {address}: no answer in time"),
    }
}

/// tungstenite's default read buffer is 128 KiB, zero-filled before every read: 10k idle
/// sockets in the driver (and as many in the upstream) would hold 1.2 GiB each for nothing.
/// Frames larger than the buffer still arrive whole; the buffer grows for them.
pub fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}
