//! Sessions: creating one under the virtual proxy's cap, finding it by token or handle,
//! listing, validating for a node's cache miss, recording activity and ending sessions.

use std::time::SystemTime;

use super::Authority;
use crate::audit::{Actor, AdminCall, AuditEvent};
use crate::domain::{
    ClientInfo, CreateOutcome, NewSession, Page, RevocationReason, Session, SessionCap, User,
    UserKey,
};
use crate::error::{Error, StoreError};
use crate::outage::Verdict;
use crate::store::MAX_PAGE_SIZE;
use crate::tokens::{self, TokenHash};

/// Page size when the caller asks for none.
const DEFAULT_PAGE_SIZE: usize = 100;

/// A session just created. Its token exists only here and in the answer to the caller.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: String,
    pub session: Session,
    pub evicted: Vec<Session>,
}

/// A session a node asked about, with what to tell the browser.
#[derive(Debug, Clone)]
pub struct CheckedSession {
    pub session: Session,
    /// A new seal for the browser; `None` to keep the one it has.
    pub seal: Option<String>,
    /// Served from its seal while the store is down: valid no longer than this.
    pub outage_until: Option<SystemTime>,
}

/// How a caller names a session.
#[derive(Debug, Clone)]
pub enum SessionSelector {
    Token(String),
    Handle(String),
    /// An id given where QPS takes one (`/qps/{prefix}/session/{id}`): QPS clients send the
    /// cookie value, Gatehouse listings show the handle, and the two cannot be told apart by
    /// their form, so the token is tried first, then the handle. Both are random; one
    /// cannot be mistaken for the other.
    TokenOrHandle(String),
}

impl Authority {
    /// Creates a session for a trusted caller, with a caller-chosen token if it is random
    /// enough (the caller then sets the cookie itself). Audited as made `by` that caller.
    pub async fn create_session(
        &self,
        virtual_proxy: &str,
        user: User,
        token: Option<String>,
        by: &AdminCall,
    ) -> Result<IssuedSession, Error> {
        self.virtual_proxies().get(virtual_proxy)?;
        let (token, chosen) = match token {
            Some(token) => {
                tokens::check_caller_token(&token)?;
                let digest = gatehouse_runtime::unknown_token::digest(virtual_proxy, &token);
                (token, Some(gatehouse_runtime::unknown_token::hex(&digest)))
            }
            None => (tokens::new_session_token(), None),
        };
        // The caller, not the browser, is who asks here: nothing to record of where from.
        let issued = self
            .start_session(virtual_proxy, user, token, ClientInfo::default())
            .await?;
        // A browser may have sent a chosen token before its session existed (a token used
        // again for a new session, say), and a node may hold it as unknown for a few seconds:
        // tell the nodes. A minted token no client can have sent before.
        if let Some(digest) = chosen
            && let Err(error) = self.store.announce_created(virtual_proxy, &digest).await
        {
            // The session exists; nodes that held its token as unknown accept it once their
            // entry lapses (`flood.negative_ttl`).
            tracing::warn!(%error, "session created, but nodes could not be told of its chosen token");
        }
        self.audit(&AuditEvent::SessionCreated {
            session: &issued.session,
            by,
        });
        Ok(issued)
    }

    /// Starts a session, recording `client` (where the login came from) on it.
    pub(super) async fn start_session(
        &self,
        virtual_proxy: &str,
        user: User,
        token: String,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        self.start_session_until(virtual_proxy, user, token, None, client)
            .await
    }

    /// As `start_session`, ending at `until` at the latest.
    pub(super) async fn start_session_until(
        &self,
        virtual_proxy: &str,
        user: User,
        token: String,
        until: Option<SystemTime>,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        let proxies = self.virtual_proxies();
        let proxy = proxies.get(virtual_proxy)?;
        let now = self.clock.now();
        let new = NewSession {
            token_hash: TokenHash::of(&token),
            virtual_proxy: virtual_proxy.to_owned(),
            user,
            created: now,
            inactivity_timeout: proxy.inactivity_timeout,
            absolute_expiry: until.map_or(now + proxy.max_lifetime, |until| {
                until.min(now + proxy.max_lifetime)
            }),
            client,
        };
        let cap = SessionCap {
            max_per_user: proxy.max_sessions_per_user,
            policy: proxy.session_cap_policy,
        };
        match self.store.create_session(new, cap).await? {
            CreateOutcome::Created { session, evicted } => {
                for ended in &evicted {
                    self.audit(&AuditEvent::SessionRevoked {
                        session: ended,
                        actor: Actor::Eviction,
                        reason: RevocationReason::Evicted,
                    });
                }
                Ok(IssuedSession {
                    token,
                    session,
                    evicted,
                })
            }
            CreateOutcome::CapReached => Err(Error::SessionCapReached(proxy.max_sessions_per_user)),
            CreateOutcome::TokenInUse => Err(Error::AlreadyExists(
                "a session with this token exists already",
            )),
        }
    }

