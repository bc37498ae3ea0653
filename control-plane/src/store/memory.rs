//! The in-process store: one mutex over plain maps. For a single control-plane replica only;
//! every operation is atomic because it runs under the lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{MAX_PAGE_SIZE, OneTimeRecords, RevocationLog, Sessions, Store, StoreError};
use crate::clock::Clock;
use crate::domain::{
    CapPolicy, CreateOutcome, NewSession, OidcLogin, Page, Revocation, RevocationReason,
    Revocations, Session, SessionCap, Target, Ticket, UserKey,
};
use crate::tokens::{self, TokenHash};

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
    last_sweep: SystemTime,
}

/// (virtual proxy, case-folded directory, case-folded id).
type UserIndex = (String, (String, String));

fn user_index(virtual_proxy: &str, user: &UserKey) -> UserIndex {
    (virtual_proxy.to_owned(), user.normalized())
}

#[derive(Debug, Clone)]
struct StoredSession {
    session: Session,
    token_hash: TokenHash,
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
                last_sweep: now,
            }),
            revoked: Notify::new(),
        }
    }

    /// Ends a session, records the revocation and wakes whoever follows revocations.
    fn revoke(&self, state: &mut State, handle: &str, reason: RevocationReason) -> Option<Session> {
        let session = state.revoke(handle, reason, self.revocations_kept);
        self.revoked.notify_waiters();
        session
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

    fn live(&self, handle: &str, now: SystemTime) -> Option<&StoredSession> {
        self.sessions
            .get(handle)
            .filter(|stored| !stored.session.is_expired(now))
    }

    /// Removes a session without telling anyone (it expired, or the caller records why).
    fn forget(&mut self, handle: &str) -> Option<StoredSession> {
        let stored = self.sessions.remove(handle)?;
        self.handles_by_token.remove(&stored.token_hash);
        let index = user_index(&stored.session.virtual_proxy, &stored.session.user.key());
        if let Some(handles) = self.handles_by_user.get_mut(&index) {
            handles.remove(handle);
            if handles.is_empty() {
                self.handles_by_user.remove(&index);
            }
        }
        Some(stored)
    }

    fn revoke(&mut self, handle: &str, reason: RevocationReason, kept: usize) -> Option<Session> {
        let stored = self.forget(handle)?;
        let sequence = self.next_revocation;
        self.next_revocation += 1;
        self.revocations.push_back((
            sequence,
            Revocation {
                cursor: cursor_of(sequence),
                handle: handle.to_owned(),
                virtual_proxy: stored.session.virtual_proxy.clone(),
                reason,
            },
        ));
        while self.revocations.len() > kept {
            if let Some((trimmed, _)) = self.revocations.pop_front() {
                self.last_trimmed = trimmed;
            }
        }
        Some(stored.session)
    }

    fn user_handles(&self, virtual_proxy: &str, user: &UserKey, now: SystemTime) -> Vec<String> {
        let Some(handles) = self.handles_by_user.get(&user_index(virtual_proxy, user)) else {
            return Vec::new();
        };
        let mut sessions: Vec<&Session> = handles
            .iter()
            .filter_map(|handle| self.sessions.get(handle))
            .map(|stored| &stored.session)
            .filter(|s| !s.is_expired(now))
            .collect();
        sessions.sort_by(|a, b| {
            a.created
                .cmp(&b.created)
                .then_with(|| a.handle.cmp(&b.handle))
        });
        sessions.into_iter().map(|s| s.handle.clone()).collect()
    }
}

#[async_trait]
impl OneTimeRecords for MemoryStore {
    async fn put_ticket(
        &self,
        hash: &TokenHash,
        ticket: &Ticket,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state
            .tickets
            .insert(hash.clone(), (ticket.clone(), now + ttl));
        Ok(())
    }

    async fn take_ticket(
        &self,
        hash: &TokenHash,
        virtual_proxy: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let (mut state, now) = self.state();
        let usable = matches!(
            state.tickets.get(hash),
            Some((ticket, expires)) if *expires > now && ticket.virtual_proxy == virtual_proxy
        );
        Ok(if usable {
            state.tickets.remove(hash).map(|(ticket, _)| ticket)
        } else {
            None
        })
    }

