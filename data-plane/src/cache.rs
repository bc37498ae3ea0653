//! The node's cache of validated sessions: bounded, sharded, keyed by the hash of the token.
//!
//! An entry is *fresh* for `ttl` after validation and used without asking anyone; after that
//! and up to `grace`, it is used only while the control plane cannot be reached. Revocations
//! drop entries by session handle at once. A handle revoked moments ago is remembered, so a
//! validation that was in flight when the revocation arrived cannot put it back. Ages are
//! read from the cache's clock, so its tests move a manual clock instead of sleeping.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use gatehouse_runtime::clock::Clock;

use crate::assertion_slot::AssertionSlot;
use sha2::{Digest as _, Sha256};

const SHARDS: usize = 64;
/// Entries looked at to choose one to evict when a shard is full.
const EVICTION_SAMPLE: usize = 8;

/// SHA-256 of a session token: the node keeps no token in the clear.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Eight bytes of the digest from `offset`: already uniformly distributed.
    fn word(&self, offset: usize) -> u64 {
        let mut word = [0; 8];
        word.copy_from_slice(&self.0[offset..offset + 8]);
        u64::from_le_bytes(word)
    }
}

/// A key is a digest, so its bytes serve as its hash: SipHash over 32 bytes was three
/// quarters of a cache lookup. Only tokens of validated sessions are ever stored, and their
/// digests cannot be steered, so there is no flooding to defend against here.
impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.word(0));
    }
}

/// Hashes a `TokenKey` to its own first word, mixed with a per-cache seed.
#[derive(Debug, Clone, Copy)]
struct DigestHasher {
    seed: u64,
    hash: u64,
}

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write_u64(&mut self, word: u64) {
        self.hash = word ^ self.seed;
    }

    /// Not used by `TokenKey`; a plain fold, for completeness.
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.hash = self.hash.rotate_left(8) ^ u64::from(*byte);
        }
        self.hash ^= self.seed;
    }
}

#[derive(Debug, Clone, Copy)]
struct DigestHash {
    seed: u64,
}

impl BuildHasher for DigestHash {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What the node knows of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSession {
    pub handle: String,
    pub virtual_proxy: String,
    pub user_directory: String,
    pub user_id: String,
    pub attributes: Vec<(String, String)>,
    /// The session ends at this time whatever its activity.
    pub absolute_expiry: SystemTime,
    /// The session's signed identity assertion, kept until close to its expiry.
    pub assertion: AssertionSlot,
}

impl CachedSession {
    pub fn from_proto(session: &gatehouse_proto::v1::Session) -> Self {
        let user = session.user.clone().unwrap_or_default();
        Self {
            handle: session.handle.clone(),
            virtual_proxy: session.virtual_proxy.clone(),
            user_directory: user.user_directory,
            user_id: user.user_id,
            attributes: user
                .attributes
                .into_iter()
                .map(|attribute| (attribute.name, attribute.value))
                .collect(),
            absolute_expiry: session
                .absolute_expiry
                .and_then(|at| SystemTime::try_from(at).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            assertion: AssertionSlot::default(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    session: Arc<CachedSession>,
    validated: Instant,
    /// Used without asking anyone until then.
    fresh_until: Instant,
    /// Used while the control plane cannot be asked until then.
    stale_until: Instant,
    /// Last use not yet reported to the control plane.
    unreported_use: Option<SystemTime>,
}

/// A cache lookup.
#[derive(Debug, Clone)]
pub enum Lookup {
    Fresh(Arc<CachedSession>),
    /// Past `ttl` but within `grace`: use only if validation cannot be done.
    Stale(Arc<CachedSession>),
    Missing,
}

#[derive(Debug)]
pub struct SessionCache {
    shards: Vec<Mutex<HashMap<TokenKey, Entry, DigestHash>>>,
    ttl: Duration,
    grace: Duration,
    /// Handle → tokens cached for it, to drop a session by handle.
    /// Keyed by a fingerprint of the handle, not a copy of it: copies of every handle, each
    /// in a `Vec`, were a sixth of a cached session's memory. Handles whose fingerprints
    /// collide share an entry; every use checks the cached session's own handle.
    by_handle: Mutex<HashMap<u64, TokenKeys>>,
    handle_hasher: std::collections::hash_map::RandomState,
    /// Handles revoked within the last `ttl`, with when.
    revoked: Mutex<HashMap<String, Instant>>,
    /// Entries in all shards together, plus slots taken by inserts about to add theirs: never
    /// more than `max_sessions`.
    len: AtomicUsize,
    max_sessions: usize,
    clock: Arc<dyn Clock>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent; a panic elsewhere does not poison
    // the cache's meaning.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionCache {
    pub fn new(max_sessions: usize, ttl: Duration, grace: Duration, clock: Arc<dyn Clock>) -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(SHARDS);
        let max_sessions = max_sessions.max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(DigestHash { seed })))
                .collect(),
            ttl,
            grace,
            by_handle: Mutex::new(HashMap::new()),
            handle_hasher: std::collections::hash_map::RandomState::new(),
            revoked: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            max_sessions,
            clock,
        }
    }

