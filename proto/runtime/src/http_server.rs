//! The one hardened HTTP serve loop every Gatehouse listener runs: the data-plane node's
//! proxy port, the control plane's REST surface and both admin ports. What it guarantees on
//! each: accept errors back off instead of spinning; an optional connection limit (past it
//! the caller's service answers and the connection closes, or the connection is dropped);
//! the first request must arrive within the header-read timeout counted from the accept;
//! request heads are bounded; an optional idle limit; and on [`Serving::shutdown`] it stops
//! accepting, asks every connection to finish its current request, and waits a grace for
//! them. The TLS handshake (and what it learns) stays with the caller: `connect` turns each
//! accepted stream into the stream HTTP is spoken over and the service that answers.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::idle::{Activity, Watched};

/// An accepted connection as `connect` receives it: its bytes are watched for the idle limit.
pub type AcceptedStream = Watched<TcpStream>;

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only (the REST surface: QPS clients speak nothing else).
    Http1,
    /// HTTP/1.1 and HTTP/2 (prior knowledge or ALPN), with HTTP/1 upgrades (WebSockets).
    Http1AndHttp2,
}

/// What happens to a connection accepted past `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastCapacity {
    /// Served without keep-alive; `connect` learns it ([`Arrival::over_capacity`]) so its
    /// service can say so (a 503) instead of the client hanging.
    Answer,
    /// Closed at once, with a warning.
    Drop,
}

/// The limits of one listener; each caller keeps its own values.
#[derive(Debug, Clone, Copy)]
pub struct ListenerPolicy {
    pub protocols: Protocols,
    /// Time a client has to send a request head; the first is counted from the accept.
    pub header_read_timeout: Duration,
    /// All request headers together, in bytes (HTTP/1).
    pub max_header_bytes: usize,
    /// A connection that moves no byte for this long is closed; none: no limit.
    pub idle_timeout: Option<Duration>,
    /// Connections served at once; none: no limit.
    pub max_connections: Option<usize>,
    pub past_capacity: PastCapacity,
    /// Pause after a failed accept (out of file descriptors and the like).
    pub accept_backoff: Duration,
    pub log_lines: LogLines,
}

/// The words this listener's log lines use, so each keeps the lines it always wrote.
#[derive(Debug, Clone, Copy)]
pub struct LogLines {
    /// Warning after a failed accept (with the error).
    pub accept_failed: &'static str,
    /// Warning when a connection past the limit is dropped.
    pub dropped_at_capacity: &'static str,
    /// Debug line when a connection ends with an error.
    pub connection_failed: &'static str,
}

impl LogLines {
    /// The wording of the node's listeners and the admin ports.
    pub const PLAIN: Self = Self {
        accept_failed: "accept failed",
        dropped_at_capacity: "connection dropped at the connection limit",
        connection_failed: "connection ended with an error",
    };
}

/// A connection just accepted.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub peer: SocketAddr,
    /// Accepted past the connection limit (with [`PastCapacity::Answer`]).
    pub over_capacity: bool,
}

/// A listener running in the background.
#[derive(Debug)]
pub struct Serving {
    stop: CancellationToken,
    accepting: tokio::task::JoinHandle<()>,
    connections: TaskTracker,
}

/// Whether every connection closed within the shutdown grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    Completely,
    GraceRanOut,
}

impl Serving {
    /// Stops accepting, asks every open connection to close once its current request is
    /// answered, and waits up to `grace` for them.
    pub async fn shutdown(self, grace: Duration) -> Drained {
        self.stop.cancel();
        let _ = self.accepting.await;
        self.connections.close();
        match tokio::time::timeout(grace, self.connections.wait()).await {
            Ok(()) => Drained::Completely,
            Err(_) => Drained::GraceRanOut,
        }
    }
}

/// Serves `listener` under `policy` in the background. For each accepted stream, `connect`
/// returns the stream HTTP is spoken over and the service that answers on it, or `None`
/// to close it (a failed TLS handshake, say).
pub fn serve<C, Fut, Io, S, B>(listener: TcpListener, policy: ListenerPolicy, connect: C) -> Serving
where
    C: Fn(AcceptedStream, Arrival) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Io, S)>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let accepting = tokio::spawn(accept_loop(
        listener,
        policy,
        connect,
        stop.clone(),
        connections.clone(),
    ));
    Serving {
        stop,
        accepting,
        connections,
    }
}

