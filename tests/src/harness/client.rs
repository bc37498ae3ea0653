//! A small HTTP and WebSocket client for talking to data-plane nodes as a browser would,
//! except that it never follows redirects: tests look at the 302, its `Location` and its
//! `Set-Cookie` themselves.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest any single request of a test may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole response: status, headers and the body read to its end.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON; panics (with the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "response ({}) is not JSON ({error}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.header(LOCATION.as_str())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The `Set-Cookie` header for cookie `name`, if there is one.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|cookie| cookie.starts_with(&format!("{name}=")))
    }

    /// `name=value` of a cookie this response sets, ready for a `Cookie` header.
    pub fn cookie_pair(&self, name: &str) -> Option<String> {
        let cookie = self.set_cookie(name)?;
        Some(cookie.split(';').next()?.trim().to_owned())
    }
}

/// Sends one request on a new connection and reads the whole response.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    try_request(method.clone(), url, headers, body)
        .await
        .unwrap_or_else(|error| panic!("{method} {url} failed: {error}"))
}

/// As [`request`], but a failure to connect or read is an `Err` rather than a panic.
pub async fn try_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse, String> {
    // One client per request: no connection is reused between requests, so each one shows
    // what a fresh browser connection would see.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
            HeaderValue::from_str(value).map_err(|e| e.to_string())?,
        );
    }
    let request = builder
        .body(Full::new(body.into()))
        .map_err(|e| e.to_string())?;
    send_on(&client, request, REQUEST_TIMEOUT).await
}

/// As [`try_request`], from the local address `local` (another loopback address such as
/// 127.0.0.2 is another network to a server that trusts 127.0.0.1 alone).
pub async fn request_from(
    local: std::net::IpAddr,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(local));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(connector);
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("a request");
    send_on(&client, request, REQUEST_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{url} from {local}: {error}"))
}

/// Sends `request` on `client` and reads the whole response, within `timeout`.
pub(super) async fn send_on(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(Method::GET, url, headers, Bytes::new()).await
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    request(Method::POST, url, headers, Bytes::from(body.to_owned())).await
}

pub async fn delete(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(Method::DELETE, url, headers, Bytes::new()).await
}

/// `key=value` query encoding of one value (RFC 3986 unreserved characters kept).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The decoded value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let value = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)?
        .1;
    Some(decode(value))
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket (`ws://...`) with extra request headers. `Err` holds the HTTP status
/// when the server refused the upgrade, or 0 when the connection failed.
pub async fn websocket(url: &str, headers: &[(&str, &str)]) -> Result<WebSocket, u16> {
    websocket_handshake(url, headers)
        .await
        .map(|(socket, _)| socket)
}

/// As [`websocket`], also returning the headers of the server's `101` answer.
pub async fn websocket_handshake(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(WebSocket, HeaderMap), u16> {
    let mut request = url.into_client_request().map_err(|_| 0u16)?;
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(0);
        };
        request.headers_mut().insert(name, value);
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((socket, response))) => Ok((socket, response.headers().clone())),
        Ok(Err(tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
        Ok(Err(_)) | Err(_) => Err(0),
    }
}

/// The next text, binary or close message, skipping pings and pongs; `None` when the
/// connection ended without a close frame or nothing arrived within `wait`.
pub async fn next_message(socket: &mut WebSocket, wait: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        match message {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            other => return Some(other),
        }
    }
}

/// Waits for the server's close frame.
pub async fn expect_close(socket: &mut WebSocket, wait: Duration) -> Option<CloseFrame> {
    match next_message(socket, wait).await {
        Some(Message::Close(frame)) => frame,
        other => panic!("expected a close frame within {wait:?}, got {other:?}"),
    }
}