    async fn put_target(&self, id: &str, target: &Target, ttl: Duration) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state
            .targets
            .insert(id.to_owned(), (target.clone(), now + ttl));
        Ok(())
    }

    async fn get_target(&self, id: &str) -> Result<Option<Target>, StoreError> {
        let (state, now) = self.state();
        Ok(state
            .targets
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(target, _)| target.clone()))
    }

    async fn remember_jwt(&self, hash: &TokenHash, ttl: Duration) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state.jwts.insert(hash.clone(), now + ttl);
        Ok(())
    }

    async fn jwt_remembered(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let (state, now) = self.state();
        Ok(state.jwts.get(hash).is_some_and(|expires| *expires > now))
    }

    async fn first_use(&self, hash: &TokenHash, ttl: Duration) -> Result<bool, StoreError> {
        let (mut state, now) = self.state();
        if state.used.get(hash).is_some_and(|expires| *expires > now) {
            return Ok(false);
        }
        state.used.insert(hash.clone(), now + ttl);
        Ok(true)
    }

    async fn put_oidc_login(
        &self,
        state_hash: &TokenHash,
        login: &OidcLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        state
            .oidc_logins
            .insert(state_hash.clone(), (login.clone(), now + ttl));
        Ok(())
    }

    async fn take_oidc_login(
        &self,
        state_hash: &TokenHash,
    ) -> Result<Option<OidcLogin>, StoreError> {
        let (mut state, now) = self.state();
        Ok(state
            .oidc_logins
            .remove(state_hash)
            .filter(|(_, expires)| *expires > now)
            .map(|(login, _)| login))
    }
}