    fn fingerprint(&self, handle: &str) -> u64 {
        self.handle_hasher.hash_one(handle)
    }

    /// The shard comes from another word of the digest than the hash within the shard.
    fn shard(&self, key: &TokenKey) -> &Mutex<HashMap<TokenKey, Entry, DigestHash>> {
        &self.shards[Self::shard_index(key)]
    }

    fn shard_index(key: &TokenKey) -> usize {
        usize::try_from(key.word(8) % SHARDS as u64).unwrap_or(0)
    }

    /// The hot path: one shard lock, no allocation. A use is recorded as activity.
    pub fn get(&self, key: &TokenKey) -> Lookup {
        let now = self.clock.instant();
        let mut shard = lock(self.shard(key));
        match shard.get_mut(key) {
            Some(entry) if now < entry.fresh_until => {
                entry.unreported_use = Some(self.clock.now());
                Lookup::Fresh(entry.session.clone())
            }
            Some(entry) if now < entry.stale_until => Lookup::Stale(entry.session.clone()),
            _ => Lookup::Missing,
        }
    }

    /// Sessions used since the last call, with their latest use, to report as activity.
    pub fn take_activity(&self) -> Vec<(String, SystemTime)> {
        let mut activity = HashMap::new();
        for shard in &self.shards {
            for entry in lock(shard).values_mut() {
                if let Some(used) = entry.unreported_use.take() {
                    let latest = activity.entry(entry.session.handle.clone()).or_insert(used);
                    *latest = (*latest).max(used);
                }
            }
        }
        activity.into_iter().collect()
    }

    /// Puts back activity that could not be reported, so the next report carries it.
    pub fn restore_activity(&self, activity: &[(String, SystemTime)]) {
        let by_handle = lock(&self.by_handle);
        for (handle, at) in activity {
            let keys = by_handle.get(&self.fingerprint(handle));
            for key in keys.map(TokenKeys::as_slice).unwrap_or_default() {
                if let Some(entry) = lock(self.shard(key)).get_mut(key)
                    && *entry.session.handle == **handle
                {
                    entry.unreported_use =
                        Some(entry.unreported_use.map_or(*at, |used| used.max(*at)));
                }
            }
        }
    }

    /// Caches a session just validated, unless it was revoked meanwhile.
    pub fn insert(&self, key: TokenKey, session: Arc<CachedSession>) -> bool {
        self.insert_until(key, session, None)
    }

    /// Caches a session the control plane served from its seal during a store outage, until
    /// `until` at the latest: fresh for `ttl` at most, and never stale past what an earlier
    /// validation from the store allowed (the outage's own limit is the control plane's).
    pub fn insert_served_from_seal(
        &self,
        key: TokenKey,
        session: Arc<CachedSession>,
        until: SystemTime,
    ) -> bool {
        let left = until
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .min(self.ttl);
        self.insert_until(key, session, Some(left))
    }

