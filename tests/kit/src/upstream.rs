//! An upstream engine stand-in on a loopback port: answers HTTP requests and echoes WebSocket
//! messages back. Two kinds: [`EchoUpstream::start`] answers every request with what it
//! received (as JSON) and remembers it, for tests that look at what the proxy forwarded;
//! [`EchoUpstream::plain`] answers `200 ok` and remembers nothing, so that 100k requests
//! through it cost a benchmark no memory.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::http_client::small_buffers;

#[derive(Debug, Default)]
struct Shared {
    /// Answer with what was received, and remember it; otherwise `200 ok`.
    echo: bool,
    /// Every request received, as the JSON it was answered with (upgrades included).
    seen: Mutex<Vec<Value>>,
    /// Added before every HTTP answer.
    delay_ms: AtomicU64,
    /// Connection and WebSocket tasks, ended by `stop` (only when echoing).
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Connections accepted so far.
    connections: AtomicU64,
}

impl Shared {
    fn track(&self, task: JoinHandle<()>) {
        if self.echo {
            let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            tasks.retain(|task| !task.is_finished());
            tasks.push(task);
        }
    }
}

/// A running upstream; stopped when dropped.
#[derive(Debug)]
pub struct EchoUpstream {
    name: String,
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// An upstream on an ephemeral port that names itself `name` in every answer, answers
    /// with what it received and remembers it.
    pub async fn start(name: &str) -> std::io::Result<Self> {
        Self::listen(name, SocketAddr::from(([127, 0, 0, 1], 0)), true).await
    }

    /// An upstream on `address` that answers every request `200 ok` and remembers nothing.
    pub async fn plain(address: SocketAddr) -> std::io::Result<Self> {
        Self::listen("plain", address, false).await
    }

    async fn listen(name: &str, address: SocketAddr, echo: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            echo,
            ..Shared::default()
        });
        let accept = tokio::spawn(accept_loop(listener, name.to_owned(), shared.clone()));
        Ok(Self {
            name: name.to_owned(),
            address,
            shared,
            accept: Some(accept),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `127.0.0.1:port`, as a virtual proxy's upstream node list wants it.
    pub fn node(&self) -> String {
        self.address.to_string()
    }

    /// Makes every following HTTP answer wait this long (a slow engine).
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(millis, Ordering::Relaxed);
    }

    /// What the upstream has received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Closes every open connection but keeps listening, as an engine closing its idle
    /// keep-alive connections does.
    pub fn close_connections(&self) {
        for task in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }

    /// Stops listening and drops every open connection, as a crashed engine would.
    pub fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.close_connections();
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, name: String, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close before trying again.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let name = name.clone();
        let connection_shared = shared.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |request| {
                let name = name.clone();
                let shared = connection_shared.clone();
                async move { Ok::<_, Infallible>(answer(request, &name, &shared).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        shared.track(task);
    }
}

async fn answer(
    mut request: Request<Incoming>,
    name: &str,
    shared: &Arc<Shared>,
) -> Response<Full<Bytes>> {
    let seen = shared.echo.then(|| {
        let seen = json!({
            "upstream": name,
            "method": request.method().as_str(),
            "path": request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
            "headers": headers_json(request.headers()),
        });
        shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seen.clone());
        seen
    });

    let upgrade_accept = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .and_then(|accept| HeaderValue::from_str(&accept).ok());
    if let Some(accept) = upgrade_accept {
        let upgrade = hyper::upgrade::on(&mut request);
        let task = tokio::spawn(async move {
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
        shared.track(task);
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        return response;
    }

    // Read the body, so a request with one is complete before the answer.
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let delay = shared.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let Some(mut reply) = seen else {
        return Response::new(Full::new(Bytes::from_static(b"ok")));
    };
    reply["body"] = String::from_utf8_lossy(&body).into_owned().into();
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Lowercase name → value, or a list of values when the header repeats.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    Value::Object(
        map.into_iter()
            .map(|(name, mut values)| {
                let value = if values.len() == 1 {
                    Value::String(values.remove(0))
                } else {
                    Value::from(values)
                };
                (name, value)
            })
            .collect(),
    )
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
