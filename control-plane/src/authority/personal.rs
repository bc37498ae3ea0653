//! The caller's own sessions (the Personal API): reading the calling one, which counts as
//! activity, logging out, and listing and ending the caller's other sessions.

use super::{Authority, SessionSelector};
use crate::audit::{Actor, AuditEvent};
use crate::domain::{RevocationReason, Session};
use crate::error::Error;

/// Shown for every Personal API failure to authenticate, whatever the cause.
pub const NO_SESSION: &str = "no valid session: send the session token as `authorization: Bearer <token>` or in the virtual proxy's cookie";

/// Shown for a handle that names no session of the caller: one message whether the session
/// does not exist or is another user's, so handles cannot be probed.
const NOT_YOURS: &str = "you have no such session";

/// Longer than any handle a store makes: refused without asking the store.
const MAX_HANDLE_LEN: usize = 512;

/// The caller's sessions, and which one is calling.
#[derive(Debug, Clone)]
pub struct OwnSessions {
    /// In the calling session's virtual proxy, oldest first.
    pub sessions: Vec<Session>,
    pub current_handle: String,
}

impl Authority {
    /// The caller's own session, found by its token. Counts as activity.
    pub async fn current_session(
        &self,
        token: &str,
        virtual_proxy: Option<&str>,
    ) -> Result<Session, Error> {
        let session = self.own_session(token, virtual_proxy).await?;
        Ok(self
            .store
            .touch_session(&session.handle, self.clock.now())
            .await?
            .unwrap_or(session))
    }

    /// Ends the caller's own session.
    pub async fn logout(&self, token: &str, virtual_proxy: Option<&str>) -> Result<Session, Error> {
        let session = self.own_session(token, virtual_proxy).await?;
        let ended = self
            .store
            .delete_session(&session.handle, RevocationReason::Logout)
            .await?
            .ok_or(Error::Unauthenticated(NO_SESSION))?;
        self.audit(&AuditEvent::Logout { session: &ended });
        Ok(ended)
    }

    /// The caller's live sessions in the virtual proxy of the calling one. Counts as
    /// activity of the calling session, as reading it does.
    pub async fn own_sessions(
        &self,
        token: &str,
        virtual_proxy: Option<&str>,
    ) -> Result<OwnSessions, Error> {
        let current = self.current_session(token, virtual_proxy).await?;
        let mut sessions = self
            .store
            .user_sessions(&current.virtual_proxy, &current.user.key())
            .await?;
        let now = self.clock.now();
        sessions.retain(|session| !session.is_expired(now));
        Ok(OwnSessions {
            sessions,
            current_handle: current.handle,
        })
    }

    /// Ends one of the caller's sessions in the virtual proxy of the calling one (which may
    /// be the calling one itself) through the normal deletion path: nodes hear of it on the
    /// revocation stream and close its WebSockets. A handle of another user, or of another
    /// virtual proxy, is not found, as a handle of no session is.
    pub async fn end_own_session(
        &self,
        token: &str,
        virtual_proxy: Option<&str>,
        handle: &str,
    ) -> Result<Session, Error> {
        let caller = self.own_session(token, virtual_proxy).await?;
        let handle = handle.trim();
        if handle.is_empty() {
            return Err(Error::invalid("handle is required"));
        }
        if handle.len() > MAX_HANDLE_LEN {
            return Err(Error::NotFound(NOT_YOURS.into()));
        }
        let caller_key = caller.user.key();
        let target = self
            .find(&SessionSelector::Handle(handle.to_owned()))
            .await?
            .filter(|session| {
                session.virtual_proxy == caller.virtual_proxy && caller_key.matches(&session.user)
            })
            .ok_or_else(|| Error::NotFound(NOT_YOURS.into()))?;
        let ended = self
            .store
            .delete_session(&target.handle, RevocationReason::Logout)
            .await?
            .ok_or_else(|| Error::NotFound(NOT_YOURS.into()))?;
        // Ending the calling session is a logout; ending another one, a revocation by its
        // own user (from another browser, say).
        if ended.handle == caller.handle {
            self.audit(&AuditEvent::Logout { session: &ended });
        } else {
            self.audit(&AuditEvent::SessionRevoked {
                session: &ended,
                actor: Actor::OwnUser,
                reason: RevocationReason::Logout,
            });
        }
        Ok(ended)
    }

    pub(super) async fn own_session(
        &self,
        token: &str,
        virtual_proxy: Option<&str>,
    ) -> Result<Session, Error> {
        if let Some(prefix) = virtual_proxy {
            self.virtual_proxies().get(prefix)?;
        }
        let session = self
            .find(&SessionSelector::Token(token.to_owned()))
            .await?
            .ok_or(Error::Unauthenticated(NO_SESSION))?;
        if virtual_proxy.is_some_and(|prefix| prefix != session.virtual_proxy) {
            return Err(Error::Unauthenticated(NO_SESSION));
        }
        Ok(session)
    }
}
