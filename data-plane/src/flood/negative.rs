//! The negative cache: session tokens the control plane answered are unknown, for a few
//! seconds, so that a client repeating one costs the control plane one `ValidateSession`,
//! not one per request.
//!
//! An entry is the SHA-256 of the virtual proxy and the token (the node keeps no token), and
//! the time it lapses. Only a confirmed "unknown" answer makes one: an outage, a refusal or a
//! timeout never does, so nothing is refused for a fault. Nothing a client sends removes one
//! early; a login on this node that creates the token does ([`NegativeCache::forget`]), and
//! so does the control plane's word that a session with a caller-chosen token now exists. The
//! table is bounded: when a shard is full, the entry of a small sample that lapses first
//! makes room.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const SHARDS: usize = 32;
/// Entries looked at to choose one to evict when a shard is full.
const EVICTION_SAMPLE: usize = 8;

/// What an entry is keyed by: a digest of the virtual proxy and the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownKey([u8; 32]);

impl UnknownKey {
    pub fn of(virtual_proxy: &str, token: &str) -> Self {
        Self(gatehouse_runtime::unknown_token::digest(
            virtual_proxy,
            token,
        ))
    }

    /// The key a `Watch` event names (`gatehouse_runtime::unknown_token::hex`).
    pub fn from_hex(text: &str) -> Option<Self> {
        gatehouse_runtime::unknown_token::from_hex(text).map(Self)
    }
}

#[derive(Debug)]
pub struct NegativeCache {
    ttl: Duration,
    per_shard: usize,
    /// Keys come from what clients send: hashed with a random key, never trusted to spread.
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<UnknownKey, Instant>>>,
}

impl NegativeCache {
    /// A `ttl` of zero keeps nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &UnknownKey) -> &Mutex<HashMap<UnknownKey, Instant>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The control plane answered `key`'s token is unknown, at `now`.
    pub fn insert(&self, key: UnknownKey, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            let first_to_lapse = shard
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, until)| **until)
                .map(|(key, _)| *key);
            if let Some(evicted) = first_to_lapse {
                shard.remove(&evicted);
            }
        }
        shard.insert(key, now + self.ttl);
    }

    /// Whether `key`'s token was answered unknown less than the TTL ago.
    pub fn contains(&self, key: &UnknownKey, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.get(key) {
            Some(until) if now < *until => true,
            Some(_) => {
                shard.remove(key);
                false
            }
            None => false,
        }
    }

    /// A session with `key`'s token now exists (a login on this node made it).
    pub fn forget(&self, key: &UnknownKey) {
        self.shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_token_is_remembered_for_the_ttl_only() {
        let cache = NegativeCache::new(Duration::from_secs(3), 100);
        let start = Instant::now();
        let key = UnknownKey::of("app", "random-cookie");
        assert!(!cache.contains(&key, start));
        cache.insert(key, start);
        assert!(cache.contains(&key, start + Duration::from_millis(2999)));
        assert!(!cache.contains(&key, start + Duration::from_secs(3)));
        assert_eq!(cache.len(), 0, "a lapsed entry is dropped when met");
    }

    #[test]
    fn the_key_names_the_virtual_proxy_and_the_token() {
        assert_ne!(UnknownKey::of("a", "bc"), UnknownKey::of("ab", "c"));
        assert_ne!(UnknownKey::of("app", "t"), UnknownKey::of("hub", "t"));
        assert_eq!(UnknownKey::of("app", "t"), UnknownKey::of("app", "t"));
    }

    #[test]
    fn a_login_that_creates_the_token_forgets_it() {
        let cache = NegativeCache::new(Duration::from_secs(3), 100);
        let start = Instant::now();
        let key = UnknownKey::of("app", "chosen");
        cache.insert(key, start);
        cache.forget(&key);
        assert!(!cache.contains(&key, start));
    }

    #[test]
    fn a_flood_of_tokens_stays_within_the_capacity() {
        let cache = NegativeCache::new(Duration::from_secs(3), 64);
        let start = Instant::now();
        for n in 0..10_000 {
            cache.insert(UnknownKey::of("app", &n.to_string()), start);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = NegativeCache::new(Duration::ZERO, 64);
        let key = UnknownKey::of("app", "t");
        cache.insert(key, Instant::now());
        assert!(!cache.contains(&key, Instant::now()));
    }
}