    /// The session named, in `virtual_proxy` when one is given (a session of another one is
    /// not found, so a caller scoped to one proxy learns nothing of the others).
    pub async fn get_session(
        &self,
        selector: &SessionSelector,
        virtual_proxy: Option<&str>,
    ) -> Result<Session, Error> {
        if let Some(prefix) = virtual_proxy {
            self.virtual_proxies().get(prefix)?;
        }
        self.find(selector)
            .await?
            .filter(|session| virtual_proxy.is_none_or(|prefix| prefix == session.virtual_proxy))
            .ok_or_else(|| Error::NotFound("no such session".into()))
    }

    /// Ends a session; nodes hear of it on the revocation stream and close its WebSockets.
    /// Audited as ended `by` that administrator.
    pub async fn delete_session(
        &self,
        selector: &SessionSelector,
        virtual_proxy: Option<&str>,
        by: &AdminCall,
    ) -> Result<Session, Error> {
        let session = self.get_session(selector, virtual_proxy).await?;
        let ended = self
            .store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await?
            .ok_or_else(|| Error::NotFound("no such session".into()))?;
        self.audit_revoked_by_admin(&ended, by, RevocationReason::Deleted);
        Ok(ended)
    }

    fn audit_revoked_by_admin(&self, session: &Session, by: &AdminCall, reason: RevocationReason) {
        self.audit(&AuditEvent::SessionRevoked {
            session,
            actor: Actor::Admin(by.name.clone()),
            reason,
        });
    }

    pub async fn list_user_sessions(
        &self,
        user: &UserKey,
        virtual_proxy: Option<&str>,
    ) -> Result<Vec<Session>, Error> {
        let mut sessions = Vec::new();
        for prefix in self.virtual_proxies().select(virtual_proxy)? {
            sessions.extend(self.store.user_sessions(prefix, user).await?);
        }
        Ok(sessions)
    }

    /// Logs a user out of one virtual proxy, or of all of them; each session ended is
    /// audited as ended `by` that administrator.
    pub async fn delete_user_sessions(
        &self,
        user: &UserKey,
        virtual_proxy: Option<&str>,
        by: &AdminCall,
    ) -> Result<Vec<Session>, Error> {
        let mut sessions = Vec::new();
        for prefix in self.virtual_proxies().select(virtual_proxy)? {
            let ended = self
                .store
                .delete_user_sessions(prefix, user, RevocationReason::UserLoggedOut)
                .await?;
            for session in &ended {
                self.audit_revoked_by_admin(session, by, RevocationReason::UserLoggedOut);
            }
            sessions.extend(ended);
        }
        Ok(sessions)
    }

    pub async fn list_sessions(
        &self,
        virtual_proxy: Option<&str>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page, Error> {
        if let Some(prefix) = virtual_proxy {
            self.virtual_proxies().get(prefix)?;
        }
        let page_size = match usize::try_from(page_size).unwrap_or(usize::MAX) {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(Error::invalid(format!(
                    "page_size must be at most {MAX_PAGE_SIZE}"
                )));
            }
            size => size,
        };
        Ok(self
            .store
            .list_sessions(virtual_proxy, page_size, page_token)
            .await?)
    }

