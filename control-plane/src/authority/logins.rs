//! Logins a node forwards: a user a trusted header names, a Kerberos (SPNEGO) token, a JWT
//! bearer token, and anonymous access; each starts a session where the virtual proxy allows
//! that method.

use super::{Authority, IssuedSession};
use crate::audit::Method;
use crate::config::AnonymousMode;
use crate::domain::{ClientInfo, User};
use crate::error::Error;
use crate::jwt;
use crate::kerberos;
use crate::tokens::{self, TokenHash};

impl Authority {
    /// A session for a user a trusted header named; only where header authentication is on.
    pub async fn header_login(
        &self,
        virtual_proxy: &str,
        user: User,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        let named = user.clone();
        let outcome = self
            .header_session(virtual_proxy, user, client.clone())
            .await;
        self.audit_login(
            Method::Header,
            virtual_proxy,
            Some(&named),
            &client,
            outcome.as_ref(),
        );
        outcome
    }

    async fn header_session(
        &self,
        virtual_proxy: &str,
        user: User,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        if self
            .virtual_proxies()
            .get(virtual_proxy)?
            .header_authentication
            .is_none()
        {
            return Err(Error::PermissionDenied(
                "this virtual proxy does not use header authentication",
            ));
        }
        self.start_session(virtual_proxy, user, tokens::new_session_token(), client)
            .await
    }

    /// A session for the Kerberos principal a client's SPNEGO token names, with the user
    /// directory its realm maps to; only where Windows authentication is on. Returns the
    /// acceptor's reply token too, for mutual authentication.
    pub async fn kerberos_login(
        &self,
        virtual_proxy: &str,
        token: Vec<u8>,
        client: ClientInfo,
    ) -> Result<(IssuedSession, Vec<u8>), Error> {
        let outcome = self
            .kerberos_session(virtual_proxy, token, client.clone())
            .await;
        let issued = outcome.as_ref().map(|(issued, _)| issued);
        self.audit_login(Method::Kerberos, virtual_proxy, None, &client, issued);
        outcome
    }

    async fn kerberos_session(
        &self,
        virtual_proxy: &str,
        token: Vec<u8>,
        client: ClientInfo,
    ) -> Result<(IssuedSession, Vec<u8>), Error> {
        let Some(config) = self.virtual_proxies().get(virtual_proxy)?.kerberos.clone() else {
            return Err(Error::PermissionDenied(
                "this virtual proxy does not use Windows authentication",
            ));
        };
        // The token's hash, taken before GSSAPI consumes it.
        let used = TokenHash::of(&format!(
            "gatehouse-kerberos\0{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &token)
        ));
        let accepted = kerberos::accept(token).await.map_err(|error| {
            tracing::info!(%virtual_proxy, %error, "Kerberos token not accepted");
            Error::Unauthenticated("the Kerberos token was not accepted")
        })?;
        // GSSAPI's replay cache is per host: a token replayed to another replica would pass
        // it. The shared store makes each accepted token good once across all replicas.
        if !self
            .store
            .first_use(&used, kerberos::AUTHENTICATOR_LIFETIME)
            .await?
        {
            tracing::warn!(%virtual_proxy, "Kerberos token replayed");
            return Err(Error::Unauthenticated(
                "the Kerberos token was not accepted",
            ));
        }
        let Some((user, realm)) = kerberos::split_principal(&accepted.principal) else {
            tracing::info!(%virtual_proxy, principal = %accepted.principal, "Kerberos principal without a realm");
            return Err(Error::Unauthenticated(
                "the Kerberos principal has no realm",
            ));
        };
        let Some(directory) = config.directory_of(realm) else {
            tracing::info!(%virtual_proxy, %realm, "Kerberos realm not mapped to a user directory");
            return Err(Error::PermissionDenied(
                "the user's Kerberos realm is not accepted here",
            ));
        };
        let user = User::new(directory, user, Vec::new())?;
        let issued = self
            .start_session(virtual_proxy, user, tokens::new_session_token(), client)
            .await?;
        Ok((issued, accepted.output_token))
    }

