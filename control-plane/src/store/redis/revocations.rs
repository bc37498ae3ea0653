//! The revocation stream in Redis: reading events after a cursor, the head, blocking reads,
//! and telling whether entries a cursor needs were trimmed.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::replies::{array, corrupt, field_map, field_values, text};
use super::{RedisStore, classify, millis};
use crate::domain::{Revocation, RevocationReason, Revocations};
use crate::store::{MAX_BLOCK, REVOCATION_BATCH, RevocationLog, StoreError};

#[async_trait]
impl RevocationLog for RedisStore {
    async fn announce_created(&self, virtual_proxy: &str, digest: &str) -> Result<(), StoreError> {
        self.query::<Value>(
            redis::cmd("XADD")
                .arg(self.keys.revocations())
                .arg("MAXLEN")
                .arg("~")
                .arg(self.revocations_kept)
                .arg("*")
                .arg("handle")
                .arg(digest)
                .arg("vp")
                .arg(virtual_proxy)
                .arg("reason")
                .arg(RevocationReason::Created.as_str()),
        )
        .await
        .map(drop)
    }

    async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Revocations, StoreError> {
        let start = match cursor {
            Some(cursor) => {
                parse_stream_id(cursor).ok_or(StoreError::InvalidCursor)?;
                format!("({cursor}")
            }
            None => "-".to_owned(),
        };
        let entries: Value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(self.keys.revocations())
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1)),
            )
            .await?;
        let mut events = Vec::new();
        for entry in array(&entries)? {
            let [id, fields] = array(entry)? else {
                return Err(corrupt("revocation entry"));
            };
            let fields = field_map(fields)?;
            let field = |name: &str| {
                fields
                    .get(name)
                    .cloned()
                    .ok_or_else(|| corrupt("revocation entry"))
            };
            events.push(Revocation {
                cursor: text(id)?,
                handle: field("handle")?,
                virtual_proxy: field("vp")?,
                reason: RevocationReason::parse(&field("reason")?)
                    .ok_or_else(|| corrupt("revocation reason"))?,
            });
        }
        // Only trimming removes entries, oldest first. If the stream no longer holds the
        // cursor's own entry, entries after it may have gone too: report that, at the cost of
        // a needless cache flush when exactly the cursor's entry was the last one trimmed.
        // The cursor 0-0 ("from the start", given to nodes that connected before the first
        // event) has no entry of its own: anything trimmed at all was missed.
        let trimmed = match cursor.and_then(parse_stream_id) {
            Some((0, 0)) => self.ever_trimmed().await?,
            Some(position) => self
                .oldest_revocation()
                .await?
                .is_some_and(|oldest| oldest > position),
            None => false,
        };
        Ok(Revocations { events, trimmed })
    }

    async fn revocation_head(&self) -> Result<Option<String>, StoreError> {
        let newest: Value = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(self.keys.revocations())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        match array(&newest)?.first() {
            Some(entry) => {
                let id = array(entry)?
                    .first()
                    .ok_or_else(|| corrupt("revocation entry"))?;
                Ok(Some(text(id)?))
            }
            None => Ok(None),
        }
    }

    async fn wait_for_revocations(
        &self,
        cursor: Option<&str>,
        wait: Duration,
    ) -> Result<Revocations, StoreError> {
        let revocations = self.revocations_after(cursor, REVOCATION_BATCH).await?;
        if !revocations.events.is_empty() || revocations.trimmed {
            return Ok(revocations);
        }
        let wait = wait.min(MAX_BLOCK);
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis(wait).max(1))
            .arg("STREAMS")
            .arg(self.keys.revocations())
            .arg(cursor.unwrap_or("0-0"));
        let mut connection = self.blocking.clone();
        match tokio::time::timeout(
            wait + self.deadline,
            command.query_async::<Value>(&mut connection),
        )
        .await
        {
            Ok(result) => drop(result.map_err(classify)?),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "no answer from Redis to XREAD".to_owned(),
                ));
            }
        }
        self.revocations_after(cursor, REVOCATION_BATCH).await
    }
}

impl RedisStore {
    /// Whether the stream has ever dropped an entry (Redis 7: more entries added than held).
    async fn ever_trimmed(&self) -> Result<bool, StoreError> {
        let info: Value = match self
            .query(
                redis::cmd("XINFO")
                    .arg("STREAM")
                    .arg(self.keys.revocations()),
            )
            .await
        {
            Ok(info) => info,
            // No stream yet: nothing was ever trimmed.
            Err(StoreError::Rejected(_)) => return Ok(false),
            Err(error) => return Err(error),
        };
        let info = field_values(&info)?;
        let number = |name: &str| {
            info.get(name)
                .and_then(|value| text(value).ok())
                .and_then(|value| value.parse::<u64>().ok())
        };
        Ok(match (number("entries-added"), number("length")) {
            (Some(added), Some(length)) => added > length,
            _ => false,
        })
    }

    /// Id of the oldest revocation still in the stream.
    async fn oldest_revocation(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let first: Value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(self.keys.revocations())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        match array(&first)?.first() {
            Some(entry) => {
                let id = array(entry)?
                    .first()
                    .ok_or_else(|| corrupt("revocation entry"))?;
                Ok(parse_stream_id(&text(id)?))
            }
            None => Ok(None),
        }
    }
}

fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (millis, sequence) = id.split_once('-')?;
    Some((millis.parse().ok()?, sequence.parse().ok()?))
}
