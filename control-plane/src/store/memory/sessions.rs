//! Sessions in memory: the indexes by token and by user, the per-user cap, listing in
//! handle order, and ending a session (which records its revocation).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::revocations::cursor_of;
use super::{MemoryStore, State};
use crate::domain::{
    CapPolicy, CreateOutcome, NewSession, Page, Revocation, RevocationReason, Session, SessionCap,
    UserKey,
};
use crate::store::{MAX_PAGE_SIZE, Sessions, StoreError};
use crate::tokens::{self, TokenHash};

/// (virtual proxy, case-folded directory, case-folded id).
pub(super) type UserIndex = (String, (String, String));

fn user_index(virtual_proxy: &str, user: &UserKey) -> UserIndex {
    (virtual_proxy.to_owned(), user.normalized())
}

#[derive(Debug, Clone)]
pub(super) struct StoredSession {
    pub(super) session: Session,
    pub(super) token_hash: TokenHash,
}

impl MemoryStore {
    /// Ends a session, records the revocation and wakes whoever follows revocations.
    fn revoke(&self, state: &mut State, handle: &str, reason: RevocationReason) -> Option<Session> {
        let session = state.revoke(handle, reason, self.revocations_kept);
        self.revoked.notify_waiters();
        session
    }
}

impl State {
    fn live(&self, handle: &str, now: SystemTime) -> Option<&StoredSession> {
        self.sessions
            .get(handle)
            .filter(|stored| !stored.session.is_expired(now))
    }

    /// Removes a session without telling anyone (it expired, or the caller records why).
    pub(super) fn forget(&mut self, handle: &str) -> Option<StoredSession> {
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
        self.announce(
            Revocation {
                cursor: String::new(),
                handle: handle.to_owned(),
                virtual_proxy: stored.session.virtual_proxy.clone(),
                reason,
            },
            kept,
        );
        Some(stored.session)
    }

    /// Appends `event` to the log (its cursor is given here), keeping the newest `kept`.
    pub(super) fn announce(&mut self, mut event: Revocation, kept: usize) {
        let sequence = self.next_revocation;
        self.next_revocation += 1;
        event.cursor = cursor_of(sequence);
        self.revocations.push_back((sequence, event));
        while self.revocations.len() > kept {
            if let Some((trimmed, _)) = self.revocations.pop_front() {
                self.last_trimmed = trimmed;
            }
        }
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
            client: new.client,
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
