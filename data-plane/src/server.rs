//! Binding the node's sockets and serving: the proxy listener and the admin listener, plus
//! the background tasks (the `Watch` follower and activity reports).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_runtime::http_server::{
    self, Arrival, Drained, ListenerPolicy, LogLines, PastCapacity, Protocols,
};
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::background::{activity, watch};
use crate::body::ProxyBody;
use crate::config::{Config, LimitsConfig};
use crate::control::ControlClient;
use crate::http1::{Ended, Replayed};
use crate::refusal::Refusal;
use crate::request::context::Client;
use crate::state::NodeState;
use crate::tls::CertificateStore;
use crate::{admin, forward_auth, http1, proxy};
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
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
    /// `forward_auth.listen`, when set.
    forward_auth: Option<TcpListener>,
    /// `forward_auth.grpc_listen`, when set.
    ext_authz: Option<TcpListener>,
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
        let forward_auth = match config.forward_auth.listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let ext_authz = match config.forward_auth.grpc_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
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
            forward_auth,
            ext_authz,
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

    /// The `ext_authz` listener's address, when it has one.
    pub fn ext_authz_addr(&self) -> Option<SocketAddr> {
        self.ext_authz
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The forward-auth listener's address, when it has one.
    pub fn forward_auth_addr(&self) -> Option<SocketAddr> {
        self.forward_auth
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn state(&self) -> Arc<NodeState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
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
        let forward_auth_tls = tls.clone().filter(|_| self.config.forward_auth.tls);
        // Stops the connections the node's own HTTP/1 engine serves between requests; the
        // listener's shutdown does not reach them until they are handed to hyper.
        let proxy_stop = CancellationToken::new();
        let fast_http1 = self.config.fast_http1.then(|| proxy_stop.clone());
        let proxy = http_server::serve(
            self.listener,
            listener_policy(limits, Some(limits.max_connections)),
            move |stream, arrival| {
                let (state, tls) = (state.clone(), tls.clone());
                let fast_http1 = fast_http1.clone();
                async move {
                    // The node's own HTTP/1 engine serves the connection first, over TLS too
                    // unless the client chose HTTP/2 in the handshake; what it does not serve
                    // it hands to hyper with the bytes it read.
                    let engine =
                        fast_http1
                            .as_ref()
                            .filter(|_| !arrival.over_capacity)
                            .map(|stop| http1::serve::Connection {
                                state: &state,
                                client: Client {
                                    peer: arrival.peer,
                                    listener_port,
                                    secure,
                                    traced: false,
                                },
                                limits: &limits,
                                stop,
                            });
                    let io = match tls {
                        Some(tls) => {
                            // The handshake counts as reading the request head: same limit.
                            let handshake = tokio::time::timeout(
                                limits.header_read_timeout,
                                tls.accept(stream),
                            )
                            .await;
                            let stream = match handshake {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, peer = %arrival.peer, "TLS handshake failed");
                                    return None;
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %arrival.peer, "TLS handshake timed out");
                                    return None;
                                }
                            };
                            let chose_http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            match engine.filter(|_| !chose_http2) {
                                Some(engine) => Either::Left(Either::Right(
                                    serve_fast_http1(engine, stream).await?,
                                )),
                                None => Either::Left(Either::Left(stream)),
                            }
                        }
                        None => match engine {
                            Some(engine) => Either::Right(Either::Right(
                                serve_fast_http1(engine, stream).await?,
                            )),
                            None => Either::Right(Either::Left(stream)),
                        },
                    };
                    Some((io, proxy_service(state, arrival, listener_port, secure)))
                }
            },
        );
        // Stops the forward-auth connections that the node's own HTTP/1 loop serves, which
        // the listener's shutdown does not reach until they are handed to hyper.
        let forward_auth_stop = CancellationToken::new();
        let forward_auth = self.forward_auth.map(|listener| {
            serve_forward_auth(
                listener,
                ForwardAuthListener {
                    state: self.state.clone(),
                    trusted_networks: Arc::new(self.config.forward_auth.trusted_networks.clone()),
                    limits,
                    tls: forward_auth_tls,
                    fast_http1: self
                        .config
                        .forward_auth
                        .fast_http1
                        .then(|| forward_auth_stop.clone()),
                },
            )
        });
        let ext_authz = self.ext_authz.map(|listener| {
            serve_ext_authz(
                listener,
                self.state.clone(),
                Arc::new(self.config.forward_auth.trusted_networks.clone()),
                limits.max_connections,
            )
        });
        let state = self.state.clone();
        let log_level = admin::LogLevel {
            logs: self.logs.clone(),
            token: self.config.admin_token.clone(),
        };
        let admin = http_server::serve(
            self.admin,
            listener_policy(limits, None),
            move |stream, arrival| {
                let (state, log_level) = (state.clone(), log_level.clone());
                let service = service_fn(move |request| {
                    let (state, log_level) = (state.clone(), log_level.clone());
                    async move {
                        Ok::<_, Infallible>(
                            admin::handle(state, log_level, arrival.peer, request).await,
                        )
                    }
                });
                std::future::ready(Some((stream, service)))
            },
        );
        shutdown.await;
        // Out of rotation first, then stop accepting, then let what is in flight finish.
        self.state.begin_drain();
        self.state.sockets.shut_down();
        let grace = self.config.shutdown_grace;
        // Checks are short: they drain alongside the proxy's requests.
        forward_auth_stop.cancel();
        proxy_stop.cancel();
        let forward_auth_drained = async {
            match forward_auth {
                Some(server) => server.shutdown(grace).await,
                None => Drained::Completely,
            }
        };
        let ext_authz_drained = async {
            if let Some((stop, task)) = ext_authz {
                let _ = stop.send(());
                let _ = tokio::time::timeout(grace, task).await;
            }
        };
        let (proxy_drained, _, ()) = tokio::join!(
            proxy.shutdown(grace),
            forward_auth_drained,
            ext_authz_drained
        );
        if proxy_drained == Drained::GraceRanOut {
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
        // The admin port outlived the proxy port, so /ready could say so; its connections
        // are not waited for.
        let _ = admin.shutdown(Duration::ZERO).await;
        watcher.abort();
        reporter.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        // What was used but not yet reported still counts.
        activity::report_once(&self.state).await;
    }
}

