//! Sessions in Redis: creating one under the per-user cap (a script), finding, touching and
//! deleting them, the links from OpenID subjects, and what follows a deletion (token
//! pointers dropped, the revocation announced).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::Value;

use super::keys::{SessionAddress, user_tag};
use super::replies::{StoredSession, array, corrupt, field_map, stored_session, text};
use super::{RedisStore, millis};
use crate::clock::{from_millis, to_millis};
use crate::domain::{
    CapPolicy, CreateOutcome, NewSession, Page, RevocationReason, Session, SessionCap, UserKey,
};
use crate::store::{Sessions, StoreError};
use crate::tokens::{self, TokenHash};

impl RedisStore {
    async fn read_session(
        &self,
        address: &SessionAddress,
    ) -> Result<Option<StoredSession>, StoreError> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.session(address)))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        stored_session(address, &fields).map(Some)
    }

    /// After sessions were deleted: drop their token pointers and tell the data plane.
    async fn forget_deleted(&self, deleted: &[StoredSession], reason: RevocationReason) {
        if deleted.is_empty() {
            return;
        }
        // Not atomic with the deletion: the pointers and the stream live in other slots (and,
        // in a Cluster, on other nodes: one command per key, no cross-slot pipeline). If this
        // step is lost, a pointer leads nowhere (reads find no session) and nodes still drop
        // the session when their cache entry expires.
        let mut announcements = redis::pipe();
        for stored in deleted {
            announcements
                .cmd("XADD")
                .arg(self.keys.revocations())
                .arg("MAXLEN")
                .arg("~")
                .arg(self.revocations_kept)
                .arg("*")
                .arg("handle")
                .arg(&stored.session.handle)
                .arg("vp")
                .arg(&stored.session.virtual_proxy)
                .arg("reason")
                .arg(reason.as_str())
                .ignore();
        }
        let mut connection = self.connection.clone();
        let announced = self.run(announcements.query_async::<()>(&mut connection));
        let pointers_dropped = futures_util::future::try_join_all(deleted.iter().map(|stored| {
            let command = redis::cmd("DEL")
                .arg(self.keys.token_from_text(&stored.token_hash))
                .clone();
            async move { self.query::<()>(&command).await }
        }));
        let (announced, pointers_dropped) = tokio::join!(announced, pointers_dropped);
        // The sessions are gone already: the caller's operation succeeded. A lost event is
        // logged; nodes still drop those sessions when their cache entries expire.
        if let Err(error) = announced {
            tracing::error!(%error, sessions = deleted.len(), "sessions deleted but their revocation could not be announced");
        }
        if let Err(error) = pointers_dropped {
            tracing::warn!(%error, "sessions deleted but some token pointers remain until they expire");
        }
    }

    /// The id, then fields, pairs a deleting script returns, as sessions.
    fn deleted_sessions(&self, tag: &str, value: &Value) -> Result<Vec<StoredSession>, StoreError> {
        let items = array(value)?;
        items
            .chunks(2)
            .map(|pair| match pair {
                [id, fields] => stored_session(
                    &SessionAddress::new(tag.to_owned(), text(id)?),
                    &field_map(fields)?,
                ),
                _ => Err(corrupt("odd-length list of deleted sessions")),
            })
            .collect()
    }
}

