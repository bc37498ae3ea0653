//! The Redis store, shared by every control-plane replica. The schema is in `redis_keys`,
//! the atomic operations in `redis_scripts`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::redis_connection::{Purpose, RedisConnection, Settings, connection_lost};
use super::redis_keys::{Keys, SessionAddress, user_tag};
use super::redis_scripts as scripts;
use super::{MAX_PAGE_SIZE, OneTimeRecords, RevocationLog, Sessions, Store, StoreError};
use crate::clock::{from_millis, to_millis};
use crate::config::StoreConfig;
use crate::domain::{
    CapPolicy, CreateOutcome, NewSession, OidcLogin, Page, Revocation, RevocationReason,
    Revocations, Session, SessionCap, Target, Ticket, User, UserKey,
};
use crate::tokens::{self, TokenHash};

/// How many SCAN calls one listing page may make before it returns what it has.
const MAX_SCANS_PER_PAGE: usize = 64;

#[derive(Debug)]
struct Scripts {
    take_ticket: Script,
    create_session: Script,
    touch_session: Script,
    delete_session: Script,
    delete_user_sessions: Script,
}

#[derive(Debug)]
pub struct RedisStore {
    connection: RedisConnection,
    /// For XREAD BLOCK only: a blocked command holds up everything behind it on its
    /// connection, so it gets a connection of its own.
    blocking: RedisConnection,
    keys: Keys,
    revocations_kept: u64,
    /// Upper bound on any one operation, reconnection included: a caller hears
    /// `Unavailable` in bounded time, never a hang.
    deadline: Duration,
    scripts: Scripts,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A session as read from Redis, with the hash of its token (to remove the token's pointer).
struct StoredSession {
    session: Session,
    token_hash: String,
}

impl RedisStore {
    /// Connects lazily: the control plane starts (and answers `UNAVAILABLE`) while Redis is
    /// down, and reconnects on its own when Redis returns.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let settings = Settings::read(config)?;
        Ok(Self {
            connection: RedisConnection::new(config, &settings, Purpose::Commands)?,
            blocking: RedisConnection::new(config, &settings, Purpose::Blocking)?,
            keys: Keys::new(&config.key_prefix),
            revocations_kept: config.revocation_stream_max_len.max(1),
            deadline: config.connect_timeout + config.response_timeout,
            metrics: None,
            scripts: Scripts {
                take_ticket: Script::new(scripts::TAKE_TICKET),
                create_session: Script::new(scripts::CREATE_SESSION),
                touch_session: Script::new(scripts::TOUCH_SESSION),
                delete_session: Script::new(scripts::DELETE_SESSION),
                delete_user_sessions: Script::new(scripts::DELETE_USER_SESSIONS),
            },
        })
    }

    /// Records every exchange's latency and errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one Redis exchange under the operation deadline.
    async fn run<T, F>(&self, exchange: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.deadline, exchange).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from Redis within {:?}",
                self.deadline
            ))),
        };
        if let Some(metrics) = &self.metrics {
            let error = result.as_ref().err().map(|error| match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Rejected(_) => "rejected",
                _ => "corrupt",
            });
            metrics.store_exchange(started.elapsed().as_secs_f64(), error);
        }
        result
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        self.run(command.query_async(&mut connection)).await
    }

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
impl OneTimeRecords for RedisStore {
    async fn put_ticket(
        &self,
        hash: &TokenHash,
        ticket: &Ticket,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.ticket(hash);
        let record =
            serde_json::to_string(&ticket.user).map_err(|error| corrupt(&error.to_string()))?;
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("vp")
            .arg(&ticket.virtual_proxy)
            .arg("rec")
            .arg(record)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(ttl))
            .ignore();
        let mut connection = self.connection.clone();
        self.run(pipeline.query_async::<()>(&mut connection)).await
    }

    async fn take_ticket(
        &self,
        hash: &TokenHash,
        virtual_proxy: &str,
    ) -> Result<Option<Ticket>, StoreError> {
        let mut connection = self.connection.clone();
        let record: Option<String> = self
            .run(
                self.scripts
                    .take_ticket
                    .key(self.keys.ticket(hash))
                    .arg(virtual_proxy)
                    .invoke_async(&mut connection),
            )
            .await?;
        record
            .map(|record| {
                let user: User =
                    serde_json::from_str(&record).map_err(|_| corrupt("ticket record"))?;
                Ok(Ticket {
                    virtual_proxy: virtual_proxy.to_owned(),
                    user,
                })
            })
            .transpose()
    }

    async fn put_target(&self, id: &str, target: &Target, ttl: Duration) -> Result<(), StoreError> {
        let record = serde_json::to_string(target).map_err(|error| corrupt(&error.to_string()))?;
        self.query(
            redis::cmd("SET")
                .arg(self.keys.target(id))
                .arg(record)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn get_target(&self, id: &str) -> Result<Option<Target>, StoreError> {
        let record: Option<String> = self
            .query(redis::cmd("GET").arg(self.keys.target(id)))
            .await?;
        record
            .map(|record| serde_json::from_str(&record).map_err(|_| corrupt("target record")))
            .transpose()
    }

    async fn remember_jwt(&self, hash: &TokenHash, ttl: Duration) -> Result<(), StoreError> {
        self.query(
            redis::cmd("SET")
                .arg(self.keys.jwt(hash))
                .arg("1")
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn jwt_remembered(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let found: i64 = self
            .query(redis::cmd("EXISTS").arg(self.keys.jwt(hash)))
            .await?;
        Ok(found > 0)
    }

    async fn first_use(&self, hash: &TokenHash, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.keys.used(hash))
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn put_oidc_login(
        &self,
        state_hash: &TokenHash,
        login: &OidcLogin,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let record = serde_json::to_string(login).map_err(|error| corrupt(&error.to_string()))?;
        self.query(
            redis::cmd("SET")
                .arg(self.keys.oidc_login(state_hash))
                .arg(record)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn take_oidc_login(
        &self,
        state_hash: &TokenHash,
    ) -> Result<Option<OidcLogin>, StoreError> {
        let record: Option<String> = self
            .query(redis::cmd("GETDEL").arg(self.keys.oidc_login(state_hash)))
            .await?;
        record
            .map(|record| serde_json::from_str(&record).map_err(|_| corrupt("OpenID login record")))
            .transpose()
    }
}

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
            .arg(absolute);
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
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        // A Cluster's keys are spread over its masters: the listing scans them one after the
        // other. Elsewhere one SCAN sees every key.
        let mut connection = self.connection.clone();
        let masters = self.run(connection.masters()).await?;
        let mut position = ListPosition::parse(page_token)?;
        if page_token.is_empty()
            && let Some(&first) = masters.first()
        {
            position.slot = first;
        }
        if !masters.is_empty() && !masters.contains(&position.slot) {
            // Not a master this listing scans (or the cluster was resharded meanwhile).
            return Err(StoreError::InvalidPageToken);
        }
        let mut sessions = Vec::new();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let mut scan = redis::cmd("SCAN");
            scan.arg(position.cursor)
                .arg("MATCH")
                .arg(self.keys.session_pattern())
                .arg("COUNT")
                .arg(page_size.max(100));
            let master = (!masters.is_empty()).then_some(position.slot);
            let (next, keys): (u64, Vec<String>) =
                self.run(connection.query_on(master, &scan)).await?;
            let found: Vec<(usize, SessionAddress)> = keys
                .iter()
                .enumerate()
                .skip(position.skip)
                .filter_map(|(offset, key)| Some((offset, self.keys.address_of(key)?)))
                .collect();
            let read = self
                .read_sessions_aligned(found.iter().map(|(_, address)| address))
                .await?;
            for ((offset, _), stored) in found.iter().zip(read) {
                let Some(stored) = stored else { continue };
                if virtual_proxy.is_some_and(|vp| stored.session.virtual_proxy != vp) {
                    continue;
                }
                sessions.push(stored.session);
                if sessions.len() == page_size {
                    let consumed = offset + 1;
                    let resume = if consumed < keys.len() {
                        Some(ListPosition {
                            skip: consumed,
                            ..position
                        })
                    } else {
                        position.after_batch(next, &masters)
                    };
                    return Ok(Page {
                        sessions,
                        next_page_token: resume.map(|p| p.token()).unwrap_or_default(),
                    });
                }
            }
            match position.after_batch(next, &masters) {
                Some(next_position) => position = next_position,
                None => {
                    return Ok(Page {
                        sessions,
                        next_page_token: String::new(),
                    });
                }
            }
        }
        Ok(Page {
            sessions,
            next_page_token: position.token(),
        })
    }
}

#[async_trait]
impl RevocationLog for RedisStore {
    async fn revocations_after(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Revocations, StoreError> {
        let start = match cursor {
            Some(cursor) => {
                parse_stream_id(cursor).ok_or(StoreError::InvalidCursor)?;
                format!("({cursor}")
            }
            None => "-".to_owned(),
        };
        let entries: Value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(self.keys.revocations())
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1)),
            )
            .await?;
        let mut events = Vec::new();
        for entry in array(&entries)? {
            let [id, fields] = array(entry)? else {
                return Err(corrupt("revocation entry"));
            };
            let fields = field_map(fields)?;
            let field = |name: &str| {
                fields
                    .get(name)
                    .cloned()
                    .ok_or_else(|| corrupt("revocation entry"))
            };
            events.push(Revocation {
                cursor: text(id)?,
                handle: field("handle")?,
                virtual_proxy: field("vp")?,
                reason: RevocationReason::parse(&field("reason")?)
                    .ok_or_else(|| corrupt("revocation reason"))?,
            });
        }
        // Only trimming removes entries, oldest first. If the stream no longer holds the
        // cursor's own entry, entries after it may have gone too: report that, at the cost of
        // a needless cache flush when exactly the cursor's entry was the last one trimmed.
        // The cursor 0-0 ("from the start", given to nodes that connected before the first
        // event) has no entry of its own: anything trimmed at all was missed.
        let trimmed = match cursor.and_then(parse_stream_id) {
            Some((0, 0)) => self.ever_trimmed().await?,
            Some(position) => self
                .oldest_revocation()
                .await?
                .is_some_and(|oldest| oldest > position),
            None => false,
        };
        Ok(Revocations { events, trimmed })
    }

    async fn revocation_head(&self) -> Result<Option<String>, StoreError> {
        let newest: Value = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(self.keys.revocations())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        match array(&newest)?.first() {
            Some(entry) => {
                let id = array(entry)?
                    .first()
                    .ok_or_else(|| corrupt("revocation entry"))?;
                Ok(Some(text(id)?))
            }
            None => Ok(None),
        }
    }

    async fn wait_for_revocations(
        &self,
        cursor: Option<&str>,
        wait: Duration,
    ) -> Result<Revocations, StoreError> {
        let revocations = self
            .revocations_after(cursor, super::REVOCATION_BATCH)
            .await?;
        if !revocations.events.is_empty() || revocations.trimmed {
            return Ok(revocations);
        }
        let wait = wait.min(super::MAX_BLOCK);
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(millis(wait).max(1))
            .arg("STREAMS")
            .arg(self.keys.revocations())
            .arg(cursor.unwrap_or("0-0"));
        let mut connection = self.blocking.clone();
        match tokio::time::timeout(
            wait + self.deadline,
            command.query_async::<Value>(&mut connection),
        )
        .await
        {
            Ok(result) => drop(result.map_err(classify)?),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "no answer from Redis to XREAD".to_owned(),
                ));
            }
        }
        self.revocations_after(cursor, super::REVOCATION_BATCH)
            .await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        self.run(connection.ping()).await
    }
}

