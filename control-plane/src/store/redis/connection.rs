//! One connection type for every Redis topology the store runs on: a standalone server, a
//! master found through Sentinel, or a Redis Cluster. The store speaks through
//! [`RedisConnection`] and does not care which.
//!
//! - **Standalone:** redis-rs's `ConnectionManager`, which reconnects to the one address.
//! - **Sentinel:** the sentinels are asked for the master, whose role is checked before use.
//!   When a command fails in a way that says the master is gone or demoted (connection lost or
//!   refused, READONLY, MASTERDOWN), the connection is dropped and the next command asks the
//!   sentinels again, so the store follows a failover without a restart.
//! - **Cluster:** redis-rs's cluster connection, which routes by slot and follows MOVED/ASK.
//!
//! Sentinel and Cluster connections are made on first use, not at start: the control plane
//! starts (and answers `UNAVAILABLE`) while Redis is down, as it does on a standalone server.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo as _, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use crate::config::{RedisTopology, StoreConfig};
use crate::error::StoreError;

/// Whether a connection is for ordinary commands, which must answer within the response
/// timeout, or for blocking reads (XREAD BLOCK), which wait as long as they asked to (at most
/// [`MAX_BLOCK`](crate::store::MAX_BLOCK)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Commands,
    Blocking,
}

/// A connection to the configured Redis, whatever its topology.
#[derive(Clone)]
pub(super) enum RedisConnection {
    Standalone(ConnectionManager),
    /// Sentinel and Cluster: made on first use, made again after it was found broken.
    Discovered(Arc<Discovered>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(_) => f.write_str("RedisConnection::Standalone"),
            Self::Discovered(discovered) => match discovered.topology {
                Topology::Sentinel { .. } => f.write_str("RedisConnection::Sentinel"),
                Topology::Cluster(_) => f.write_str("RedisConnection::Cluster"),
            },
        }
    }
}

pub(super) struct Discovered {
    topology: Topology,
    current: ArcSwapOption<Live>,
    /// One discovery at a time: callers that find no connection wait for the one being made
    /// instead of each asking the sentinels.
    connecting: tokio::sync::Mutex<()>,
}

