//! Token buckets for the flood limits, per client address and per virtual proxy, in tables
//! of bounded size. A bucket holds up to `burst` tokens and gains `per_second` of them each
//! second; what it limits may happen while it holds at least one. Times are passed in, so
//! tests move them instead of sleeping.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Entries looked at to choose one to evict when a shard is full.
const EVICTION_SAMPLE: usize = 8;

/// How fast something may happen: `per_second` on average, `burst` at once. A rate of zero
/// is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub fn is_off(&self) -> bool {
        self.per_second <= 0.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May go below zero: lookups charged after their answer (see [`Table::charge`]) can
    /// overshoot by as many as were in flight, and are paid back before the next one.
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated = now;
    }

    /// Time until the bucket holds one token again; zero if it does.
    fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((1.0 - self.tokens) / rate.per_second).min(3600.0))
    }
}

/// Which client addresses share a bucket: an IPv4 address, or an IPv6 /64, the block one
/// host (one subscriber line, one cloud instance) is usually handed whole, so that stepping
/// through its own addresses buys a client nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6(u64::try_from(u128::from(v6) >> 64).unwrap_or(u64::MAX)),
        }
    }
}

/// Buckets by key, at most `capacity` of them. A key not in the table has a full bucket, so
/// evicting a bucket forgives at most what it owed; the table holds the least recently used
/// of a small sample when it is full.
#[derive(Debug)]
pub struct Table<K> {
    rate: Rate,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Table<K> {
    pub fn new(rate: Rate, capacity: usize) -> Self {
        Self {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard<Q>(&self, key: &Q) -> &Mutex<HashMap<K, Bucket>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// `Err(wait)` while `key`'s bucket is empty: how long until it is not.
    pub fn check<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.rate.is_off() {
            return Ok(());
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = shard.get_mut(key) else {
            return Ok(());
        };
        bucket.refill(self.rate, now);
        match bucket.wait(self.rate) {
            Duration::ZERO => Ok(()),
            wait => Err(wait),
        }
    }

    /// Takes one token from `key`'s bucket, however many it holds (down to `-burst`).
    pub fn charge<Q>(&self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.rate.is_off() {
            return;
        }
        let floor = -f64::from(self.rate.burst);
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = shard.get_mut(key) {
            bucket.refill(self.rate, now);
            bucket.tokens = (bucket.tokens - 1.0).max(floor);
            return;
        }
        if shard.len() >= self.per_shard {
            evict_one(&mut shard);
        }
        let mut bucket = Bucket::full(self.rate, now);
        bucket.tokens -= 1.0;
        shard.insert(key.to_owned(), bucket);
    }

    /// Gives back a token [`charge`](Self::charge) took for something that then did not
    /// happen.
    pub fn refund<Q>(&self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.rate.is_off() {
            return;
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = shard.get_mut(key) {
            bucket.refill(self.rate, now);
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(self.rate.burst));
        }
    }

    /// [`check`](Self::check), then [`charge`](Self::charge) if it passed.
    pub fn take<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check(key, now)?;
        self.charge(key, now);
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn evict_one<K: Hash + Eq + Clone>(shard: &mut HashMap<K, Bucket>) {
    let oldest = shard
        .iter()
        .take(EVICTION_SAMPLE)
        .min_by_key(|(_, bucket)| bucket.updated)
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        shard.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let table = Table::new(RATE, 100);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(table.take(&1, start), Ok(()));
        }
        let wait = table.take(&1, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(
            table.take(&2, start),
            Ok(()),
            "another key has its own bucket"
        );
        assert!(table.take(&1, start + Duration::from_millis(400)).is_err());
        assert_eq!(table.take(&1, start + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn charges_past_empty_are_paid_back_before_the_next_pass() {
        let table = Table::new(RATE, 100);
        let start = Instant::now();
        // Five lookups were in flight when the bucket held three tokens.
        for _ in 0..5 {
            table.charge(&1, start);
        }
        // Two tokens owed and one to hold: 1.5 s at two a second.
        assert_eq!(table.check(&1, start), Err(Duration::from_millis(1500)));
        assert_eq!(table.check(&1, start + Duration::from_millis(1500)), Ok(()));
    }

    #[test]
    fn the_table_stays_within_its_capacity() {
        let table = Table::new(RATE, 32);
        let start = Instant::now();
        for key in 0..10_000 {
            table.charge(&key, start);
        }
        assert!(table.len() <= 32, "{}", table.len());
    }

    #[test]
    fn a_refund_gives_back_what_a_charge_took_and_no_more() {
        let table = Table::new(RATE, 100);
        let start = Instant::now();
        for _ in 0..3 {
            table.charge(&1, start);
        }
        assert!(table.check(&1, start).is_err());
        table.refund(&1, start);
        assert_eq!(table.take(&1, start), Ok(()));
        for _ in 0..10 {
            table.refund(&1, start);
        }
        for _ in 0..3 {
            assert_eq!(table.take(&1, start), Ok(()), "at most the burst again");
        }
        assert!(table.check(&1, start).is_err());
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let off = Rate {
            per_second: 0.0,
            burst: 0,
        };
        let table = Table::new(off, 4);
        let start = Instant::now();
        for _ in 0..100 {
            assert_eq!(table.take(&1, start), Ok(()));
        }
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_bucket() {
        let one = AddressKey::of("2001:db8:1:2::1".parse().unwrap());
        let same_block = AddressKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let other_block = AddressKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(one, same_block);
        assert_ne!(one, other_block);
        assert_eq!(
            AddressKey::of("::ffff:192.0.2.1".parse().unwrap()),
            AddressKey::of("192.0.2.1".parse().unwrap())
        );
    }
}
