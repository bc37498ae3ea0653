//! The sealing keys' life: read from the store at start and every `RELOAD` after, a new one
//! made every `outage.key_rotation`, and removed two rotations after it was made. A new key
//! seals only from `2 × RELOAD` after it was made, by which time every replica has read it,
//! so any replica can open what any other sealed.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use rand::RngCore as _;

use super::OutageFallback;
use super::seal::KeyRing;
use crate::domain::SealKey;
use crate::store::{Store, StoreError};

/// How often the keys are read again (to learn of keys other replicas made).
const RELOAD: Duration = Duration::from_secs(30);
/// Pause before trying again while the store has not answered yet.
const RETRY: Duration = Duration::from_secs(1);

pub(super) async fn maintain(fallback: Weak<OutageFallback>, store: Arc<dyn Store>) {
    loop {
        let Some(this) = fallback.upgrade() else {
            return;
        };
        let pause = match refresh(&this, store.as_ref()).await {
            Ok(keys) => {
                this.replace_keys(KeyRing::new(&keys));
                RELOAD
            }
            Err(error) => {
                tracing::debug!(%error, "sealing keys not read");
                if this.keys.load().is_empty() {
                    RETRY
                } else {
                    RELOAD
                }
            }
        };
        drop(this);
        tokio::time::sleep(pause).await;
    }
}

/// The keys in force after removing expired ones and adding a new one if due.
async fn refresh(fallback: &OutageFallback, store: &dyn Store) -> Result<Vec<SealKey>, StoreError> {
    let now = fallback.clock.now();
    let rotation = fallback.config.key_rotation;
    let mut keys = store.seal_keys().await?;
    let (kept, expired): (Vec<_>, Vec<_>) = keys
        .into_iter()
        .partition(|key| key.created + rotation * 2 > now);
    for key in expired {
        store.remove_seal_key(&key.id).await?;
    }
    keys = kept;
    let due = keys.iter().all(|key| key.created + rotation <= now);
    if due {
        let first = keys.is_empty();
        store.add_seal_key(&new_key(now, rotation, first)).await?;
        keys = store.seal_keys().await?;
        tracing::info!(keys = keys.len(), "new sealing key made");
    }
    // Replicas that found a key due at the same moment each made one: every replica keeps
    // the one with the lowest id, so they all seal with the same key.
    let mut current: Vec<&SealKey> = keys
        .iter()
        .filter(|key| key.created + rotation > now)
        .collect();
    current.sort_by(|a, b| a.id.cmp(&b.id));
    let extra: Vec<String> = current.iter().skip(1).map(|key| key.id.clone()).collect();
    for id in &extra {
        store.remove_seal_key(id).await?;
    }
    keys.retain(|key| !extra.contains(&key.id));
    Ok(keys)
}

/// A new key. Its id is the rotation period it is made in, so replicas that make one at the
/// same moment name it alike, and the store keeps the first (`add_seal_key` keeps an id's
/// first key): all of them read back the same one.
fn new_key(now: SystemTime, rotation: Duration, first: bool) -> SealKey {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let period = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / rotation.as_secs().max(1));
    SealKey {
        id: format!("{period:016x}"),
        secret,
        created: now,
        // The very first key has no predecessor to bridge: it seals at once.
        active_from: if first { now } else { now + RELOAD * 2 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::OutageConfig;
    use crate::store::{MemoryStore, SealKeys as _};

    fn fallback(clock: Arc<ManualClock>) -> OutageFallback {
        OutageFallback::for_tests(OutageConfig::default(), clock)
    }

    #[tokio::test]
    async fn the_first_key_seals_at_once_a_later_one_after_every_replica_read_it() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let store = MemoryStore::new(clock.clone(), 10);
        let fallback = fallback(clock.clone());
        let keys = refresh(&fallback, &store).await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].active_from, clock.now());
        // Within the rotation: nothing new.
        clock.advance(Duration::from_secs(3600));
        assert_eq!(refresh(&fallback, &store).await.unwrap(), keys);
        // A rotation later: a second key, sealing only after two reloads.
        clock.advance(Duration::from_secs(23 * 3600));
        let rotated = refresh(&fallback, &store).await.unwrap();
        assert_eq!(rotated.len(), 2);
        let newest = rotated.iter().max_by_key(|key| key.created).unwrap();
        assert_eq!(newest.active_from, clock.now() + RELOAD * 2);
        // Two rotations after it was made, the first key goes.
        clock.advance(Duration::from_secs(24 * 3600 + 1));
        let kept = refresh(&fallback, &store).await.unwrap();
        assert!(kept.iter().all(|key| key.id != keys[0].id), "{kept:?}");
    }

    #[tokio::test]
    async fn keys_made_at_the_same_moment_come_down_to_one() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let store = MemoryStore::new(clock.clone(), 10);
        let rotation = Duration::from_secs(24 * 3600);
        // Two replicas found no key and made one at once: one id, the first secret kept.
        let first = new_key(clock.now(), rotation, true);
        let second = new_key(clock.now(), rotation, true);
        assert_eq!(first.id, second.id);
        store.add_seal_key(&first).await.unwrap();
        store.add_seal_key(&second).await.unwrap();
        assert_eq!(store.seal_keys().await.unwrap(), vec![first.clone()]);
        // Made in neighbouring periods (clocks apart): the lower id is kept.
        let later = new_key(clock.now() + rotation, rotation, false);
        store.add_seal_key(&later).await.unwrap();
        let keys = refresh(&fallback(clock.clone()), &store).await.unwrap();
        assert_eq!(keys, vec![first]);
        assert_eq!(store.seal_keys().await.unwrap().len(), 1);
    }
}
