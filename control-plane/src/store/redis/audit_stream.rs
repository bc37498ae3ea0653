//! The Redis stream that audit records are appended to (`audit.redis_stream`), trimmed to
//! about `audit.redis_stream_max_len` entries. It has a connection of its own: a backlog of
//! audit writes never queues in front of session commands on the store's connection.

use std::time::Duration;

use redis::Value;

use super::classify;
use super::connection::{Purpose, RedisConnection, Settings};
use crate::config::StoreConfig;
use crate::error::StoreError;

#[derive(Debug)]
pub struct RedisAuditStream {
    connection: RedisConnection,
    key: String,
    max_len: u64,
    /// Upper bound on one append, reconnection included, as for the store's own calls.
    deadline: Duration,
}

impl RedisAuditStream {
    /// A lazy connection to the Redis `config` names, appending to the stream `key`.
    pub fn new(config: &StoreConfig, key: &str, max_len: u64) -> Result<Self, StoreError> {
        let settings = Settings::read(config)?;
        Ok(Self {
            connection: RedisConnection::new(config, &settings, Purpose::Commands)?,
            key: key.to_owned(),
            max_len: max_len.max(1),
            deadline: config.connect_timeout + config.response_timeout,
        })
    }

    /// Appends one entry per record (its fields by name, in order), in one round trip.
    pub async fn append(&self, records: &[Vec<(&'static str, &str)>]) -> Result<(), StoreError> {
        let mut pipeline = redis::pipe();
        for fields in records {
            // `~`: Redis trims whole nodes of the stream, which costs far less than an exact
            // length on every append.
            let command = pipeline
                .cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*");
            for (name, value) in fields {
                command.arg(*name).arg(*value);
            }
            command.ignore();
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(
            self.deadline,
            pipeline.query_async::<Value>(&mut connection),
        )
        .await
        {
            Ok(result) => result.map(drop).map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from Redis within {:?}",
                self.deadline
            ))),
        }
    }
}
