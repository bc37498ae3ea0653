//! The in-process store: one mutex over plain maps. For a single control-plane replica only;
//! every operation is atomic because it runs under the lock. Each aggregate's operations
//! are in their own file (`one_time_records`, `sessions`, `revocations`, `seal_keys`,
//! `assertion_keys`).

mod assertion_keys;
mod one_time_records;
mod revocations;
mod seal_keys;
mod sessions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

use async_trait::async_trait;

use self::sessions::{StoredSession, UserIndex};
use super::{Store, StoreError};
use crate::clock::Clock;
use crate::domain::{AssertionKey, OidcLogin, Revocation, SealKey, Target, Ticket};
use crate::tokens::TokenHash;

/// How often expired entries are swept out (they are invisible to reads as soon as they expire).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    revocations_kept: usize,
    state: Mutex<State>,
    /// Wakes whoever waits for revocation events.
    revoked: Notify,
}

#[derive(Debug)]
struct State {
    tickets: HashMap<TokenHash, (Ticket, SystemTime)>,
    targets: HashMap<String, (Target, SystemTime)>,
    jwts: HashMap<TokenHash, SystemTime>,
    oidc_logins: HashMap<TokenHash, (OidcLogin, SystemTime)>,
    used: HashMap<TokenHash, SystemTime>,
    links: HashMap<TokenHash, (BTreeSet<String>, SystemTime)>,
    /// By handle; ordered so listings can resume after a handle.
    sessions: BTreeMap<String, StoredSession>,
    handles_by_token: HashMap<TokenHash, String>,
    /// Handles by virtual proxy and case-folded user: finding a user's sessions (on every
    /// create, for the cap) must not scan every session.
    handles_by_user: HashMap<UserIndex, BTreeSet<String>>,
    revocations: VecDeque<(u64, Revocation)>,
    next_revocation: u64,
    /// Highest sequence number dropped from `revocations` to bound memory.
    last_trimmed: u64,
    seal_keys: BTreeMap<String, SealKey>,
    assertion_keys: BTreeMap<String, AssertionKey>,
    last_sweep: SystemTime,
}

impl MemoryStore {
    /// `revocations_kept`: how many revocation events are retained for reconnecting nodes.
    pub fn new(clock: Arc<dyn Clock>, revocations_kept: usize) -> Self {
        let now = clock.now();
        Self {
            clock,
            revocations_kept: revocations_kept.max(1),
            state: Mutex::new(State {
                tickets: HashMap::new(),
                targets: HashMap::new(),
                jwts: HashMap::new(),
                oidc_logins: HashMap::new(),
                used: HashMap::new(),
                links: HashMap::new(),
                sessions: BTreeMap::new(),
                handles_by_token: HashMap::new(),
                handles_by_user: HashMap::new(),
                revocations: VecDeque::new(),
                next_revocation: 1,
                last_trimmed: 0,
                seal_keys: BTreeMap::new(),
                assertion_keys: BTreeMap::new(),
                last_sweep: now,
            }),
            revoked: Notify::new(),
        }
    }

    /// Locks the state after sweeping it if due. A panic while holding the lock cannot leave
    /// the maps half-updated in a way that matters more than losing the process would, so a
    /// poisoned lock is simply taken over.
    fn state(&self) -> (MutexGuard<'_, State>, SystemTime) {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(state.last_sweep).unwrap_or_default() >= SWEEP_INTERVAL {
            state.sweep(now);
        }
        (state, now)
    }
}

impl State {
    fn sweep(&mut self, now: SystemTime) {
        self.tickets.retain(|_, (_, expires)| *expires > now);
        self.targets.retain(|_, (_, expires)| *expires > now);
        self.jwts.retain(|_, expires| *expires > now);
        self.oidc_logins.retain(|_, (_, expires)| *expires > now);
        self.used.retain(|_, expires| *expires > now);
        self.links.retain(|_, (_, expires)| *expires > now);
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, stored)| stored.session.is_expired(now))
            .map(|(handle, _)| handle.clone())
            .collect();
        for handle in expired {
            self.forget(&handle);
        }
        self.last_sweep = now;
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
