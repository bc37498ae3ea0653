//! Assembles the gRPC server: the four Gatehouse services, health and reflection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::admin::Readiness;
use crate::api::access::{AccessPolicy, Role};
use crate::api::authentication::AuthenticationApi;
use crate::api::node::NodeApi;
use crate::api::personal::PersonalApi;
use crate::api::session::SessionApi;
use crate::assertion::SigningKeys;
use crate::authority::Authority;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, OutageConfig, Overrides, StoreBackend};
use crate::error::StoreError;
use crate::events::RevocationFeed;
use crate::metrics::{Metrics, RpcMetricsLayer};
use crate::outage::OutageFallback;
use crate::store::{MemoryStore, RedisStore, Store};
use crate::virtual_proxies::VirtualProxies;

/// Services whose health is reported: the server as a whole ("") and each Gatehouse service.
const HEALTH_SERVICES: [&str; 5] = [
    "",
    "gatehouse.v1.AuthenticationService",
    "gatehouse.v1.SessionService",
    "gatehouse.v1.PersonalService",
    "gatehouse.v1.NodeService",
];

/// SERVING while this replica can answer data-plane nodes: its store is reachable, or it can
/// vouch for sealed sessions during the outage (keys and recent revocations loaded, within
/// `outage.grace`). Kubernetes' readiness probe asks for it, so an outage of the store shared
/// by every replica does not take them all out of the Service nodes reach them by.
pub const NODES_HEALTH_SERVICE: &str = "gatehouse.nodes";