/// The largest `ext_authz` check decoded: Envoy's own limit on a request's headers is 60 KiB.
const EXT_AUTHZ_MAX_CHECK: usize = 96 * 1024;
/// Checks in flight on one `ext_authz` connection.
const EXT_AUTHZ_STREAMS: u32 = 128;
/// How long a check may take, and a keepalive ping may go unanswered.
const EXT_AUTHZ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often an idle `ext_authz` connection is pinged.
const EXT_AUTHZ_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// The `ext_authz` gRPC service: stopped by the sender, which lets checks in flight finish.
fn serve_ext_authz(
    listener: TcpListener,
    state: Arc<NodeState>,
    trusted_networks: Arc<Vec<ipnet::IpNet>>,
    max_connections: usize,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener_port = listener.local_addr().map_or(0, |address| address.port());
    let service = forward_auth::ext_authz::ExtAuthz {
        state,
        trusted_networks,
        listener_port,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Bounds on what one caller can hold: a check's size (ingresses send headers of at
        // most tens of KiB; tonic's default is 4 MiB per message), streams per connection,
        // and how long a check or an idle connection may take.
        let served = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(EXT_AUTHZ_STREAMS))
            .concurrency_limit_per_connection(EXT_AUTHZ_STREAMS as usize)
            .timeout(EXT_AUTHZ_TIMEOUT)
            .http2_keepalive_interval(Some(EXT_AUTHZ_KEEPALIVE))
            .http2_keepalive_timeout(Some(EXT_AUTHZ_TIMEOUT))
            .add_service(
                AuthorizationServer::new(service).max_decoding_message_size(EXT_AUTHZ_MAX_CHECK),
            )
            .serve_with_incoming_shutdown(
                forward_auth::connections::limited(listener, max_connections),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the ext_authz service stopped");
        }
    });
    (stop, task)
}

/// What the forward-auth listener serves with.
struct ForwardAuthListener {
    state: Arc<NodeState>,
    trusted_networks: Arc<Vec<ipnet::IpNet>>,
    limits: LimitsConfig,
    tls: Option<TlsAcceptor>,
    /// With `forward_auth.fast_http1`: the stop of the connections its loop serves.
    fast_http1: Option<CancellationToken>,
}

