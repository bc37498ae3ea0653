//! The rules of the control plane, independent of gRPC: who gets a ticket, what a ticket
//! buys, how sessions are created, found, capped and ended.

mod oidc_login;

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::SystemTime;

use gatehouse_proto::origin;
use tonic::codegen::http::Uri;

use crate::clock::Clock;
use crate::config::{AnonymousMode, TicketConfig};
use crate::domain::{
    CreateOutcome, NewSession, Page, RevocationReason, Session, SessionCap, Target, Ticket, User,
    UserKey,
};
use crate::error::{Error, StoreError};
use crate::jwt::{self, JwtVerifiers};
use crate::kerberos;
use crate::oidc::OidcProviders;
use crate::store::{MAX_PAGE_SIZE, Store};
use crate::tokens::{self, TokenHash};
use crate::virtual_proxies::VirtualProxies;

pub use self::oidc_login::OidcLoginStarted;

/// Longest target URI remembered.
const MAX_TARGET_URI_LEN: usize = 4096;
/// Page size when the caller asks for none.
const DEFAULT_PAGE_SIZE: usize = 100;

/// A ticket just issued. Its text exists only here and in the answer to the caller.
#[derive(Debug, Clone)]
pub struct IssuedTicket {
    pub ticket: String,
    pub target_uri: Option<String>,
    pub user: User,
    pub expires: SystemTime,
}

/// A session just created. Its token exists only here and in the answer to the caller.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: String,
    pub session: Session,
    pub evicted: Vec<Session>,
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

#[derive(Debug, Clone)]
pub struct Authority {
    store: Arc<dyn Store>,
    proxies: Arc<ArcSwap<VirtualProxies>>,
    tickets: TicketConfig,
    clock: Arc<dyn Clock>,
    /// Base URL of the REST surface, when it is on: login redirects name it in
    /// `proxyRestUri`.
    rest_base: Option<Arc<str>>,
    jwt: Arc<JwtVerifiers>,
    oidc: Arc<OidcProviders>,
}

