//! The caller's own session (the Personal API): reading it, which counts as activity, and
//! logging out.

use super::{Authority, SessionSelector};
use crate::domain::{RevocationReason, Session};
use crate::error::Error;

/// Shown for every Personal API failure to authenticate, whatever the cause.
pub const NO_SESSION: &str = "no valid session: send the session token as `authorization: Bearer <token>` or in the virtual proxy's cookie";

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
        self.store
            .delete_session(&session.handle, RevocationReason::Logout)
            .await?
            .ok_or(Error::Unauthenticated(NO_SESSION))
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