enum Topology {
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        config: AsyncConnectionConfig,
    },
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Live {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// A lazy connection for `purpose` to the Redis `config` names.
    pub fn new(
        config: &StoreConfig,
        settings: &Settings,
        purpose: Purpose,
    ) -> Result<Self, StoreError> {
        let response_timeout = Some(match purpose {
            Purpose::Commands => config.response_timeout,
            // A blocked read answers within its block time: past that plus the usual response
            // time, the server is gone (a host that went silent), and the connection is made
            // again instead of waiting for TCP to give up.
            Purpose::Blocking => crate::store::MAX_BLOCK + config.response_timeout,
        });
        match config.topology {
            RedisTopology::Standalone => {
                let mut manager_config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(500));
                manager_config = manager_config.set_response_timeout(response_timeout);
                let client = settings.standalone_client(&config.redis_url)?;
                ConnectionManager::new_lazy_with_config(client, manager_config)
                    .map(Self::Standalone)
                    .map_err(|error| invalid(&format!("{:?}", error.kind())))
            }
            RedisTopology::Sentinel => {
                let client = settings.sentinel_client(config)?;
                let connection_config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(response_timeout);
                Ok(Self::discovered(Topology::Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    config: connection_config,
                }))
            }
            RedisTopology::Cluster => {
                let mut builder = ClusterClient::builder(parse_all(&config.cluster_urls)?)
                    .connection_timeout(config.connect_timeout)
                    .retries(2)
                    .min_retry_wait(20)
                    .max_retry_wait(500);
                if let Some(timeout) = response_timeout {
                    builder = builder.response_timeout(timeout);
                }
                if let Some(username) = &config.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password.expose());
                }
                // TLS follows the seeds' scheme (validated to be one for all); the client
                // takes it from the first seed, the certificates are added here.
                if config
                    .cluster_urls
                    .iter()
                    .all(|url| url.starts_with("rediss://"))
                    && let Some(certificates) = settings.certificates()
                {
                    builder = builder.certs(certificates);
                }
                let client = builder
                    .build()
                    .map_err(|error| invalid(&format!("cluster: {:?}", error.kind())))?;
                Ok(Self::discovered(Topology::Cluster(client)))
            }
        }
    }

    fn discovered(topology: Topology) -> Self {
        Self::Discovered(Arc::new(Discovered {
            topology,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }))
    }

    /// One slot of each Cluster master (its lowest), in ascending order: a master is named by
    /// a slot it serves, which stays valid when a replica takes over from it. Empty for a
    /// standalone server or a Sentinel master, where one SCAN sees every key.
    pub async fn masters(&mut self) -> RedisResult<Vec<u16>> {
        let Self::Discovered(discovered) = self else {
            return Ok(Vec::new());
        };
        let Live::Cluster(mut connection) = (*discovered.live().await?).clone() else {
            return Ok(Vec::new());
        };
        let ranges: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await?;
        // Each range: start, end, then the master as [host, port, id, ...], then replicas.
        let mut lowest_by_master: std::collections::HashMap<String, u16> =
            std::collections::HashMap::new();
        for range in &ranges {
            let Value::Array(fields) = range else {
                return Err(unexpected_slots());
            };
            let (Some(Value::Int(start)), Some(Value::Array(master))) =
                (fields.first(), fields.get(2))
            else {
                return Err(unexpected_slots());
            };
            let id = match master.get(2) {
                Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => format!("{:?}", master.first()),
            };
            let start = u16::try_from(*start).map_err(|_| unexpected_slots())?;
            let lowest = lowest_by_master.entry(id).or_insert(start);
            *lowest = (*lowest).min(start);
        }
        let mut masters: Vec<u16> = lowest_by_master.into_values().collect();
        masters.sort_unstable();
        Ok(masters)
    }

    /// Sends `command` to the Cluster master that serves `slot` (from
    /// [`masters`](Self::masters)); anywhere else, sends it as usual.
    pub async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        slot: Option<u16>,
        command: &Cmd,
    ) -> RedisResult<T> {
        if let (Self::Discovered(discovered), Some(slot)) = (&*self, slot)
            && let Live::Cluster(mut connection) = (*discovered.live().await?).clone()
        {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            )));
            let value = connection.route_command(command.clone(), routing).await?;
            return redis::from_redis_value(value).map_err(RedisError::from);
        }
        command.query_async(self).await
    }

    /// Whether Redis answers. On a Cluster, one node is asked (PING would need every master
    /// to answer, so one shard down would turn every replica unready at once).
    pub async fn ping(&mut self) -> RedisResult<()> {
        if let Self::Discovered(discovered) = &*self
            && let Live::Cluster(mut connection) = (*discovered.live().await?).clone()
        {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            connection
                .route_command(redis::cmd("PING"), routing)
                .await?;
            return Ok(());
        }
        redis::cmd("PING").query_async::<()>(self).await
    }
}

fn unexpected_slots() -> RedisError {
    RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS answer"))
}

impl Discovered {
    /// The current connection, made first when there is none.
    async fn live(&self) -> RedisResult<Arc<Live>> {
        if let Some(live) = self.current.load_full() {
            return Ok(live);
        }
        let _connecting = self.connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(live) = self.current.load_full() {
            return Ok(live);
        }
        let live = match &self.topology {
            Topology::Sentinel { client, config } => {
                // Asks the sentinels for the master and checks its ROLE before handing it out.
                let master = client.lock().await.async_get_client().await?;
                Live::Node(
                    master
                        .get_multiplexed_async_connection_with_config(config)
                        .await?,
                )
            }
            Topology::Cluster(client) => Live::Cluster(client.get_async_connection().await?),
        };
        let live = Arc::new(live);
        self.current.store(Some(live.clone()));
        Ok(live)
    }

    /// Drops the connection a command failed on, if it is still the current one, when the
    /// failure says the node behind it is gone or no longer the master.
    fn after_error(&self, used: &Arc<Live>, error: &RedisError) {
        let rediscover = match used.as_ref() {
            Live::Node(_) => needs_rediscovery(error),
            // The cluster client reconnects to each node and follows slot moves by itself;
            // only a client that lost every node is made again.
            Live::Cluster(_) => error.kind() == ErrorKind::ClusterConnectionNotFound,
        };
        if !rediscover {
            return;
        }
        let current = self.current.load();
        if current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, used))
        {
            tracing::warn!(%error, "Redis connection lost; the next command discovers the master again");
            self.current.store(None);
        }
    }
}

/// The server could not be reached, or stopped answering, or closed the connection.
pub(super) fn connection_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