/// At shutdown, how long the audit sinks may take to write what is queued: long enough for a
/// batch to a healthy receiver, short enough not to eat into the pod's termination grace.
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// How often store reachability is reflected in `grpc.health.v1`.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the session store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up an audit sink: {0}")]
    Audit(#[from] crate::audit::SinkSetupError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error(transparent)]
    Rest(#[from] crate::rest::RestStartError),
    #[error("cannot read TLS material {path}: {source}")]
    Tls {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The server's certificate and the CA its clients' certificates must chain to. A client
/// certificate is optional at the TLS level, so the Personal API works without one; the
/// other services' interceptors require it.
fn server_tls(
    config: &crate::config::TlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, StartError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| StartError::Tls {
            path: path.clone(),
            source,
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read(&config.cert_file)?, read(&config.key_file)?);
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(tonic::transport::Certificate::from_pem(read(
            &config.client_ca_file,
        )?))
        .client_auth_optional(true))
}

/// A control plane whose socket is bound, ready to serve.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    admin: TcpListener,
    health: Option<TcpListener>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    shutdown_grace: Duration,
    authority: Authority,
    access: AccessPolicy,
    tls: Option<tonic::transport::ServerTlsConfig>,
    /// Where the virtual proxies are reloaded from, on change or SIGHUP.
    reload: Option<(PathBuf, Overrides)>,
    logs: Option<crate::logging::LogControl>,
    /// Unlocks `PUT /log-level`; without it, changes are refused.
    admin_token: Option<crate::admin_access::AdminToken>,
    /// The QPS-compatible REST surface, when configured.
    rest: Option<crate::rest::BoundRest>,
    /// Sealing and the outage fallback, unless turned off.
    outage: Option<OutageConfig>,
    /// The life of the keys that sign identity assertions.
    assertion: crate::config::AssertionConfig,
}

/// Builds the store the configuration names.
pub fn build_store(
    config: &Config,
    clock: Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Store>, StoreError> {
    let kept = usize::try_from(config.store.revocation_stream_max_len).unwrap_or(usize::MAX);
    Ok(match config.store.backend {
        StoreBackend::Memory => Arc::new(MemoryStore::new(clock, kept)),
        StoreBackend::Redis => {
            Arc::new(RedisStore::new(&config.store)?.with_metrics(metrics.clone()))
        }
    })
}

impl BoundServer {
    /// Binds the listen address and sets up the store. Redis need not be reachable yet.
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(Metrics::new());
        let store = build_store(config, clock.clone(), &metrics)?;
        Self::bind_with(config, store, clock, metrics).await
    }

    /// As [`bind`](Self::bind), with a given store and clock (tests inject them).
    pub async fn bind_with(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    address: config.listen,
                    source,
                })?;
        let mut authority = Authority::new(
            store,
            VirtualProxies::new(&config.virtual_proxies),
            config.tickets,
            clock,
        )
        .with_audit(crate::audit::Audit::start(
            &config.audit,
            &config.store,
            metrics.clone(),
        )?);
        let rest = match &config.rest {
            Some(rest) => Some(crate::rest::BoundRest::bind(rest, config.tls.as_ref()).await?),
            None => None,
        };
        if config
            .virtual_proxies
            .iter()
            .any(|proxy| proxy.kerberos.is_some())
        {
            crate::kerberos::warn_without_keytab().await;
        }
        if rest.is_some()
            && config
                .tls
                .as_ref()
                .is_some_and(|tls| tls.roles.admin.is_empty())
        {
            tracing::warn!(
                "the REST surface is on but tls.roles.admin is empty: every call will be refused"
            );
        }
        if let Some(rest) = &rest {
            authority = authority.with_rest_base(rest.public_url());
        }
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| StartError::Bind {
                address: config.admin_listen,
                source,
            })?;
        let health = match config.health_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind { address, source })?,
            ),
            None => None,
        };
        let tls = config.tls.as_ref().map(server_tls).transpose()?;
        if tls.is_none() {
            tracing::warn!(
                "TLS is off (loopback development): admin APIs are open, nodes use the shared secret"
            );
            if config.node_secret.is_none() {
                tracing::warn!("no node secret configured: data-plane nodes will be refused");
            }
        }
        Ok(Self {
            listener,
            admin,
            health,
            readiness: Arc::new(Readiness::default()),
            metrics,
            shutdown_grace: config.shutdown_grace,
            authority,
            access: AccessPolicy::new(config.tls.as_ref(), config.node_secret.clone()),
            tls,
            reload: None,
            logs: None,
            admin_token: config.admin_token.clone(),
            rest,
            outage: config.outage.enabled().then_some(config.outage),
            assertion: config.assertion.clone(),
        })
    }

    /// Reloads the virtual proxies from `path` (with the same overrides) when the file
    /// changes or the process gets SIGHUP, and pushes them to every node. Other settings
    /// take effect on restart.
    pub fn reload_from(mut self, path: PathBuf, overrides: Overrides) -> Self {
        self.reload = Some((path, overrides));
        self
    }

    /// Lets `/log-level` on the admin port change the process's log filter.
    pub fn with_log_control(mut self, logs: crate::logging::LogControl) -> Self {
        self.logs = Some(logs);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Address of the REST surface, when it is on.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest.as_ref().and_then(|rest| rest.local_addr().ok())
    }

    /// Address of `/live` and `/ready`.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Address of the plaintext health-only gRPC port, when there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|error| {
                // The descriptor sets are compiled in; failing here is a build defect.
                tracing::error!(%error, "reflection service unavailable");
            })
            .ok();

        let admin_stop = CancellationToken::new();
        // Health alone, in plaintext, for probes; it stops with the admin port.
        let health_server = self.health.map(|listener| {
            let stop = admin_stop.clone();
            let health = health_service.clone();
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        stop.cancelled_owned(),
                    )
                    .await;
            })
        });
        let admin = tokio::spawn(crate::admin::serve(
            self.admin,
            self.readiness.clone(),
            self.metrics.clone(),
            crate::admin::LogLevel {
                logs: self.logs.clone(),
                token: self.admin_token.clone(),
            },
            admin_stop.clone(),
        ));
        let readiness = self.readiness.clone();
        let grace = self.shutdown_grace;

        let feed = RevocationFeed::start(self.authority.store().clone());
        let authority = match self.outage {
            Some(outage) => {
                let proxies = self.authority.clone();
                let fallback = OutageFallback::start(
                    outage,
                    self.authority.store().clone(),
                    &feed,
                    self.authority.clock(),
                    move || proxies.virtual_proxies().longest_inactivity_timeout(),
                );
                self.authority.with_outage_fallback(fallback)
            }
            None => self.authority,
        };
        let signing_keys = SigningKeys::start(
            self.assertion,
            authority.store().clone(),
            feed.clone(),
            authority.clock(),
        );
        let authority = authority.with_signing_keys(signing_keys);
        let reloader = self.reload.map(|(path, overrides)| {
            tokio::spawn(reload_forever(
                path,
                overrides,
                authority.clone(),
                feed.clone(),
            ))
        });
        let probe = tokio::spawn(report_store_health(
            health_reporter.clone(),
            authority.clone(),
            self.readiness.clone(),
        ));
        let stopping = CancellationToken::new();
        let access = self.access;
        // The REST surface stops taking calls when the gRPC server starts draining.
        let rest = self.rest.map(|rest| {
            tokio::spawn(rest.serve(authority.clone(), access.clone(), stopping.clone()))
        });
        let node_api = pb::node_service_server::NodeServiceServer::with_interceptor(
            NodeApi::new(authority.clone(), feed, stopping.clone()),
            access.require(Role::Node),
        );
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let router = builder
            .layer(RpcMetricsLayer(self.metrics.clone()))
            .add_service(health_service)
            .add_optional_service(reflection)
            .add_service(
                pb::authentication_service_server::AuthenticationServiceServer::with_interceptor(
                    AuthenticationApi::new(authority.clone()),
                    access.require(Role::Admin),
                ),
            )
            .add_service(
                pb::session_service_server::SessionServiceServer::with_interceptor(
                    SessionApi::new(authority.clone()),
                    access.require(Role::Admin),
                ),
            )
            .add_service(pb::personal_service_server::PersonalServiceServer::new(
                PersonalApi::new(authority.clone()),
            ))
            .add_service(node_api);
        // Without TCP_NODELAY, answers of a few hundred bytes wait ~40 ms for delayed ACKs.
        let incoming = tonic::transport::server::TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        // Out of rotation first (health and /ready), then end the long-lived Watch streams
        // (they would hold a graceful shutdown open forever), then drain in-flight calls.
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            readiness.begin_drain();
            probe.abort();
            for service in HEALTH_SERVICES.into_iter().chain([NODES_HEALTH_SERVICE]) {
                health_reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            stopping.cancel();
            let _ = draining_tx.send(());
        };
        let serving = router.serve_with_incoming_shutdown(incoming, shutdown);
        let deadline = async move {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = serving => result,
            () = deadline => {
                tracing::warn!(?grace, "calls still in flight when the shutdown grace ran out");
                Ok(())
            }
        };
        admin_stop.cancel();
        let _ = admin.await;
        if let Some(health_server) = health_server {
            let _ = health_server.await;
        }
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        if let Some(rest) = rest {
            let _ = rest.await;
        }
        // The last calls' audit events may still be on their way to a sink.
        authority.flush_audit(AUDIT_FLUSH_LIMIT).await;
        result
    }
}