    /// A data-plane node's cache miss: the live session of this token in this virtual proxy.
    pub async fn validate_session(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Session, Error> {
        self.virtual_proxies().get(virtual_proxy)?;
        if token.is_empty() || token.len() > tokens::MAX_CALLER_TOKEN_LEN {
            return Err(Error::NotFound("no such session".into()));
        }
        self.find(&SessionSelector::Token(token.to_owned()))
            .await?
            .filter(|session| session.virtual_proxy == virtual_proxy)
            .ok_or_else(|| Error::NotFound("no such session".into()))
    }

    /// A node's cache miss, with the browser's seal: the session from the store (and a new
    /// seal when the one presented is due for renewal), or, while the store cannot be
    /// reached, from the seal if it still vouches for it.
    /// `renew`: the node passes a new seal on to the browser (else none is made).
    pub async fn check_session(
        &self,
        virtual_proxy: &str,
        token: &str,
        seal: &str,
        renew: bool,
    ) -> Result<CheckedSession, Error> {
        let Some(fallback) = &self.outage else {
            let session = self.validate_session(virtual_proxy, token).await?;
            return Ok(CheckedSession {
                session,
                seal: None,
                outage_until: None,
            });
        };
        // While the store fails, most checks answer from the seal at once instead of each
        // waiting for the store's timeout; one in a while still tries it.
        let answer = if fallback.should_ask_store() {
            self.validate_session(virtual_proxy, token).await
        } else {
            self.virtual_proxies().get(virtual_proxy)?;
            Err(StoreError::Unavailable("the store is failing".to_owned()).into())
        };
        match answer {
            Ok(session) => {
                fallback.store_reachable();
                Ok(CheckedSession {
                    seal: renew
                        .then(|| fallback.renewal(token, &session, seal))
                        .flatten(),
                    session,
                    outage_until: None,
                })
            }
            Err(Error::Store(StoreError::Unavailable(detail))) => {
                fallback.store_unreachable();
                if seal.is_empty() {
                    return Err(StoreError::Unavailable(detail).into());
                }
                match fallback.admit(token, virtual_proxy, seal) {
                    Verdict::Admitted { session, until } => Ok(CheckedSession {
                        session,
                        seal: None,
                        outage_until: Some(until),
                    }),
                    Verdict::Ended(reason) => {
                        tracing::debug!(reason, "sealed session refused during a store outage");
                        Err(Error::NotFound("no such session".into()))
                    }
                    Verdict::Unknown(reason) => {
                        tracing::debug!(reason, "sealed session cannot be vouched for");
                        Err(StoreError::Unavailable(detail).into())
                    }
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The seal for a session just created, for its cookie; empty when sealing is off.
    pub fn seal_for(&self, issued: &IssuedSession) -> String {
        self.outage
            .as_ref()
            .and_then(|fallback| fallback.seal(&issued.token, &issued.session))
            .unwrap_or_default()
    }

    pub(super) async fn live_session(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<Session>, Error> {
        Ok(self
            .find(&SessionSelector::Token(token.to_owned()))
            .await?
            .filter(|session| session.virtual_proxy == virtual_proxy))
    }

    /// Records activity nodes saw; returns the handles of sessions that no longer exist.
    /// Sessions are touched concurrently (the Redis connection pipelines them); one unreadable
    /// session is logged and skipped rather than failing the whole report.
    pub async fn touch_sessions(
        &self,
        activity: Vec<(String, SystemTime)>,
    ) -> Result<Vec<String>, Error> {
        const CONCURRENCY: usize = 64;
        let now = self.clock.now();
        let mut ended = Vec::new();
        for chunk in activity.chunks(CONCURRENCY) {
            // A node's clock may run ahead; activity cannot be in the future.
            let touches = chunk
                .iter()
                .map(|(handle, at)| self.store.touch_session(handle, (*at).min(now)));
            let results = futures_util::future::join_all(touches).await;
            for ((handle, _), result) in chunk.iter().zip(results) {
                match result {
                    Ok(Some(_)) => {}
                    Ok(None) => ended.push(handle.clone()),
                    Err(error @ StoreError::Unavailable(_)) => return Err(error.into()),
                    Err(error) => tracing::error!(%error, "cannot record activity of one session"),
                }
            }
        }
        Ok(ended)
    }

    pub(super) async fn find(&self, selector: &SessionSelector) -> Result<Option<Session>, Error> {
        let session = match selector {
            SessionSelector::Token(token) => {
                self.store.session_by_token(&TokenHash::of(token)).await?
            }
            SessionSelector::Handle(handle) => self.store.session_by_handle(handle).await?,
            SessionSelector::TokenOrHandle(id) => {
                match self.store.session_by_token(&TokenHash::of(id)).await? {
                    Some(session) => Some(session),
                    None => self.store.session_by_handle(id).await?,
                }
            }
        };
        let now = self.clock.now();
        Ok(session.filter(|session| !session.is_expired(now)))
    }
}
