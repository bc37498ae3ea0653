//! The Redis store, shared by every control-plane replica: the connection, the operation
//! deadline and error classification every exchange goes through. Each aggregate's
//! operations are in their own file (`one_time_records`, `sessions`, `revocations`,
//! `seal_keys`, `assertion_keys`), the cross-master session listing in `listing`, reply
//! decoding in `replies`; the schema is in `keys`, the atomic operations in `scripts`. The
//! audit stream, which is not the store's but lives in the same Redis, is in `audit_stream`.

mod assertion_keys;
mod audit_stream;
mod connection;
mod keys;
mod listing;
mod one_time_records;
mod replies;
mod revocations;
mod scripts;
mod seal_keys;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

pub use self::audit_stream::RedisAuditStream;
use self::connection::{Purpose, RedisConnection, Settings, connection_lost};
use self::keys::Keys;
use super::{Store, StoreError};
use crate::config::StoreConfig;

#[derive(Debug)]
struct Scripts {
    take_ticket: Script,
    claim_login: Script,
    create_session: Script,
    touch_session: Script,
    delete_session: Script,
    delete_user_sessions: Script,
}

#[derive(Debug)]
pub struct RedisStore {
    connection: RedisConnection,
    /// For XREAD BLOCK only: a blocked command holds up everything behind it on its
    /// connection, so it gets a connection of its own.
    blocking: RedisConnection,
    keys: Keys,
    revocations_kept: u64,
    /// Upper bound on any one operation, reconnection included: a caller hears
    /// `Unavailable` in bounded time, never a hang.
    deadline: Duration,
    scripts: Scripts,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl RedisStore {
    /// Connects lazily: the control plane starts (and answers `UNAVAILABLE`) while Redis is
    /// down, and reconnects on its own when Redis returns.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let settings = Settings::read(config)?;
        Ok(Self {
            connection: RedisConnection::new(config, &settings, Purpose::Commands)?,
            blocking: RedisConnection::new(config, &settings, Purpose::Blocking)?,
            keys: Keys::new(&config.key_prefix),
            revocations_kept: config.revocation_stream_max_len.max(1),
            deadline: config.connect_timeout + config.response_timeout,
            metrics: None,
            scripts: Scripts {
                take_ticket: Script::new(scripts::TAKE_TICKET),
                claim_login: Script::new(scripts::CLAIM_LOGIN),
                create_session: Script::new(scripts::CREATE_SESSION),
                touch_session: Script::new(scripts::TOUCH_SESSION),
                delete_session: Script::new(scripts::DELETE_SESSION),
                delete_user_sessions: Script::new(scripts::DELETE_USER_SESSIONS),
            },
        })
    }

    /// Records every exchange's latency and errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one Redis exchange under the operation deadline.
    async fn run<T, F>(&self, exchange: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.deadline, exchange).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from Redis within {:?}",
                self.deadline
            ))),
        };
        if let Some(metrics) = &self.metrics {
            let error = result.as_ref().err().map(|error| match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Rejected(_) => "rejected",
                _ => "corrupt",
            });
            metrics.store_exchange(started.elapsed().as_secs_f64(), error);
        }
        result
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        self.run(command.query_async(&mut connection)).await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        self.run(connection.ping()).await
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Connection trouble is `Unavailable` (the caller may retry); anything else Redis answered
/// is `Rejected`.
fn classify(error: RedisError) -> StoreError {
    let unavailable = connection_lost(&error)
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    // Redirections left over once the client's retries ran out: a slot is
                    // moving, so try again later.
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::AuthenticationFailed
                // No sentinel could name a reachable master: a failover is under way.
                | ErrorKind::MasterNameNotFoundBySentinel
        );
    if unavailable {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Rejected(error.to_string())
    }
}