/// How often the configuration file is checked for changes.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

async fn reload_forever(
    path: PathBuf,
    overrides: Overrides,
    authority: Authority,
    feed: Arc<RevocationFeed>,
) {
    let modified = |path: &PathBuf| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    let mut last = modified(&path);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticker = tokio::time::interval(RELOAD_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = modified(&path);
                if now == last {
                    continue;
                }
                last = now;
            }
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => std::future::pending().await } } => {}
        }
        match Config::load(Some(&path), &overrides) {
            Ok(config) => {
                let count = config.virtual_proxies.len();
                authority.replace_virtual_proxies(VirtualProxies::new(&config.virtual_proxies));
                feed.announce_configuration();
                tracing::info!(
                    virtual_proxies = count,
                    "virtual proxies reloaded and pushed to nodes"
                );
            }
            Err(error) => {
                tracing::error!(%error, "configuration not reloaded; the current one stays in force")
            }
        }
    }
}

/// The overall health (service "") and each Gatehouse service follow store reachability, so a
/// Kubernetes gRPC probe takes a replica that cannot reach Redis out of rotation.
async fn report_store_health(
    reporter: tonic_health::server::HealthReporter,
    authority: Authority,
    readiness: Arc<Readiness>,
) {
    let mut last = None;
    let mut last_for_nodes = None;
    let store = authority.store().clone();
    let fallback = authority.outage_fallback().cloned();
    loop {
        let status = match store.ping().await {
            Ok(()) => {
                if let Some(fallback) = &fallback {
                    fallback.store_reachable();
                }
                ServingStatus::Serving
            }
            Err(error) => {
                if let Some(fallback) = &fallback {
                    fallback.store_unreachable();
                }
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(%error, "session store unreachable; reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        readiness.set_store_reachable(status == ServingStatus::Serving);
        if last != Some(status) {
            for service in HEALTH_SERVICES {
                reporter.set_service_status(service, status).await;
            }
            last = Some(status);
        }
        let for_nodes = status == ServingStatus::Serving
            || fallback
                .as_ref()
                .is_some_and(|fallback| fallback.can_vouch());
        let for_nodes = if for_nodes {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last_for_nodes != Some(for_nodes) {
            reporter
                .set_service_status(NODES_HEALTH_SERVICE, for_nodes)
                .await;
            last_for_nodes = Some(for_nodes);
        }
        tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
    }
}