#[async_trait]
#[async_trait]
impl Sessions for RedisStore {
    async fn link_session(
        &self,
        key: &TokenHash,
        handle: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.link(key);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("SADD")
            .arg(&key)
            .arg(handle)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(ttl))
            .ignore();
        let mut connection = self.connection.clone();
        self.run(pipeline.query_async::<()>(&mut connection)).await
    }

    async fn linked_sessions(&self, key: &TokenHash) -> Result<Vec<String>, StoreError> {
        self.query(redis::cmd("SMEMBERS").arg(self.keys.link(key)))
            .await
    }

    async fn create_session(
        &self,
        new: NewSession,
        cap: SessionCap,
    ) -> Result<CreateOutcome, StoreError> {
        let now = to_millis(new.created);
        let absolute = to_millis(new.absolute_expiry);
        let ttl = to_millis(new.created + new.inactivity_timeout)
            .min(absolute)
            .saturating_sub(now)
            .max(1);
        let tag = user_tag(&new.virtual_proxy, &new.user.key());
        let address = SessionAddress::new(tag.clone(), tokens::new_id());
        let handle = address.handle();
        let token_key = self.keys.token(&new.token_hash);

        // Claim the token first, so two sessions can never share one. The pointer lives exactly
        // as long as the session (activity extends both), so a claim that fails means a live
        // session, or one being created right now, holds the token.
        let claimed: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(&token_key)
                    .arg(&handle)
                    .arg("PX")
                    .arg(ttl)
                    .arg("NX"),
            )
            .await?;
        if claimed.is_none() {
            return Ok(CreateOutcome::TokenInUse);
        }

        let user = serde_json::to_string(&new.user).map_err(|error| corrupt(&error.to_string()))?;
        let policy = match cap.policy {
            CapPolicy::Refuse => "refuse",
            CapPolicy::EvictOldest => "evict",
        };
        let mut invocation = self.scripts.create_session.key(self.keys.user_index(&tag));
        invocation
            .key(self.keys.session(&address))
            .arg(cap.max_per_user)
            .arg(policy)
            .arg(now)
            .arg(&address.id)
            .arg(self.keys.session_prefix(&tag))
            .arg(ttl)
            .arg(absolute)
            .arg("vp")
            .arg(&new.virtual_proxy)
            .arg("user")
            .arg(user)
            .arg("th")
            .arg(new.token_hash.to_text())
            .arg("created")
            .arg(now)
            .arg("last")
            .arg(now)
            .arg("idle")
            .arg(millis(new.inactivity_timeout))
            .arg("abs")
            .arg(absolute)
            .arg("addr")
            .arg(&new.client.address)
            .arg("ua")
            .arg(&new.client.user_agent);
        let mut connection = self.connection.clone();
        let outcome: Value = match self.run(invocation.invoke_async(&mut connection)).await {
            Ok(outcome) => outcome,
            Err(error) => {
                // Best effort: a pointer to a session that was never written leads nowhere
                // and expires; removing it now frees a caller-chosen token for a retry.
                let _ = self.query::<()>(redis::cmd("DEL").arg(&token_key)).await;
                return Err(error);
            }
        };
        let outcome = array(&outcome)?;
        match outcome.first().map(text).transpose()?.as_deref() {
            Some("cap") => {
                self.query::<()>(redis::cmd("DEL").arg(&token_key)).await?;
                Ok(CreateOutcome::CapReached)
            }
            Some("ok") => {
                let evicted = match outcome.get(1) {
                    Some(list) => self.deleted_sessions(&tag, list)?,
                    None => Vec::new(),
                };
                self.forget_deleted(&evicted, RevocationReason::Evicted)
                    .await;
                Ok(CreateOutcome::Created {
                    session: Session {
                        handle,
                        virtual_proxy: new.virtual_proxy,
                        user: new.user,
                        created: from_millis(now),
                        last_active: from_millis(now),
                        inactivity_timeout: new.inactivity_timeout,
                        absolute_expiry: from_millis(absolute),
                        client: new.client,
                    },
                    evicted: evicted.into_iter().map(|stored| stored.session).collect(),
                })
            }
            _ => Err(corrupt("unexpected answer from the create-session script")),
        }
    }

    async fn session_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let handle: Option<String> = self
            .query(redis::cmd("GET").arg(self.keys.token(hash)))
            .await?;
        let Some(address) = handle.as_deref().and_then(SessionAddress::from_handle) else {
            return Ok(None);
        };
        // The token hash must match too: the pointer is not atomic with the session.
        Ok(self
            .read_session(&address)
            .await?
            .filter(|stored| stored.token_hash == hash.to_text())
            .map(|stored| stored.session))
    }

    async fn session_by_handle(&self, handle: &str) -> Result<Option<Session>, StoreError> {
        let Some(address) = SessionAddress::from_handle(handle) else {
            return Ok(None);
        };
        Ok(self
            .read_session(&address)
            .await?
            .map(|stored| stored.session))
    }

    async fn touch_session(
        &self,
        handle: &str,
        at: SystemTime,
    ) -> Result<Option<Session>, StoreError> {
        let Some(address) = SessionAddress::from_handle(handle) else {
            return Ok(None);
        };
        let mut connection = self.connection.clone();
        let touched: Value = self
            .run(
                self.scripts
                    .touch_session
                    .key(self.keys.session(&address))
                    .arg(to_millis(at))
                    .arg(to_millis(SystemTime::now()))
                    .invoke_async(&mut connection),
            )
            .await?;
        let [ttl, fields] = array(&touched)? else {
            return Ok(None);
        };
        let stored = stored_session(&address, &field_map(fields)?)?;
        // The token's pointer must live as long as the session (another slot: not atomic; a
        // pointer that expires early only logs the session out sooner).
        self.query::<()>(
            redis::cmd("PEXPIRE")
                .arg(self.keys.token_from_text(&stored.token_hash))
                .arg(text(ttl)?),
        )
        .await?;
        Ok(Some(stored.session))
    }

    async fn delete_session(
        &self,
        handle: &str,
        reason: RevocationReason,
    ) -> Result<Option<Session>, StoreError> {
        let Some(address) = SessionAddress::from_handle(handle) else {
            return Ok(None);
        };
        let mut connection = self.connection.clone();
        let fields: Value = self
            .run(
                self.scripts
                    .delete_session
                    .key(self.keys.session(&address))
                    .key(self.keys.user_index(&address.tag))
                    .arg(&address.id)
                    .invoke_async(&mut connection),
            )
            .await?;
        if fields == Value::Nil {
            return Ok(None);
        }
        let stored = stored_session(&address, &field_map(&fields)?)?;
        self.forget_deleted(std::slice::from_ref(&stored), reason)
            .await;
        Ok(Some(stored.session))
    }

    async fn user_sessions(
        &self,
        virtual_proxy: &str,
        user: &UserKey,
    ) -> Result<Vec<Session>, StoreError> {
        let tag = user_tag(virtual_proxy, user);
        let ids: Vec<String> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys.user_index(&tag))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        let addresses: Vec<SessionAddress> = ids
            .into_iter()
            .map(|id| SessionAddress::new(tag.clone(), id))
            .collect();
        let sessions = self.read_sessions(&addresses).await?;
        Ok(sessions.into_iter().map(|stored| stored.session).collect())
    }

    async fn delete_user_sessions(
        &self,
        virtual_proxy: &str,
        user: &UserKey,
        reason: RevocationReason,
    ) -> Result<Vec<Session>, StoreError> {
        let tag = user_tag(virtual_proxy, user);
        let mut connection = self.connection.clone();
        let deleted: Value = self
            .run(
                self.scripts
                    .delete_user_sessions
                    .key(self.keys.user_index(&tag))
                    .arg(self.keys.session_prefix(&tag))
                    .invoke_async(&mut connection),
            )
            .await?;
        let deleted = self.deleted_sessions(&tag, &deleted)?;
        self.forget_deleted(&deleted, reason).await;
        Ok(deleted.into_iter().map(|stored| stored.session).collect())
    }

    async fn list_sessions(
        &self,
        virtual_proxy: Option<&str>,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page, StoreError> {
        self.list_page(virtual_proxy, page_size, page_token).await
    }
}