/// Errors after which the connection must be made again: the node is unreachable, closed the
/// connection, or is no longer a writable master (a failover demoted it).
fn needs_rediscovery(error: &RedisError) -> bool {
    connection_lost(error)
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            ) | ErrorKind::ClusterConnectionNotFound
        )
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(manager) => manager.req_packed_command(cmd),
            Self::Discovered(discovered) => Box::pin(async move {
                let live = discovered.live().await?;
                let result = match (*live).clone() {
                    Live::Node(mut connection) => connection.req_packed_command(cmd).await,
                    Live::Cluster(mut connection) => connection.req_packed_command(cmd).await,
                };
                if let Err(error) = &result {
                    discovered.after_error(&live, error);
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Discovered(discovered) => Box::pin(async move {
                let live = discovered.live().await?;
                let result = match (*live).clone() {
                    Live::Node(mut connection) => {
                        connection
                            .req_packed_commands(pipeline, offset, count)
                            .await
                    }
                    Live::Cluster(mut connection) => {
                        connection
                            .req_packed_commands(pipeline, offset, count)
                            .await
                    }
                };
                if let Err(error) = &result {
                    discovered.after_error(&live, error);
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Credentials and TLS material shared by every topology, read once for all connections.
pub(super) struct Settings {
    username: Option<String>,
    password: Option<String>,
    root_cert: Option<Vec<u8>>,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl Settings {
    pub fn read(config: &StoreConfig) -> Result<Self, StoreError> {
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path)
                .map_err(|error| invalid(&format!("cannot read {}: {error}", path.display())))
        };
        let client_cert = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(Self {
            username: config.username.clone(),
            password: config
                .password
                .as_ref()
                .map(|password| password.expose().to_owned()),
            root_cert: config.tls_ca_file.as_ref().map(read).transpose()?,
            client_cert,
        })
    }

    /// The configured CA and client certificate, when any was configured.
    fn certificates(&self) -> Option<TlsCertificates> {
        if self.root_cert.is_none() && self.client_cert.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: self
                .client_cert
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.root_cert.clone(),
        })
    }

    /// A client for one server: credentials from the configuration (never logged), TLS with
    /// the configured CA and client certificate for `rediss://` URLs.
    fn standalone_client(&self, url: &str) -> Result<redis::Client, StoreError> {
        let mut info = url
            .into_connection_info()
            .map_err(|error| invalid(&format!("{:?}", error.kind())))?;
        let mut redis_settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis_settings = redis_settings.set_username(username);
        }
        if let Some(password) = &self.password {
            redis_settings = redis_settings.set_password(password);
        }
        info = info.set_redis_settings(redis_settings);
        match self.certificates() {
            None => redis::Client::open(info),
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
        }
        .map_err(|error| invalid(&format!("{:?}", error.kind())))
    }

    /// A client of the sentinels that hands out the master named in the configuration. The
    /// sentinels' own credentials come from their URLs; the store's credentials and TLS
    /// material are for the master.
    fn sentinel_client(&self, config: &StoreConfig) -> Result<SentinelClient, StoreError> {
        let sentinels = parse_all(&config.sentinel_urls)?;
        let sentinel_tls = sentinels
            .iter()
            .any(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let first = sentinels.first().map(|info| info.redis_settings().clone());
        let mut builder = SentinelClientBuilder::new(
            sentinels.iter().map(|info| info.addr().clone()),
            &config.sentinel_master,
            SentinelServerType::Master,
        )
        .map_err(|error| invalid(&format!("sentinel: {:?}", error.kind())))?;
        if let Some(settings) = first {
            if let Some(username) = settings.username() {
                builder = builder.set_client_to_sentinel_username(username);
            }
            if let Some(password) = settings.password() {
                builder = builder.set_client_to_sentinel_password(password);
            }
        }
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if sentinel_tls {
            builder = builder.set_client_to_sentinel_tls_mode(TlsMode::Secure);
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certificates) = self.certificates() {
                builder = builder.set_client_to_sentinel_certificates(certificates.clone());
                builder = builder.set_client_to_redis_certificates(certificates);
            }
        }
        builder
            .build()
            .map_err(|error| invalid(&format!("sentinel: {:?}", error.kind())))
    }
}

fn parse_all(urls: &[String]) -> Result<Vec<redis::ConnectionInfo>, StoreError> {
    urls.iter()
        .map(|url| {
            url.as_str()
                .into_connection_info()
                // The URL may hold a password: name the problem, never the URL.
                .map_err(|error| invalid(&format!("{:?}", error.kind())))
        })
        .collect()
}

fn invalid(what: &str) -> StoreError {
    StoreError::Unavailable(format!("invalid Redis settings: {what}"))
}