/// The forward-auth listener: the same limits as the proxy port, over TLS if asked. Plain
/// HTTP/1.1 checks are answered by the node's own loop (`forward_auth::fast_http1`) until a
/// request needs hyper.
fn serve_forward_auth(listener: TcpListener, serving: ForwardAuthListener) -> http_server::Serving {
    let ForwardAuthListener {
        state,
        trusted_networks,
        limits,
        tls,
        fast_http1,
    } = serving;
    let secure = tls.is_some();
    let listener_port = listener.local_addr().map_or(0, |address| address.port());
    http_server::serve(
        listener,
        listener_policy(limits, Some(limits.max_connections)),
        move |mut stream, arrival| {
            let (state, tls, trusted) = (state.clone(), tls.clone(), trusted_networks.clone());
            let fast_http1 = fast_http1.clone();
            async move {
                let caller = forward_auth::http::caller(arrival.peer, listener_port, secure);
                let io = match tls {
                    Some(tls) => {
                        match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => Either::Left(stream),
                            _ => {
                                tracing::debug!(peer = %arrival.peer, "forward-auth TLS handshake failed");
                                return None;
                            }
                        }
                    }
                    None => match fast_http1 {
                        Some(stop) if !arrival.over_capacity => {
                            let checks = forward_auth::fast_http1::Checks {
                                state: &state,
                                trusted_networks: &trusted,
                                caller,
                                limits: &limits,
                                stop: &stop,
                            };
                            match checks.serve(&mut stream).await {
                                Ended::Closed => return None,
                                Ended::HandedOver { read } => {
                                    Either::Right(Either::Right(Replayed::new(read, stream)))
                                }
                            }
                        }
                        _ => Either::Right(Either::Left(stream)),
                    },
                };
                let service = service_fn(move |request| {
                    let (state, trusted) = (state.clone(), trusted.clone());
                    async move {
                        if arrival.over_capacity {
                            return Ok::<_, Infallible>(
                                Refusal::unavailable(
                                    "this node is at its connection limit; try again",
                                )
                                .into_response(),
                            );
                        }
                        Ok(forward_auth::http::handle(state, &trusted, request, caller).await)
                    }
                });
                Some((io, service))
            }
        },
    )
}

/// The node's listeners under its `[limits]`: past `max_connections` a connection is
/// answered 503 and closed, so an overloaded node says so instead of hanging.
fn listener_policy(limits: LimitsConfig, max_connections: Option<usize>) -> ListenerPolicy {
    ListenerPolicy {
        protocols: Protocols::Http1AndHttp2,
        header_read_timeout: limits.header_read_timeout,
        max_header_bytes: limits.max_header_bytes,
        idle_timeout: Some(limits.idle_timeout),
        max_connections,
        past_capacity: PastCapacity::Answer,
        accept_backoff: Duration::from_millis(50),
        log_lines: LogLines::PLAIN,
    }
}

/// Serves a connection with the node's own HTTP/1 engine while it can: `None` once the
/// connection has closed, else the stream for hyper, replaying the bytes the engine read.
async fn serve_fast_http1<S: AsyncRead + AsyncWrite + Unpin>(
    engine: http1::serve::Connection<'_>,
    mut stream: S,
) -> Option<Replayed<S>> {
    match engine.serve(&mut stream).await {
        Ended::Closed => None,
        Ended::HandedOver { read } => Some(Replayed::new(read, stream)),
    }
}

/// The proxy port's service for one connection: past the connection limit, every request on
/// it is told so.
fn proxy_service(
    state: Arc<NodeState>,
    arrival: Arrival,
    listener_port: u16,
    secure: bool,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send,
> + Send
+ 'static {
    service_fn(move |request| {
        let state = state.clone();
        async move {
            if arrival.over_capacity {
                return Ok::<_, Infallible>(
                    Refusal::unavailable("this node is at its connection limit; try again")
                        .into_response(),
                );
            }
            Ok(proxy::handle(state, request, arrival.peer, listener_port, secure).await)
        }
    })
}
