//! Binding the node's sockets and serving: the proxy listener and the admin listener, plus
//! the background tasks (the `Watch` follower and activity reports).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::background::{activity, watch};
use crate::config::Config;
use crate::control::ControlClient;
use crate::idle::{Activity, Watched};
use crate::refusal::Refusal;
use crate::state::NodeState;
use crate::tls::CertificateStore;
use crate::{admin, proxy};
use gatehouse_runtime::logging::LogControl;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    ControlPlane(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A node whose sockets are bound.
#[derive(Debug)]
pub struct BoundNode {
    listener: TcpListener,
    admin: TcpListener,
    state: Arc<NodeState>,
    config: Config,
    certificates: Option<Arc<CertificateStore>>,
    logs: Option<LogControl>,
}

impl BoundNode {
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind { address, source })
        };
        let listener = bind(config.listen).await?;
        let admin = bind(config.admin_listen).await?;
        let control = ControlClient::new(&config.control_plane, &config.node_id)
            .map_err(StartError::ControlPlane)?;
        let upstream_tls = crate::upstream::tls::client_config(config.upstream_tls.as_ref())?;
        let state = Arc::new(NodeState::new(&config, control, upstream_tls));
        let certificates = match &config.tls {
            Some(tls) => Some(CertificateStore::load(tls.certificates.clone())?),
            None => None,
        };
        Ok(Self {
            listener,
            admin,
            state,
            config,
            certificates,
            logs: None,
        })
    }

    /// Lets `/log-level` on the admin port change the process's log filter.
    pub fn with_log_control(mut self, logs: LogControl) -> Self {
        self.logs = Some(logs);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn state(&self) -> Arc<NodeState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        // The admin port outlives the proxy port during shutdown, so /ready can say so.
        let admin_stop = CancellationToken::new();
        let admin_tasks = TaskTracker::new();
        let watcher = tokio::spawn(watch::follow(self.state.clone()));
        let reporter = tokio::spawn(activity::report_forever(
            self.state.clone(),
            self.config.cache.touch_interval,
        ));

        let limits = self.config.limits;
        let mut reloader = None;
        let tls = match (&self.certificates, &self.config.tls) {
            (Some(store), Some(settings)) => match store.server_config() {
                Ok(config) => {
                    reloader = Some(tokio::spawn(
                        store.clone().reload_forever(settings.reload_interval),
                    ));
                    Some(TlsAcceptor::from(config))
                }
                Err(error) => {
                    tracing::error!(%error, "TLS cannot be set up; not serving");
                    return;
                }
            },
            _ => None,
        };
        let secure = tls.is_some();
        let listener_port = self
            .listener
            .local_addr()
            .map_or(0, |address| address.port());
        let state = self.state.clone();
        let proxy_listener = Listener {
            listener: self.listener,
            tls,
            capacity: Some(Arc::new(Semaphore::new(limits.max_connections))),
        };
        let proxy_loop = accept_loop(
            proxy_listener,
            stop.clone(),
            tasks.clone(),
            limits,
            move |peer, busy| {
                let state = state.clone();
                service_fn(move |request| {
                    let state = state.clone();
                    async move {
                        if busy {
                            return Ok::<_, Infallible>(
                                Refusal::unavailable(
                                    "this node is at its connection limit; try again",
                                )
                                .into_response(),
                            );
                        }
                        Ok(proxy::handle(state, request, peer, listener_port, secure).await)
                    }
                })
            },
        );
        let state = self.state.clone();
        let admin_listener = Listener {
            listener: self.admin,
            tls: None,
            capacity: None,
        };
        let log_level = admin::LogLevel {
            logs: self.logs.clone(),
            token: self.config.admin_token.clone(),
        };
        let admin_loop = accept_loop(
            admin_listener,
            admin_stop.clone(),
            admin_tasks.clone(),
            limits,
            move |peer, _| {
                let state = state.clone();
                let log_level = log_level.clone();
                service_fn(move |request| {
                    let state = state.clone();
                    let log_level = log_level.clone();
                    async move {
                        Ok::<_, Infallible>(admin::handle(state, log_level, peer, request).await)
                    }
                })
            },
        );
        let proxy_task = tokio::spawn(proxy_loop);
        let admin_task = tokio::spawn(admin_loop);
        shutdown.await;
        // Out of rotation first, then stop accepting, then let what is in flight finish.
        self.state.begin_drain();
        self.state.sockets.shut_down();
        stop.cancel();
        let _ = proxy_task.await;
        tasks.close();
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                "requests still in flight when the shutdown grace ran out"
            );
        }
        // WebSockets were told to go away; give their close frames a moment to leave.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1).min(grace);
        while self.state.sockets.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        admin_stop.cancel();
        let _ = admin_task.await;
        admin_tasks.close();
        watcher.abort();
        reporter.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        // What was used but not yet reported still counts.
        activity::report_once(&self.state).await;
    }
}

/// Connections this listener accepts: served in full while `capacity` has room; past it,
/// answered 503 and closed, so an overloaded node says so instead of hanging.
struct Listener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    capacity: Option<Arc<Semaphore>>,
}

async fn accept_loop<S, F>(
    listener: Listener,
    stop: CancellationToken,
    tasks: TaskTracker,
    limits: crate::config::LimitsConfig,
    make_service: F,
) where
    F: Fn(SocketAddr, bool) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = listener
            .capacity
            .as_ref()
            .and_then(|capacity| capacity.clone().try_acquire_owned().ok());
        let busy = listener.capacity.is_some() && permit.is_none();
        let service = make_service(peer, busy);
        let stop = stop.clone();
        let tls = listener.tls.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let stream = Watched::new(stream, activity.clone());
            match tls {
                Some(tls) => {
                    // The handshake counts as reading the request head: same time limit.
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, activity, service, stop, limits, !busy).await
                        }
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_connection(stream, activity, service, stop, limits, !busy).await,
            }
        });
    }
}

async fn serve_connection<I, S>(
    io: I,
    activity: Activity,
    service: S,
    stop: CancellationToken,
    limits: crate::config::LimitsConfig,
    keep_alive: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
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
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(keep_alive)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        // An upgrade also ends this future: the WebSocket lives on without an idle limit.
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        () = activity.idle_for(limits.idle_timeout) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        // No request is in progress: dropping the connection is all there is to do.
        () = first_request_overdue(&arrived, limits.header_read_timeout) => {
            tracing::debug!("no request within the header read timeout");
        }
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

impl<S, R> hyper::service::Service<R> for FirstRequest<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        self.arrived.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}