    /// The one session a JWT bearer token has in `virtual_proxy`: the existing one, else a new
    /// one (ending no later than the token), unless this token's session has already ended.
    ///
    /// A JWT is presented again and again, to any node; minting a session each time would
    /// fill the per-user cap. The session token is derived from the JWT, so every replica
    /// finds the same session, and the store remembers until `exp` that the token had one: a
    /// session an administrator deleted (or that was logged out or timed out) stays ended,
    /// and the client needs a new token, as it would after a revocation at the issuer.
    pub async fn jwt_login(
        &self,
        virtual_proxy: &str,
        token: &str,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        let outcome = self.jwt_session(virtual_proxy, token, client.clone()).await;
        // A token presented again finds its session: that is no new login.
        match &outcome {
            Ok((issued, true)) => {
                self.audit_login(Method::Jwt, virtual_proxy, None, &client, Ok(issued));
            }
            Ok((_, false)) => {}
            Err(error) => {
                self.audit_login(Method::Jwt, virtual_proxy, None, &client, Err(error));
            }
        }
        outcome.map(|(issued, _)| issued)
    }

    /// The session of a JWT, and whether it was started now.
    async fn jwt_session(
        &self,
        virtual_proxy: &str,
        token: &str,
        client: ClientInfo,
    ) -> Result<(IssuedSession, bool), Error> {
        let proxies = self.virtual_proxies();
        let config = proxies
            .get(virtual_proxy)?
            .jwt
            .as_ref()
            .ok_or(Error::PermissionDenied(
                "this virtual proxy does not use JWT authentication",
            ))?;
        let verified = self
            .jwt
            .verifier(virtual_proxy, config)?
            .verify(token)
            .await?;
        let session_token = jwt::session_token(virtual_proxy, token);
        let token_hash = TokenHash::of(&session_token);
        if let Some(session) = self.live_session(virtual_proxy, &session_token).await? {
            let issued = IssuedSession {
                token: session_token,
                session,
                evicted: Vec::new(),
            };
            return Ok((issued, false));
        }
        if self.store.jwt_remembered(&token_hash).await? {
            return Err(Error::Unauthenticated(
                "the session of this token has ended; log in with a new token",
            ));
        }
        let now = self.clock.now();
        let remember = verified
            .expires
            .duration_since(now)
            .unwrap_or_default()
            .saturating_add(config.leeway)
            .max(std::time::Duration::from_secs(1));
        let issued = match self
            .start_session_until(
                virtual_proxy,
                verified.user,
                session_token.clone(),
                Some(verified.expires),
                client,
            )
            .await
        {
            // Another node logged the same token in at the same moment: share its session.
            Err(Error::AlreadyExists(_)) => {
                let session = self
                    .live_session(virtual_proxy, &session_token)
                    .await?
                    .ok_or(Error::Unauthenticated(
                        "the session of this token has ended; log in with a new token",
                    ))?;
                let issued = IssuedSession {
                    token: session_token,
                    session,
                    evicted: Vec::new(),
                };
                return Ok((issued, false));
            }
            other => other?,
        };
        self.store.remember_jwt(&token_hash, remember).await?;
        Ok((issued, true))
    }

    /// A session for an anonymous user (directory `NONE`, id `anonymous<random>`), as QPS
    /// names them; only where anonymous access is allowed.
    pub async fn anonymous_login(
        &self,
        virtual_proxy: &str,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        let outcome = self.anonymous_session(virtual_proxy, client.clone()).await;
        self.audit_login(
            Method::Anonymous,
            virtual_proxy,
            None,
            &client,
            outcome.as_ref(),
        );
        outcome
    }

    async fn anonymous_session(
        &self,
        virtual_proxy: &str,
        client: ClientInfo,
    ) -> Result<IssuedSession, Error> {
        if self.virtual_proxies().get(virtual_proxy)?.anonymous == AnonymousMode::None {
            return Err(Error::PermissionDenied(
                "this virtual proxy does not allow anonymous access",
            ));
        }
        let user = User::new(
            "NONE",
            &format!("anonymous{}", tokens::new_guid()),
            Vec::new(),
        )?;
        self.start_session(virtual_proxy, user, tokens::new_session_token(), client)
            .await
    }
}
