//! The keys that sign identity assertions (`[virtual_proxies.assertion]`): made here, kept in
//! the store so that every replica holds the same ones, and pushed to nodes in every `Watch`
//! snapshot (nodes sign; upstreams verify with the JWKS each node publishes).
//!
//! A key's life: made every `assertion.key_rotation`, published at once, signing only from
//! `assertion.publish_ahead` after it was made (by then every replica has read it and every
//! verifier that caches the JWKS for less has fetched it), and removed once a newer key has
//! signed long enough for the last assertions of the old one to have expired. The very
//! first key has nothing to take over from and signs at once.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gatehouse_proto::v1 as pb;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::clock::Clock;
use crate::config::AssertionConfig;
use crate::domain::AssertionKey;
use crate::events::RevocationFeed;
use crate::store::{Store, StoreError};

/// Pause before trying again while the store has not answered yet.
const RETRY: Duration = Duration::from_secs(1);

/// The signing keys this replica knows, and what its assertions share.
#[derive(Debug)]
pub struct SigningKeys {
    config: AssertionConfig,
    clock: Arc<dyn Clock>,
    keys: ArcSwap<Vec<AssertionKey>>,
}

impl SigningKeys {
    /// Starts keeping the keys current; every change is pushed to this replica's nodes.
    pub fn start(
        config: AssertionConfig,
        store: Arc<dyn Store>,
        feed: Arc<RevocationFeed>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let keys = Arc::new(Self::new(config, clock));
        tokio::spawn(maintain(Arc::downgrade(&keys), store, feed));
        keys
    }