#[async_trait]
impl Sessions for MemoryStore {
    async fn link_session(
        &self,
        key: &TokenHash,
        handle: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut state, now) = self.state();
        let entry = state
            .links
            .entry(key.clone())
            .or_insert_with(|| (BTreeSet::new(), now));
        if entry.1 <= now {
            entry.0.clear();
        }
        entry.0.insert(handle.to_owned());
        entry.1 = now + ttl;
        Ok(())
    }

    async fn linked_sessions(&self, key: &TokenHash) -> Result<Vec<String>, StoreError> {
        let (state, now) = self.state();
        Ok(state
            .links
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(handles, _)| handles.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn create_session(
        &self,
        new: NewSession,
        cap: SessionCap,
    ) -> Result<CreateOutcome, StoreError> {
        let (mut state, now) = self.state();
        if let Some(existing) = state.handles_by_token.get(&new.token_hash).cloned() {
            if state.live(&existing, now).is_some() {
                return Ok(CreateOutcome::TokenInUse);
            }
            state.forget(&existing);
        }
        let handles = state.user_handles(&new.virtual_proxy, &new.user.key(), now);
        let max = usize::try_from(cap.max_per_user).unwrap_or(usize::MAX);
        let mut evicted = Vec::new();
        if handles.len() >= max {
            if cap.policy == CapPolicy::Refuse {
                return Ok(CreateOutcome::CapReached);
            }
            for handle in &handles[..=handles.len() - max] {
                evicted.extend(self.revoke(&mut state, handle, RevocationReason::Evicted));
            }
        }
        let session = Session {
            handle: tokens::new_id(),
            virtual_proxy: new.virtual_proxy,
            user: new.user,
            created: new.created,
            last_active: new.created,
            inactivity_timeout: new.inactivity_timeout,
            absolute_expiry: new.absolute_expiry,
        };
        state
            .handles_by_token
            .insert(new.token_hash.clone(), session.handle.clone());
        state
            .handles_by_user
            .entry(user_index(&session.virtual_proxy, &session.user.key()))
            .or_default()
            .insert(session.handle.clone());
        state.sessions.insert(
            session.handle.clone(),
            StoredSession {
                session: session.clone(),
                token_hash: new.token_hash,
            },
        );
        Ok(CreateOutcome::Created { session, evicted })
    }

    async fn session_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let (state, now) = self.state();
        Ok(state
            .handles_by_token
            .get(hash)
            .and_then(|handle| state.live(handle, now))
            .map(|stored| stored.session.clone()))
    }

    async fn session_by_handle(&self, handle: &str) -> Result<Option<Session>, StoreError> {
        let (state, now) = self.state();
        Ok(state.live(handle, now).map(|stored| stored.session.clone()))
    }

    async fn touch_session(
        &self,
        handle: &str,
        at: SystemTime,
    ) -> Result<Option<Session>, StoreError> {
        let (mut state, now) = self.state();
        if state.live(handle, now).is_none() {
            return Ok(None);
        }
        Ok(state.sessions.get_mut(handle).map(|stored| {
            stored.session = stored.session.touched(at);
            stored.session.clone()
        }))
    }

    async fn delete_session(
        &self,
        handle: &str,
        reason: RevocationReason,
    ) -> Result<Option<Session>, StoreError> {
        let (mut state, now) = self.state();
        if state.live(handle, now).is_none() {
            return Ok(None);
        }
        Ok(self.revoke(&mut state, handle, reason))
    }

    async fn user_sessions(
        &self,
        virtual_proxy: &str,
        user: &UserKey,
    ) -> Result<Vec<Session>, StoreError> {
        let (state, now) = self.state();
        Ok(state
            .user_handles(virtual_proxy, user, now)
            .iter()
            .filter_map(|handle| state.sessions.get(handle))
            .map(|stored| stored.session.clone())
            .collect())
    }

    async fn delete_user_sessions(
        &self,
        virtual_proxy: &str,
        user: &UserKey,
        reason: RevocationReason,
    ) -> Result<Vec<Session>, StoreError> {
        let (mut state, now) = self.state();
        let handles = state.user_handles(virtual_proxy, user, now);
        Ok(handles
            .iter()
            .filter_map(|handle| self.revoke(&mut state, handle, reason))
            .collect())
    }

    async fn list_sessions(
        &self,
        virtual_proxy: Option<&str>,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page, StoreError> {
        let after = if page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| StoreError::InvalidPageToken)?;
            Some(String::from_utf8(bytes).map_err(|_| StoreError::InvalidPageToken)?)
        };
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let (state, now) = self.state();
        let range = match &after {
            Some(handle) => state.sessions.range::<String, _>((
                std::ops::Bound::Excluded(handle),
                std::ops::Bound::Unbounded,
            )),
            None => state.sessions.range::<String, _>(..),
        };
        let mut matching = range
            .map(|(_, stored)| &stored.session)
            .filter(|s| !s.is_expired(now) && virtual_proxy.is_none_or(|vp| s.virtual_proxy == vp));
        let sessions: Vec<Session> = matching.by_ref().take(page_size).cloned().collect();
        let next_page_token = match (matching.next(), sessions.last()) {
            (Some(_), Some(last)) => URL_SAFE_NO_PAD.encode(&last.handle),
            _ => String::new(),
        };
        Ok(Page {
            sessions,
            next_page_token,
        })
    }
}

#[async_trait]
impl RevocationLog for MemoryStore {
    async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Revocations, StoreError> {
        let after = match cursor {
            Some(text) => sequence_of(text)?,
            None => 0,
        };
        let (state, _) = self.state();
        Ok(Revocations {
            events: state
                .revocations
                .iter()
                .filter(|(sequence, _)| *sequence > after)
                .take(limit)
                .map(|(_, revocation)| revocation.clone())
                .collect(),
            trimmed: cursor.is_some() && after < state.last_trimmed,
        })
    }

    async fn revocation_head(&self) -> Result<Option<String>, StoreError> {
        let (state, _) = self.state();
        Ok(state
            .revocations
            .back()
            .map(|(sequence, _)| cursor_of(*sequence)))
    }

