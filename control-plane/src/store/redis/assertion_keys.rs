//! Assertion-signing keys in Redis: one hash, a field per key holding
//! `<created ms>.<active-from ms>.<PKCS#8, base64url>`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::Value;

use super::RedisStore;
use super::replies::{corrupt, field_map};
use crate::domain::AssertionKey;
use crate::store::{AssertionKeys, StoreError};

/// Latest time a key may carry (the end of year 9999): anything later is corrupt, and time
/// arithmetic on it could overflow.
const LATEST_MILLIS: u64 = 253_402_300_799_999;
/// A P-256 PKCS#8 document is about 140 bytes: anything much longer is not one.
const MAX_PKCS8: usize = 512;

#[async_trait]
impl AssertionKeys for RedisStore {
    async fn assertion_keys(&self) -> Result<Vec<AssertionKey>, StoreError> {
        let reply: Value = self
            .query(redis::cmd("HGETALL").arg(self.keys.assertion_keys()))
            .await?;
        field_map(&reply)?
            .into_iter()
            .map(|(id, value)| decode(id, &value).ok_or_else(|| corrupt("assertion key")))
            .collect()
    }

    async fn add_assertion_key(&self, key: &AssertionKey) -> Result<(), StoreError> {
        let _: Value = self
            .query(
                redis::cmd("HSETNX")
                    .arg(self.keys.assertion_keys())
                    .arg(&key.id)
                    .arg(encode(key)),
            )
            .await?;
        Ok(())
    }

    async fn remove_assertion_key(&self, id: &str) -> Result<(), StoreError> {
        let _: Value = self
            .query(redis::cmd("HDEL").arg(self.keys.assertion_keys()).arg(id))
            .await?;
        Ok(())
    }
}

fn encode(key: &AssertionKey) -> String {
    format!(
        "{}.{}.{}",
        unix_millis(key.created),
        unix_millis(key.active_from),
        URL_SAFE_NO_PAD.encode(&key.pkcs8)
    )
}

fn decode(id: String, value: &str) -> Option<AssertionKey> {
    let mut parts = value.splitn(3, '.');
    let mut time = || -> Option<SystemTime> {
        let millis: u64 = parts.next()?.parse().ok()?;
        (millis <= LATEST_MILLIS).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
    };
    let created = time()?;
    let active_from = time()?;
    let pkcs8 = URL_SAFE_NO_PAD
        .decode(parts.next()?)
        .ok()
        .filter(|pkcs8| !pkcs8.is_empty() && pkcs8.len() <= MAX_PKCS8)?;
    Some(AssertionKey {
        id,
        pkcs8,
        created,
        active_from,
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
        let key = AssertionKey {
            id: "k1".into(),
            pkcs8: vec![1, 2, 3, 200],
            created: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            active_from: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_060_123),
        };
        assert_eq!(decode("k1".into(), &encode(&key)), Some(key));
        let long = format!("1.2.{}", URL_SAFE_NO_PAD.encode([0u8; 600]));
        let far = format!("{}.1.AAAA", u64::MAX);
        for garbage in [
            "",
            "1.2",
            "1.2.",
            "x.2.AAAA",
            "1.2.!!!!",
            far.as_str(),
            long.as_str(),
        ] {
            assert_eq!(decode("k".into(), garbage), None, "{garbage}");
        }
    }
}