    /// `fresh_for`: `None` for a validation by the store (fresh for `ttl`, stale for
    /// `grace`); else how long the entry is fresh, with no stale use of its own.
    fn insert_until(
        &self,
        key: TokenKey,
        session: Arc<CachedSession>,
        fresh_for: Option<Duration>,
    ) -> bool {
        let now = self.clock.instant();
        {
            let mut revoked = lock(&self.revoked);
            revoked.retain(|_, at| now.duration_since(*at) < self.ttl.max(Duration::from_secs(5)));
            if revoked.contains_key(&session.handle) {
                return false;
            }
        }
        let entry = |earlier_stale_until: Option<Instant>| {
            let (fresh_until, stale_until) = match fresh_for {
                None => (now + self.ttl, now + self.grace),
                Some(fresh_for) => (
                    now + fresh_for,
                    earlier_stale_until.map_or(now + fresh_for, |stale| stale.max(now + fresh_for)),
                ),
            };
            Entry {
                session: session.clone(),
                validated: now,
                fresh_until,
                stale_until,
                unreported_use: Some(self.clock.now()),
            }
        };
        // A token cached already (validated again after its ttl) keeps its slot, and the
        // assertion signed for it while the session is unchanged.
        let refreshed = {
            let mut shard = lock(self.shard(&key));
            shard
                .get_mut(&key)
                .map(|cached| {
                    if *cached.session == *session {
                        session.assertion.adopt(&cached.session.assertion);
                    }
                    *cached = entry(Some(cached.stale_until));
                })
                .is_some()
        };
        let mut evicted = Vec::new();
        if !refreshed {
            if !self.reserve(&key, &mut evicted) {
                // Every slot is held by inserts still in flight (as many at once as the cache
                // has room for): the session is valid, it just is not cached this time.
                self.forget_evicted(&evicted);
                return true;
            }
            let replaced = lock(self.shard(&key)).insert(key, entry(None));
            if replaced.is_some() {
                // Another validation of the same token got in first: one slot is enough.
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.forget_evicted(&evicted);
        let mut by_handle = lock(&self.by_handle);
        let fingerprint = self.fingerprint(&session.handle);
        by_handle
            .entry(fingerprint)
            .and_modify(|keys| keys.add(key))
            .or_insert(TokenKeys::One(key));
        // A revocation that came after the check above but before the index had this key
        // found nothing to drop: look again, now that a later one cannot miss it.
        if lock(&self.revoked).contains_key(&session.handle) {
            forget_key(&mut by_handle, fingerprint, &key);
            let mut shard = lock(self.shard(&key));
            if shard
                .get(&key)
                .is_some_and(|entry| Arc::ptr_eq(&entry.session, &session))
            {
                shard.remove(&key);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            return false;
        }
        // Likewise an eviction between the shard insert and indexing found nothing to drop
        // from the index: without this look, every such race left an index entry behind for
        // good, so the index grew under churn while the cache itself stayed bounded.
        if !lock(self.shard(&key)).contains_key(&key) {
            forget_key(&mut by_handle, fingerprint, &key);
        }
        true
    }

    /// Takes one of the `max_sessions` slots for a new entry, evicting the least recently
    /// validated of a sample to make room when the cache is full. The count is raised only
    /// while it is below the bound, so the cache never holds more than `max_sessions`, however
    /// many inserts race (checking the count and then inserting let concurrent inserts, and
    /// inserts into a shard with nothing to evict, go past it). `false` when nothing could be
    /// evicted: every slot belongs to an insert still in flight.
    fn reserve(&self, key: &TokenKey, evicted: &mut Vec<(TokenKey, u64)>) -> bool {
        loop {
            let len = self.len.load(Ordering::Acquire);
            if len < self.max_sessions {
                if self
                    .len
                    .compare_exchange_weak(len, len + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            match self.evict_one(key) {
                Some(victim) => evicted.push(victim),
                None => return false,
            }
        }
    }

    /// Evicts one entry: from `key`'s own shard when it has any, else from the next shard
    /// that does. One shard lock at a time, so no lock order can deadlock.
    fn evict_one(&self, key: &TokenKey) -> Option<(TokenKey, u64)> {
        let home = Self::shard_index(key);
        (0..SHARDS).find_map(|offset| {
            let mut shard = lock(&self.shards[(home + offset) % SHARDS]);
            let (oldest, fingerprint) = shard
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, entry)| entry.validated)
                .map(|(key, entry)| (*key, self.fingerprint(&entry.session.handle)))?;
            shard.remove(&oldest)?;
            self.len.fetch_sub(1, Ordering::Relaxed);
            Some((oldest, fingerprint))
        })
    }

    /// Drops evicted tokens from the handle index, unless another insert has cached one of
    /// them again meanwhile.
    fn forget_evicted(&self, evicted: &[(TokenKey, u64)]) {
        if evicted.is_empty() {
            return;
        }
        let mut by_handle = lock(&self.by_handle);
        for (key, fingerprint) in evicted {
            if !lock(self.shard(key)).contains_key(key) {
                forget_key(&mut by_handle, *fingerprint, key);
            }
        }
    }

    /// Drops a token (the control plane said it is unknown).
    pub fn remove(&self, key: &TokenKey) {
        let removed = lock(self.shard(key)).remove(key);
        if let Some(entry) = removed {
            self.len.fetch_sub(1, Ordering::Relaxed);
            let fingerprint = self.fingerprint(&entry.session.handle);
            forget_key(&mut lock(&self.by_handle), fingerprint, key);
        }
    }

    /// Drops every token of a revoked session and remembers the revocation briefly.
    pub fn revoke(&self, handle: &str) {
        lock(&self.revoked).insert(handle.to_owned(), self.clock.instant());
        let fingerprint = self.fingerprint(handle);
        let mut by_handle = lock(&self.by_handle);
        let Some(keys) = by_handle.remove(&fingerprint) else {
            return;
        };
        for key in keys.as_slice() {
            let mut shard = lock(self.shard(key));
            match shard.get(key) {
                Some(entry) if *entry.session.handle == *handle => {
                    shard.remove(key);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                // Another handle with the same fingerprint: it stays.
                Some(_) => {
                    by_handle
                        .entry(fingerprint)
                        .and_modify(|kept| kept.add(*key))
                        .or_insert(TokenKeys::One(*key));
                }
                None => {}
            }
        }
    }

    /// Drops everything (revocations were missed).
    pub fn flush(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            self.len.fetch_sub(shard.len(), Ordering::Relaxed);
            shard.clear();
        }
        lock(&self.by_handle).clear();
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn forget_key(by_handle: &mut HashMap<u64, TokenKeys>, fingerprint: u64, key: &TokenKey) {
    if let Some(keys) = by_handle.get_mut(&fingerprint)
        && keys.remove(key)
    {
        by_handle.remove(&fingerprint);
    }
}

/// The tokens cached under one handle fingerprint: nearly always one, kept inline.
#[derive(Debug)]
enum TokenKeys {
    One(TokenKey),
    Many(Vec<TokenKey>),
}

impl TokenKeys {
    fn as_slice(&self) -> &[TokenKey] {
        match self {
            Self::One(key) => std::slice::from_ref(key),
            Self::Many(keys) => keys,
        }
    }

    fn add(&mut self, key: TokenKey) {
        match self {
            Self::One(only) if *only != key => *self = Self::Many(vec![*only, key]),
            Self::One(_) => {}
            Self::Many(keys) if !keys.contains(&key) => keys.push(key),
            Self::Many(_) => {}
        }
    }

    /// Removes `key`; true when none is left.
    fn remove(&mut self, key: &TokenKey) -> bool {
        match self {
            Self::One(only) => only == key,
            Self::Many(keys) => {
                keys.retain(|k| k != key);
                keys.is_empty()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_runtime::clock::ManualClock;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ))
    }

    /// A cache whose clock never moves unless a test moves it.
    fn new_cache(max_sessions: usize, ttl: Duration, grace: Duration) -> SessionCache {
        SessionCache::new(max_sessions, ttl, grace, clock())
    }

    fn session(handle: &str) -> Arc<CachedSession> {
        Arc::new(CachedSession {
            handle: handle.into(),
            virtual_proxy: String::new(),
            user_directory: "D".into(),
            user_id: "u".into(),
            attributes: vec![],
            absolute_expiry: SystemTime::now() + Duration::from_secs(3600),
            assertion: Default::default(),
        })
    }

    #[test]
    fn entries_are_fresh_then_stale_then_gone() {
        let clock = clock();
        let cache = SessionCache::new(
            10,
            Duration::from_millis(30),
            Duration::from_millis(80),
            clock.clone(),
        );
        let key = TokenKey::of("t");
        assert!(matches!(cache.get(&key), Lookup::Missing));
        cache.insert(key, session("h"));
        assert!(matches!(cache.get(&key), Lookup::Fresh(_)));
        clock.advance(Duration::from_millis(40));
        assert!(matches!(cache.get(&key), Lookup::Stale(_)));
        clock.advance(Duration::from_millis(50));
        assert!(matches!(cache.get(&key), Lookup::Missing));
    }

    #[test]
    fn a_session_validated_again_unchanged_keeps_its_signed_assertion() {
        use crate::assertion_slot::SignedAssertion;
        let cache = new_cache(10, Duration::from_secs(60), Duration::from_secs(60));
        let key = TokenKey::of("t");
        let later = SystemTime::now() + Duration::from_secs(60);
        // As the control plane describes it each time (the clone's slot starts empty).
        let described = session("h");
        let first = Arc::new((*described).clone());
        first.assertion.store(SignedAssertion {
            generation: 7,
            refresh_at: later,
            value: http::HeaderValue::from_static("signed"),
        });
        cache.insert(key, first);
        let again = Arc::new((*described).clone());
        cache.insert(key, again.clone());
        assert_eq!(
            again.assertion.current(7, SystemTime::now()),
            Some(http::HeaderValue::from_static("signed"))
        );
        // Changed (other attributes): signed anew.
        let changed = Arc::new(CachedSession {
            attributes: vec![("group".into(), "admins".into())],
            ..(*described).clone()
        });
        cache.insert(key, changed.clone());
        assert_eq!(changed.assertion.current(7, SystemTime::now()), None);
    }

    #[test]
    fn revocation_drops_every_token_of_a_handle_and_blocks_late_inserts() {
        let cache = new_cache(10, Duration::from_secs(60), Duration::from_secs(60));
        let (a, b) = (TokenKey::of("a"), TokenKey::of("b"));
        cache.insert(a, session("h"));
        cache.insert(b, session("h"));
        cache.insert(TokenKey::of("c"), session("other"));
        cache.revoke("h");
        assert!(matches!(cache.get(&a), Lookup::Missing));
        assert!(matches!(cache.get(&b), Lookup::Missing));
        assert_eq!(cache.len(), 1);
        assert!(
            !cache.insert(a, session("h")),
            "a validation racing the revocation loses"
        );
    }

    #[test]
    fn a_revocation_is_remembered_for_the_ttl_then_forgotten() {
        let clock = clock();
        let ttl = Duration::from_secs(60);
        let cache = SessionCache::new(10, ttl, ttl, clock.clone());
        let key = TokenKey::of("t");
        cache.revoke("h");
        clock.advance(ttl - Duration::from_secs(1));
        assert!(!cache.insert(key, session("h")), "still remembered");
        clock.advance(Duration::from_secs(1));
        assert!(cache.insert(key, session("h")), "forgotten after the ttl");
        assert!(matches!(cache.get(&key), Lookup::Fresh(_)));
    }

    #[test]
    fn unreported_activity_is_taken_once_and_can_be_restored() {
        let cache = new_cache(10, Duration::from_secs(60), Duration::from_secs(60));
        let key = TokenKey::of("t");
        cache.insert(key, session("h"));
        let _ = cache.get(&key);
        let activity = cache.take_activity();
        assert_eq!(activity.len(), 1);
        assert!(cache.take_activity().is_empty(), "reported once");
        cache.restore_activity(&activity);
        assert_eq!(
            cache.take_activity(),
            activity,
            "a failed report is carried to the next"
        );
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = new_cache(SHARDS * 2, Duration::from_secs(60), Duration::from_secs(60));
        for index in 0..SHARDS * 20 {
            cache.insert(
                TokenKey::of(&index.to_string()),
                session(&index.to_string()),
            );
        }
        // An insert into an empty shard of a full cache evicts from another shard.
        assert_eq!(cache.len(), SHARDS * 2);
        assert_eq!(lock(&cache.by_handle).len(), SHARDS * 2);
        let held: usize = cache.shards.iter().map(|shard| lock(shard).len()).sum();
        assert_eq!(held, cache.len());
    }

    #[test]
    fn concurrent_inserts_never_take_the_cache_past_its_bound() {
        let max = 50;
        let cache = Arc::new(new_cache(
            max,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let largest = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let (cache, largest) = (cache.clone(), largest.clone());
                std::thread::spawn(move || {
                    for index in 0..2_000 {
                        let name = format!("{thread}-{index}");
                        assert!(cache.insert(TokenKey::of(&name), session(&name)));
                        largest.fetch_max(cache.len(), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(largest.load(Ordering::Relaxed) <= max);
        assert_eq!(cache.len(), max);
        let held: usize = cache.shards.iter().map(|shard| lock(shard).len()).sum();
        assert_eq!(held, max);
        assert_eq!(
            lock(&cache.by_handle).len(),
            max,
            "evicted tokens leave the index"
        );
    }

    #[test]
    fn token_keys_hold_one_inline_and_more_in_a_list() {
        let (a, b) = (TokenKey::of("a"), TokenKey::of("b"));
        let mut keys = TokenKeys::One(a);
        keys.add(a);
        assert_eq!(keys.as_slice(), &[a]);
        keys.add(b);
        assert_eq!(keys.as_slice(), &[a, b]);
        assert!(!keys.remove(&a));
        assert!(keys.remove(&b), "empty once the last key goes");
        assert!(!TokenKeys::One(a).remove(&b));
    }

    #[test]
    fn the_cache_holds_as_many_sessions_as_it_is_sized_for() {
        let max = 10_000;
        let cache = new_cache(max, Duration::from_secs(60), Duration::from_secs(60));
        for index in 0..max {
            cache.insert(
                TokenKey::of(&index.to_string()),
                session(&index.to_string()),
            );
        }
        assert_eq!(cache.len(), max, "uneven shards must not evict early");
        for index in 0..max {
            let key = TokenKey::of(&index.to_string());
            assert!(matches!(cache.get(&key), Lookup::Fresh(_)), "{index}");
        }
        cache.insert(TokenKey::of("one more"), session("one more"));
        assert_eq!(cache.len(), max);
        cache.flush();
        assert_eq!(cache.len(), 0);
    }
}
