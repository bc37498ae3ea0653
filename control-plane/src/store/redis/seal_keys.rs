//! Seal keys in Redis: one hash, a field per key holding
//! `<created ms>.<active-from ms>.<secret, base64url>`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::Value;

use super::RedisStore;
use super::replies::{corrupt, field_map};
use crate::domain::SealKey;
use crate::store::{SealKeys, StoreError};

#[async_trait]
impl SealKeys for RedisStore {
    async fn seal_keys(&self) -> Result<Vec<SealKey>, StoreError> {
        let reply: Value = self
            .query(redis::cmd("HGETALL").arg(self.keys.seal_keys()))
            .await?;
        field_map(&reply)?
            .into_iter()
            .map(|(id, value)| decode(id, &value).ok_or_else(|| corrupt("seal key")))
            .collect()
    }

    async fn add_seal_key(&self, key: &SealKey) -> Result<(), StoreError> {
        let _: Value = self
            .query(
                redis::cmd("HSETNX")
                    .arg(self.keys.seal_keys())
                    .arg(&key.id)
                    .arg(encode(key)),
            )
            .await?;
        Ok(())
    }

    async fn remove_seal_key(&self, id: &str) -> Result<(), StoreError> {
        let _: Value = self
            .query(redis::cmd("HDEL").arg(self.keys.seal_keys()).arg(id))
            .await?;
        Ok(())
    }
}

fn encode(key: &SealKey) -> String {
    format!(
        "{}.{}.{}",
        unix_millis(key.created),
        unix_millis(key.active_from),
        URL_SAFE_NO_PAD.encode(key.secret)
    )
}

/// Latest time a key may carry (the end of year 9999): anything later is corrupt, and time
/// arithmetic on it could overflow.
const LATEST_MILLIS: u64 = 253_402_300_799_999;

fn decode(id: String, value: &str) -> Option<SealKey> {
    let mut parts = value.splitn(3, '.');
    let created = parts
        .next()?
        .parse()
        .ok()
        .filter(|at| *at <= LATEST_MILLIS)?;
    let active_from = parts
        .next()?
        .parse()
        .ok()
        .filter(|at| *at <= LATEST_MILLIS)?;
    let secret = URL_SAFE_NO_PAD
        .decode(parts.next()?)
        .ok()?
        .try_into()
        .ok()?;
    Some(SealKey {
        id,
        secret,
        created: SystemTime::UNIX_EPOCH + Duration::from_millis(created),
        active_from: SystemTime::UNIX_EPOCH + Duration::from_millis(active_from),
    })
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_encoding_and_garbage_does_not_decode() {
        let key = SealKey {
            id: "k1".into(),
            secret: [7; 32],
            created: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            active_from: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_060_123),
        };
        assert_eq!(decode("k1".into(), &encode(&key)), Some(key));
        let secret = URL_SAFE_NO_PAD.encode([0u8; 32]);
        let far = format!("{}.1.{secret}", u64::MAX);
        for garbage in ["", "1.2", "1.2.short", "x.2.AAAA", "1.2.!!!!", far.as_str()] {
            assert_eq!(decode("k".into(), garbage), None, "{garbage}");
        }
    }
}