    /// Keys that are never refreshed (until `refresh` is called): for tests and for a
    /// control plane without a running feed.
    pub fn new(config: AssertionConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            keys: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Every key in force, oldest first, as nodes receive them.
    pub fn to_proto(&self) -> Vec<pb::AssertionKey> {
        self.keys
            .load()
            .iter()
            .map(|key| pb::AssertionKey {
                id: key.id.clone(),
                pkcs8: key.pkcs8.clone(),
                active_from: Some(key.active_from.into()),
            })
            .collect()
    }

    /// Reads the keys from the store, making and removing keys as due; `true` when the keys
    /// in force changed.
    pub async fn refresh(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let mut keys = refresh(&self.config, self.clock.now(), store).await?;
        keys.sort_by_key(|key| key.created);
        let changed = **self.keys.load() != keys;
        if changed {
            self.keys.store(Arc::new(keys));
        }
        Ok(changed)
    }
}

async fn maintain(keys: Weak<SigningKeys>, store: Arc<dyn Store>, feed: Arc<RevocationFeed>) {
    loop {
        let Some(this) = keys.upgrade() else {
            return;
        };
        let pause = match this.refresh(store.as_ref()).await {
            Ok(changed) => {
                if changed {
                    tracing::info!(keys = this.keys.load().len(), "assertion keys changed");
                    feed.announce_configuration();
                }
                this.config.reload_interval()
            }
            Err(error) => {
                tracing::debug!(%error, "assertion keys not read");
                if this.keys.load().is_empty() {
                    RETRY
                } else {
                    this.config.reload_interval()
                }
            }
        };
        drop(this);
        tokio::time::sleep(pause).await;
    }
}

/// The keys in force after removing retired ones and adding a new one if due.
async fn refresh(
    config: &AssertionConfig,
    now: SystemTime,
    store: &dyn Store,
) -> Result<Vec<AssertionKey>, StoreError> {
    let rotation = config.key_rotation;
    let mut keys = store.assertion_keys().await?;
    // A key retires once a newer one has signed for longer than any assertion of the old
    // one lives (configuration checks that `key_rotation - publish_ahead` is more).
    let retire_after = rotation.saturating_sub(config.publish_ahead);
    let retired: Vec<String> = keys
        .iter()
        .filter(|old| {
            keys.iter()
                .any(|new| new.created > old.created && new.active_from + retire_after <= now)
        })
        .map(|key| key.id.clone())
        .collect();
    for id in &retired {
        store.remove_assertion_key(id).await?;
    }
    keys.retain(|key| !retired.contains(&key.id));
    let due = keys.iter().all(|key| key.created + rotation <= now);
    if due {
        let first = keys.is_empty();
        if let Some(key) = new_key(config, now, first) {
            store.add_assertion_key(&key).await?;
            keys = store.assertion_keys().await?;
            tracing::info!(id = %key.id, "new assertion key made");
        }
    }
    // Replicas that found a key due at the same moment each made one (with clocks either
    // side of a period's end, under two ids): every replica keeps the one with the lowest
    // id, so they all sign with the same key. Only keys made within half a rotation of the
    // newest are such twins: a replica whose clock lags may still count the previous key as
    // current, and must not take the next one, which another replica made a rotation later,
    // for a twin of it (it would be deleted and made again under its id with other material).
    let newest = keys.iter().map(|key| key.created).max();
    let mut current: Vec<&AssertionKey> = keys
        .iter()
        .filter(|key| key.created + rotation > now)
        .filter(|key| newest.is_some_and(|newest| key.created + rotation / 2 > newest))
        .collect();
    current.sort_by(|a, b| a.id.cmp(&b.id));
    let extra: Vec<String> = current.iter().skip(1).map(|key| key.id.clone()).collect();
    for id in &extra {
        store.remove_assertion_key(id).await?;
    }
    keys.retain(|key| !extra.contains(&key.id));
    Ok(keys)
}

/// A new key. Its id is the rotation period it is made in (and the period's length), so
/// replicas that make one at the same moment name it alike, and the store keeps the first.
fn new_key(config: &AssertionConfig, now: SystemTime, first: bool) -> Option<AssertionKey> {
    let rotation = config.key_rotation.as_millis().max(1);
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| tracing::error!("no assertion key could be generated"))
            .ok()?;
    Some(AssertionKey {
        id: format!("{:x}-{rotation:x}", since / rotation),
        pkcs8: pkcs8.as_ref().to_vec(),
        created: now,
        active_from: if first {
            now
        } else {
            now + config.publish_ahead
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{AssertionKeys as _, MemoryStore};

    fn config() -> AssertionConfig {
        AssertionConfig {
            key_rotation: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(3600),
            ..AssertionConfig::default()
        }
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ))
    }

    #[tokio::test]
    async fn a_new_key_is_published_before_it_signs_and_the_old_one_stays_until_its_assertions_expired()
     {
        let clock = clock();
        let store = MemoryStore::new(clock.clone(), 10);
        let keys = SigningKeys::new(config(), clock.clone());
        assert!(keys.refresh(&store).await.unwrap());
        let first = keys.to_proto();
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].active_from,
            Some(clock.now().into()),
            "the first key signs at once"
        );
        assert!(
            EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &first[0].pkcs8,
                &SystemRandom::new()
            )
            .is_ok()
        );
        clock.advance(Duration::from_secs(3600));
        assert!(!keys.refresh(&store).await.unwrap(), "nothing due yet");

        clock.advance(Duration::from_secs(23 * 3600));
        assert!(keys.refresh(&store).await.unwrap());
        let rotated = keys.to_proto();
        assert_eq!(rotated.len(), 2, "both published");
        assert_eq!(rotated[0].id, first[0].id);
        assert_eq!(
            rotated[1].active_from,
            Some((clock.now() + Duration::from_secs(3600)).into()),
            "the new key signs only after publish_ahead"
        );

        // The old key stops signing when the new one starts, and is published until a
        // rotation minus publish_ahead after that.
        clock.advance(Duration::from_secs(3600 + 22 * 3600));
        assert!(!keys.refresh(&store).await.unwrap());
        clock.advance(Duration::from_secs(3600));
        assert!(keys.refresh(&store).await.unwrap());
        let kept: Vec<String> = keys.to_proto().into_iter().map(|key| key.id).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(!kept.contains(&first[0].id), "{kept:?}");
        assert_eq!(store.assertion_keys().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn replicas_share_one_key() {
        let clock = clock();
        let store = MemoryStore::new(clock.clone(), 10);
        let one = SigningKeys::new(config(), clock.clone());
        let other = SigningKeys::new(config(), clock.clone());
        one.refresh(&store).await.unwrap();
        other.refresh(&store).await.unwrap();
        assert_eq!(one.to_proto(), other.to_proto());
        // Keys two replicas made in the same period: the first is kept.
        let made = new_key(&config(), clock.now(), true).unwrap();
        store.add_assertion_key(&made).await.unwrap();
        assert_eq!(store.assertion_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_replica_whose_clock_lags_keeps_the_key_another_made_after_the_rotation() {
        let ahead = clock();
        let behind = Arc::new(ManualClock::new(ahead.now() - Duration::from_secs(10)));
        let store = MemoryStore::new(ahead.clone(), 10);
        let first = SigningKeys::new(config(), ahead.clone());
        let second = SigningKeys::new(config(), behind.clone());
        first.refresh(&store).await.unwrap();
        second.refresh(&store).await.unwrap();
        // The rotation is due for the replica ahead, not yet for the one behind.
        let almost = Duration::from_secs(24 * 3600 + 5);
        ahead.advance(almost);
        behind.advance(almost);
        first.refresh(&store).await.unwrap();
        let made = store.assertion_keys().await.unwrap();
        assert_eq!(made.len(), 2);
        second.refresh(&store).await.unwrap();
        assert_eq!(
            store.assertion_keys().await.unwrap(),
            made,
            "nothing removed"
        );
        first.refresh(&store).await.unwrap();
        second.refresh(&store).await.unwrap();
        assert_eq!(
            store.assertion_keys().await.unwrap(),
            made,
            "nothing made again"
        );
        assert_eq!(first.to_proto(), second.to_proto());
    }

    #[tokio::test]
    async fn a_key_is_not_removed_while_no_newer_one_signs() {
        let clock = clock();
        let store = MemoryStore::new(clock.clone(), 10);
        let keys = SigningKeys::new(config(), clock.clone());
        keys.refresh(&store).await.unwrap();
        let first = keys.to_proto()[0].id.clone();
        // The store was away for three rotations: the old key still signs until the new
        // one made now takes over.
        clock.advance(Duration::from_secs(3 * 24 * 3600));
        keys.refresh(&store).await.unwrap();
        let ids: Vec<String> = keys.to_proto().into_iter().map(|key| key.id).collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], first);
    }
}