    async fn wait_for_revocations(
        &self,
        cursor: Option<&str>,
        wait: Duration,
    ) -> Result<Revocations, StoreError> {
        // Register interest before looking, so an event between the look and the wait is
        // not missed.
        let notified = self.revoked.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let revocations = self
            .revocations_after(cursor, super::REVOCATION_BATCH)
            .await?;
        if !revocations.events.is_empty() || revocations.trimmed {
            return Ok(revocations);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.revocations_after(cursor, super::REVOCATION_BATCH)
            .await
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Cursors look like Redis stream ids, so nodes handle one format.
fn cursor_of(sequence: u64) -> String {
    format!("0-{sequence}")
}

fn sequence_of(cursor: &str) -> Result<u64, StoreError> {
    cursor
        .strip_prefix("0-")
        .and_then(|sequence| sequence.parse().ok())
        .ok_or(StoreError::InvalidCursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::User;

    const MINUTE: Duration = Duration::from_secs(60);

    fn store() -> (Arc<ManualClock>, MemoryStore) {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        ));
        (clock.clone(), MemoryStore::new(clock, 10))
    }

    fn new_session(clock: &ManualClock, idle: Duration, lifetime: Duration) -> NewSession {
        NewSession {
            token_hash: TokenHash::of(&tokens::new_session_token()),
            virtual_proxy: String::new(),
            user: User::new("d", "u", vec![]).unwrap(),
            created: clock.now(),
            inactivity_timeout: idle,
            absolute_expiry: clock.now() + lifetime,
        }
    }

    const CAP: SessionCap = SessionCap {
        max_per_user: 5,
        policy: CapPolicy::Refuse,
    };

    #[tokio::test]
    async fn tickets_and_targets_expire_on_the_injected_clock() {
        let (clock, store) = store();
        let hash = TokenHash::of("ticket");
        let ticket = Ticket {
            virtual_proxy: String::new(),
            user: User::new("d", "u", vec![]).unwrap(),
        };
        store.put_ticket(&hash, &ticket, MINUTE).await.unwrap();
        let target = Target {
            virtual_proxy: String::new(),
            uri: "https://h/".into(),
        };
        store.put_target("t", &target, MINUTE).await.unwrap();
        clock.advance(MINUTE - Duration::from_millis(1));
        assert!(store.get_target("t").await.unwrap().is_some());
        clock.advance(Duration::from_millis(1));
        assert_eq!(store.take_ticket(&hash, "").await.unwrap(), None);
        assert_eq!(store.get_target("t").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sessions_slide_with_activity_up_to_their_absolute_expiry() {
        let (clock, store) = store();
        let new = new_session(&clock, 10 * MINUTE, 25 * MINUTE);
        let hash = new.token_hash.clone();
        let CreateOutcome::Created { session, .. } = store.create_session(new, CAP).await.unwrap()
        else {
            panic!("not created");
        };
        clock.advance(9 * MINUTE);
        store
            .touch_session(&session.handle, clock.now())
            .await
            .unwrap()
            .unwrap();
        clock.advance(9 * MINUTE);
        assert!(
            store.session_by_token(&hash).await.unwrap().is_some(),
            "18 min in, active"
        );
        store
            .touch_session(&session.handle, clock.now())
            .await
            .unwrap()
            .unwrap();
        clock.advance(7 * MINUTE);
        assert_eq!(
            store.session_by_token(&hash).await.unwrap(),
            None,
            "25 min: absolute expiry"
        );
        assert_eq!(
            store
                .touch_session(&session.handle, clock.now())
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn expired_sessions_free_their_cap_slot_and_are_swept() {
        let (clock, store) = store();
        let cap = SessionCap {
            max_per_user: 1,
            policy: CapPolicy::Refuse,
        };
        let first = new_session(&clock, MINUTE, MINUTE);
        assert!(matches!(
            store.create_session(first, cap).await.unwrap(),
            CreateOutcome::Created { .. }
        ));
        let refused = new_session(&clock, MINUTE, MINUTE);
        assert!(matches!(
            store.create_session(refused, cap).await.unwrap(),
            CreateOutcome::CapReached
        ));
        clock.advance(MINUTE);
        let second = new_session(&clock, MINUTE, MINUTE);
        assert!(matches!(
            store.create_session(second, cap).await.unwrap(),
            CreateOutcome::Created { .. }
        ));
        clock.advance(2 * MINUTE);
        store.ping().await.unwrap();
        let (state, _) = store.state();
        assert!(state.sessions.is_empty(), "expired sessions are swept");
        assert!(
            state.handles_by_user.is_empty(),
            "and their user index with them"
        );
        assert!(state.handles_by_token.is_empty());
    }
}