impl Authority {
    pub fn new(
        store: Arc<dyn Store>,
        proxies: VirtualProxies,
        tickets: TicketConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            proxies: Arc::new(ArcSwap::from_pointee(proxies)),
            tickets,
            clock,
            rest_base: None,
            jwt: Arc::new(JwtVerifiers::default()),
            oidc: Arc::new(OidcProviders::default()),
        }
    }

    /// Names the REST surface's public base URL (ending in `/`), so that nodes send
    /// authentication modules there.
    pub fn with_rest_base(mut self, base: &str) -> Self {
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        self.rest_base = Some(base.into());
        self
    }

    /// Where an authentication module of this virtual proxy requests tickets
    /// (`proxyRestUri`), when the REST surface is on: `{base}qps/{prefix}/`, `{base}qps/` for
    /// the default virtual proxy.
    pub fn proxy_rest_uri(&self, virtual_proxy: &str) -> Option<String> {
        self.rest_base.as_ref().map(|base| {
            if virtual_proxy.is_empty() {
                format!("{base}qps/")
            } else {
                format!("{base}qps/{virtual_proxy}/")
            }
        })
    }

    /// The virtual proxies in force now (they change when the configuration is reloaded).
    pub fn virtual_proxies(&self) -> Arc<VirtualProxies> {
        self.proxies.load_full()
    }

    /// Puts a reloaded set of virtual proxies in force; sessions are untouched.
    pub fn replace_virtual_proxies(&self, proxies: VirtualProxies) {
        self.proxies.store(Arc::new(proxies));
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn request_ticket(
        &self,
        virtual_proxy: &str,
        user: User,
        target_id: Option<&str>,
    ) -> Result<IssuedTicket, Error> {
        let proxies = self.virtual_proxies();
        let proxy = proxies.get(virtual_proxy)?;
        // An unknown target id still gets a ticket, only without a URI, as in QPS. A target
        // recorded before the origins were narrowed (or by an older node) is checked again.
        let target_uri = match target_id.filter(|id| is_plausible_id(id)) {
            Some(id) => self
                .store
                .get_target(id)
                .await?
                .filter(|target| target.virtual_proxy == virtual_proxy)
                .map(|target| target.uri)
                .filter(|uri| {
                    origin::url_is_admitted(uri, &proxy.public_origins, &proxy.host_allow_list)
                }),
            None => None,
        };
        let ticket = tokens::new_ticket();
        self.store
            .put_ticket(
                &TokenHash::of(&ticket),
                &Ticket {
                    virtual_proxy: virtual_proxy.to_owned(),
                    user: user.clone(),
                },
                self.tickets.ticket_ttl,
            )
            .await?;
        Ok(IssuedTicket {
            ticket,
            target_uri,
            user,
            expires: self.clock.now() + self.tickets.ticket_ttl,
        })
    }

    /// Turns a ticket into a session. Single use, and only at the issuing virtual proxy.
    pub async fn redeem_ticket(
        &self,
        virtual_proxy: &str,
        ticket: &str,
    ) -> Result<IssuedSession, Error> {
        self.virtual_proxies().get(virtual_proxy)?;
        if ticket.is_empty() || ticket.len() > 256 {
            return Err(Error::invalid("ticket must be 1 to 256 characters long"));
        }
        let ticket = self
            .store
            .take_ticket(&TokenHash::of(ticket), virtual_proxy)
            .await?
            // One message for every case, so the answer reveals nothing about the ticket.
            .ok_or_else(|| {
                Error::NotFound(
                    "ticket is unknown, expired, already used or for another virtual proxy".into(),
                )
            })?;
        self.start_session(virtual_proxy, ticket.user, tokens::new_session_token())
            .await
    }

    pub async fn create_target(
        &self,
        virtual_proxy: &str,
        uri: &str,
    ) -> Result<(String, SystemTime), Error> {
        let proxies = self.virtual_proxies();
        let proxy = proxies.get(virtual_proxy)?;
        check_target_uri(uri)?;
        // A target on a host an attacker names would receive the victim's ticket.
        if !origin::url_is_admitted(uri, &proxy.public_origins, &proxy.host_allow_list) {
            return Err(Error::invalid(
                "target_uri is not on a public origin or allowed host of this virtual proxy",
            ));
        }
        let id = tokens::new_id();
        let target = Target {
            virtual_proxy: virtual_proxy.to_owned(),
            uri: uri.to_owned(),
        };
        self.store
            .put_target(&id, &target, self.tickets.target_ttl)
            .await?;
        Ok((id, self.clock.now() + self.tickets.target_ttl))
    }

    /// Creates a session for a trusted caller, with a caller-chosen token if it is random
    /// enough (the caller then sets the cookie itself).
    pub async fn create_session(
        &self,
        virtual_proxy: &str,
        user: User,
        token: Option<String>,
    ) -> Result<IssuedSession, Error> {
        self.virtual_proxies().get(virtual_proxy)?;
        let token = match token {
            Some(token) => {
                tokens::check_caller_token(&token)?;
                token
            }
            None => tokens::new_session_token(),
        };
        self.start_session(virtual_proxy, user, token).await
    }

    async fn start_session(
        &self,
        virtual_proxy: &str,
        user: User,
        token: String,
    ) -> Result<IssuedSession, Error> {
        self.start_session_until(virtual_proxy, user, token, None)
            .await
    }

    /// As `start_session`, ending at `until` at the latest.
    async fn start_session_until(
        &self,
        virtual_proxy: &str,
        user: User,
        token: String,
        until: Option<SystemTime>,
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
        };
        let cap = SessionCap {
            max_per_user: proxy.max_sessions_per_user,
            policy: proxy.session_cap_policy,
        };
        match self.store.create_session(new, cap).await? {
            CreateOutcome::Created { session, evicted } => Ok(IssuedSession {
                token,
                session,
                evicted,
            }),
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
    pub async fn delete_session(
        &self,
        selector: &SessionSelector,
        virtual_proxy: Option<&str>,
    ) -> Result<Session, Error> {
        let session = self.get_session(selector, virtual_proxy).await?;
        self.store
            .delete_session(&session.handle, RevocationReason::Deleted)
            .await?
            .ok_or_else(|| Error::NotFound("no such session".into()))
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

    /// Logs a user out of one virtual proxy, or of all of them.
    pub async fn delete_user_sessions(
        &self,
        user: &UserKey,
        virtual_proxy: Option<&str>,
    ) -> Result<Vec<Session>, Error> {
        let mut sessions = Vec::new();
        for prefix in self.virtual_proxies().select(virtual_proxy)? {
            sessions.extend(
                self.store
                    .delete_user_sessions(prefix, user, RevocationReason::UserLoggedOut)
                    .await?,
            );
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

    /// A session for a user a trusted header named; only where header authentication is on.
    pub async fn header_login(
        &self,
        virtual_proxy: &str,
        user: User,
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
        self.start_session(virtual_proxy, user, tokens::new_session_token())
            .await
    }

    /// A session for the Kerberos principal a client's SPNEGO token names, with the user
    /// directory its realm maps to; only where Windows authentication is on. Returns the
    /// acceptor's reply token too, for mutual authentication.
    pub async fn kerberos_login(
        &self,
        virtual_proxy: &str,
        token: Vec<u8>,
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
            .start_session(virtual_proxy, user, tokens::new_session_token())
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
    ) -> Result<IssuedSession, Error> {
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
            return Ok(IssuedSession {
                token: session_token,
                session,
                evicted: Vec::new(),
            });
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
                return Ok(IssuedSession {
                    token: session_token,
                    session,
                    evicted: Vec::new(),
                });
            }
            other => other?,
        };
        self.store.remember_jwt(&token_hash, remember).await?;
        Ok(issued)
    }

    async fn live_session(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<Session>, Error> {
        Ok(self
            .find(&SessionSelector::Token(token.to_owned()))
            .await?
            .filter(|session| session.virtual_proxy == virtual_proxy))
    }

    /// A session for an anonymous user (directory `NONE`, id `anonymous<random>`), as QPS
    /// names them; only where anonymous access is allowed.
    pub async fn anonymous_login(&self, virtual_proxy: &str) -> Result<IssuedSession, Error> {
        if self.virtual_proxies().get(virtual_proxy)?.anonymous == AnonymousMode::None {
            return Err(Error::PermissionDenied(
                "this virtual proxy does not allow anonymous access",
            ));
        }
        let user = User::new(
            "NONE",
            &format!("anonymous{}", tokens::new_id()),
            Vec::new(),
        )?;
        self.start_session(virtual_proxy, user, tokens::new_session_token())
            .await
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

    async fn own_session(
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

    async fn find(&self, selector: &SessionSelector) -> Result<Option<Session>, Error> {
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

/// Shown for every Personal API failure to authenticate, whatever the cause.
pub const NO_SESSION: &str = "no valid session: send the session token as `authorization: Bearer <token>` or in the virtual proxy's cookie";

fn is_plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A target is where a browser is sent back after login: an absolute http(s) URL.
fn check_target_uri(uri: &str) -> Result<(), Error> {
    if uri.len() > MAX_TARGET_URI_LEN {
        return Err(Error::invalid(format!(
            "target_uri is longer than {MAX_TARGET_URI_LEN} bytes"
        )));
    }
    let parsed: Uri = uri
        .parse()
        .map_err(|_| Error::invalid("target_uri is not a valid URI"))?;
    let http = matches!(parsed.scheme_str(), Some(scheme) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"));
    if !http || parsed.host().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            "target_uri must be an absolute http or https URL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_uris_must_be_absolute_http() {
        assert!(check_target_uri("https://portal.example.com/sense/app/1?x=1").is_ok());
        assert!(check_target_uri("HTTP://h/").is_ok());
        for bad in [
            "/relative",
            "javascript:alert(1)",
            "ftp://h/",
            "https://",
            "not a uri",
        ] {
            assert!(check_target_uri(bad).is_err(), "{bad}");
        }
        assert!(check_target_uri(&format!("https://h/{}", "a".repeat(5000))).is_err());
    }
}
