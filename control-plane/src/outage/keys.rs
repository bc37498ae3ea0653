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
        store.add_seal_key(&new_key(now, first)).await?;
        // Read back: another replica may have added one at the same moment; both stay.
        keys = store.seal_keys().await?;
        tracing::info!(keys = keys.len(), "new sealing key made");
    }
    Ok(keys)
}

fn new_key(now: SystemTime, first: bool) -> SealKey {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    SealKey {
        id: id.iter().map(|byte| format!("{byte:02x}")).collect(),
        secret,
        created: now,
        // The very first key has no predecessor to bridge: it seals at once.
        active_from: if first { now } else { now + RELOAD * 2 },
    }
}