impl RedisStore {
    /// Reads several sessions in one round trip, skipping those that no longer exist.
    async fn read_sessions(
        &self,
        addresses: &[SessionAddress],
    ) -> Result<Vec<StoredSession>, StoreError> {
        Ok(self
            .read_sessions_aligned(addresses.iter())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Reads several sessions in one round trip; `None` where a session no longer exists.
    async fn read_sessions_aligned<'a>(
        &self,
        addresses: impl ExactSizeIterator<Item = &'a SessionAddress> + Clone,
    ) -> Result<Vec<Option<StoredSession>>, StoreError> {
        if addresses.len() == 0 {
            return Ok(Vec::new());
        }
        // One command per session, not a pipeline: the sessions may live in other slots (other
        // Cluster nodes). On one connection the commands still travel together.
        let all: Vec<HashMap<String, String>> =
            futures_util::future::try_join_all(addresses.clone().map(|address| {
                let command = redis::cmd("HGETALL")
                    .arg(self.keys.session(address))
                    .clone();
                async move { self.query::<HashMap<String, String>>(&command).await }
            }))
            .await?;
        addresses
            .zip(all)
            .map(|(address, fields)| {
                if fields.is_empty() {
                    Ok(None)
                } else {
                    stored_session(address, &fields).map(Some)
                }
            })
            .collect()
    }

    /// Whether the stream has ever dropped an entry (Redis 7: more entries added than held).
    async fn ever_trimmed(&self) -> Result<bool, StoreError> {
        let info: Value = match self
            .query(
                redis::cmd("XINFO")
                    .arg("STREAM")
                    .arg(self.keys.revocations()),
            )
            .await
        {
            Ok(info) => info,
            // No stream yet: nothing was ever trimmed.
            Err(StoreError::Rejected(_)) => return Ok(false),
            Err(error) => return Err(error),
        };
        let info = field_values(&info)?;
        let number = |name: &str| {
            info.get(name)
                .and_then(|value| text(value).ok())
                .and_then(|value| value.parse::<u64>().ok())
        };
        Ok(match (number("entries-added"), number("length")) {
            (Some(added), Some(length)) => added > length,
            _ => false,
        })
    }

    /// Id of the oldest revocation still in the stream.
    async fn oldest_revocation(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let first: Value = self
            .query(
                redis::cmd("XRANGE")
                    .arg(self.keys.revocations())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        match array(&first)?.first() {
            Some(entry) => {
                let id = array(entry)?
                    .first()
                    .ok_or_else(|| corrupt("revocation entry"))?;
                Ok(parse_stream_id(&text(id)?))
            }
            None => Ok(None),
        }
    }
}

/// Where a listing resumes: which Cluster master (named by its lowest slot; always 0
/// elsewhere), its SCAN cursor, and how many keys of that cursor's batch were already
/// returned. Opaque to clients.
#[derive(Debug, Clone, Copy)]
struct ListPosition {
    slot: u16,
    cursor: u64,
    skip: usize,
}

impl ListPosition {
    fn parse(token: &str) -> Result<Self, StoreError> {
        if token.is_empty() {
            return Ok(Self {
                slot: 0,
                cursor: 0,
                skip: 0,
            });
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(StoreError::InvalidPageToken)?;
        let numbers = decoded
            .split(':')
            .map(|part| {
                part.parse::<u64>()
                    .map_err(|_| StoreError::InvalidPageToken)
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let (slot, cursor, skip) = match numbers[..] {
            [slot, cursor, skip] => (slot, cursor, skip),
            // Tokens of the single-server listing before Cluster support: `cursor:skip`.
            [cursor, skip] => (0, cursor, skip),
            _ => return Err(StoreError::InvalidPageToken),
        };
        Ok(Self {
            slot: u16::try_from(slot).map_err(|_| StoreError::InvalidPageToken)?,
            cursor,
            skip: usize::try_from(skip).map_err(|_| StoreError::InvalidPageToken)?,
        })
    }

    /// Where to go once this position's whole batch was read and SCAN answered `next`: on in
    /// this master, on to the next of `masters` (ascending; empty outside a Cluster), or
    /// nowhere (the listing is complete).
    fn after_batch(self, next: u64, masters: &[u16]) -> Option<Self> {
        if next != 0 {
            return Some(Self {
                cursor: next,
                skip: 0,
                ..self
            });
        }
        masters
            .iter()
            .find(|&&slot| slot > self.slot)
            .map(|&slot| Self {
                slot,
                cursor: 0,
                skip: 0,
            })
    }

    fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", self.slot, self.cursor, self.skip))
    }
}

fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (millis, sequence) = id.split_once('-')?;
    Some((millis.parse().ok()?, sequence.parse().ok()?))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn stored_session(
    address: &SessionAddress,
    fields: &HashMap<String, String>,
) -> Result<StoredSession, StoreError> {
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| corrupt(&format!("session without {name}")))
    };
    let number = |name: &str| {
        field(name)?
            .parse::<u64>()
            .map_err(|_| corrupt(&format!("session {name} is not a number")))
    };
    let user: User = serde_json::from_str(field("user")?).map_err(|_| corrupt("session user"))?;
    Ok(StoredSession {
        session: Session {
            handle: address.handle(),
            virtual_proxy: field("vp")?.clone(),
            user,
            created: from_millis(number("created")?),
            last_active: from_millis(number("last")?),
            inactivity_timeout: Duration::from_millis(number("idle")?),
            absolute_expiry: from_millis(number("abs")?),
        },
        token_hash: field("th")?.clone(),
    })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn array(value: &Value) -> Result<&[Value], StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        _ => Err(corrupt("expected a list from Redis")),
    }
}

fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| corrupt("non-UTF-8 text"))
        }
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(number) => Ok(number.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        _ => Err(corrupt("expected text from Redis")),
    }
}

/// A flat name/value list (RESP2) or a map (RESP3), with values kept as they are.
fn field_values(value: &Value) -> Result<HashMap<String, &Value>, StoreError> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(name, value)| Ok((text(name)?, value)))
            .collect(),
        other => array(other)?
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => Ok((text(name)?, value)),
                _ => Err(corrupt("odd-length field list")),
            })
            .collect(),
    }
}

fn field_map(value: &Value) -> Result<HashMap<String, String>, StoreError> {
    field_values(value)?
        .into_iter()
        .map(|(name, value)| Ok((name, text(value)?)))
        .collect()
}

/// Connection trouble is `Unavailable` (the caller may retry); anything else Redis answered
/// is `Rejected`.
fn classify(error: RedisError) -> StoreError {
    let unavailable = connection_lost(&error)
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    // Redirections left over once the client's retries ran out: a slot is
                    // moving, so try again later.
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::AuthenticationFailed
                // No sentinel could name a reachable master: a failover is under way.
                | ErrorKind::MasterNameNotFoundBySentinel
        );
    if unavailable {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Rejected(error.to_string())
    }
}