async fn accept_loop<C, Fut, Io, S, B>(
    listener: TcpListener,
    policy: ListenerPolicy,
    connect: C,
    stop: CancellationToken,
    connections: TaskTracker,
) where
    C: Fn(AcceptedStream, Arrival) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Io, S)>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let capacity = policy
        .max_connections
        .map(|limit| Arc::new(Semaphore::new(limit)));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "{}", policy.log_lines.accept_failed);
                    tokio::time::sleep(policy.accept_backoff).await;
                    continue;
                }
            },
        };
        let permit = capacity
            .as_ref()
            .and_then(|capacity| capacity.clone().try_acquire_owned().ok());
        let over_capacity = capacity.is_some() && permit.is_none();
        if over_capacity && policy.past_capacity == PastCapacity::Drop {
            tracing::warn!("{}", policy.log_lines.dropped_at_capacity);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let pending = connect(
            Watched::new(stream, activity.clone()),
            Arrival {
                peer,
                over_capacity,
            },
        );
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Some((io, service)) = pending.await {
                let watch = ConnectionWatch { activity, stop };
                serve_connection(io, service, watch, &policy, !over_capacity).await;
            }
        });
    }
}

/// What a connection's task watches besides its traffic: when it last moved, and the
/// listener's stop.
struct ConnectionWatch {
    activity: Activity,
    stop: CancellationToken,
}

async fn serve_connection<Io, S, B>(
    io: Io,
    service: S,
    watch: ConnectionWatch,
    policy: &ListenerPolicy,
    keep_alive: bool,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let ConnectionWatch { activity, stop } = watch;
    // hyper's header timeout only starts once the HTTP version is known, which takes the
    // client's first bytes: a connection that sent nothing was held until `idle_timeout`
    // (5 minutes by default), so idle connections could fill `max_connections` at no cost
    // to the client. The first request now has `header_read_timeout` from the start.
    let arrived = Arc::new(AtomicBool::new(false));
    let service = FirstRequest {
        inner: service,
        arrived: arrived.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if policy.protocols == Protocols::Http1 {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(keep_alive)
        .header_read_timeout(policy.header_read_timeout)
        .max_buf_size(policy.max_header_bytes);
    builder.http2().timer(TokioTimer::new());
    let io = TokioIo::new(io);
    match policy.protocols {
        // hyper-util's upgradeable connection ignores `http1_only`: HTTP/1 alone is served
        // without upgrades, so an HTTP/2 preface stays refused.
        Protocols::Http1 => {
            let connection = builder.serve_connection(io, service);
            drive(connection, activity, stop, policy, &arrived).await;
        }
        Protocols::Http1AndHttp2 => {
            let connection = builder.serve_connection_with_upgrades(io, service);
            drive(connection, activity, stop, policy, &arrived).await;
        }
    }
}

/// Runs `connection` to its end, closing it gracefully on shutdown or when idle, and
/// dropping it when no request arrives in time.
async fn drive<G: Graceful>(
    connection: G,
    activity: Activity,
    stop: CancellationToken,
    policy: &ListenerPolicy,
    arrived: &AtomicBool,
) {
    let idle = async {
        match policy.idle_timeout {
            Some(limit) => activity.idle_for(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(connection);
    tokio::select! {
        // An upgrade also ends this future: the WebSocket lives on without an idle limit.
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "{}", policy.log_lines.connection_failed);
            }
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        () = idle => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        // No request is in progress: dropping the connection is all there is to do.
        () = first_request_overdue(arrived, policy.header_read_timeout) => {
            tracing::debug!("no request within the header read timeout");
        }
    }
}

/// The two hyper-util connection types this loop drives, as one.
trait Graceful: Future<Output = Result<(), Box<dyn StdError + Send + Sync>>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for auto::Connection<'_, I, S, TokioExecutor>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B> Graceful for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Completes once `limit` has passed without the connection's first request arriving.
async fn first_request_overdue(arrived: &AtomicBool, limit: Duration) {
    tokio::time::sleep(limit).await;
    if arrived.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// A connection's service that notes when its first request arrives.
struct FirstRequest<S> {
    inner: S,
    arrived: Arc<AtomicBool>,
}

impl<S, R> Service<R> for FirstRequest<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        self.arrived.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}
