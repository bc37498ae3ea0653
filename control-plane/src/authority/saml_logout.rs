//! SAML Single Logout's rules. A login records whom the identity provider logged in (its
//! NameID and SessionIndex) with the session. When the identity provider logs the user out,
//! its signed LogoutRequest ends the sessions of that NameID and SessionIndex through the
//! revocation log (so every node drops them and closes their WebSockets), once; when a
//! browser logs out here, it is sent to the identity provider with our LogoutRequest, whose
//! answer is bound, as a login is, to the browser that logged out, and spent only by it.
//! The XML and signatures are in [`crate::saml`].

use std::time::Duration;

use super::oidc_login::is_binding;
use super::{Authority, IssuedSession};
use crate::audit::{Actor, AuditEvent};
use crate::domain::{LoginClaim, OidcLogin, RevocationReason};
use crate::error::Error;
use crate::saml::{self, IdpLogoutMessage, SamlSubject, SloAnswer, SloMessage};
use crate::tokens::{self, TokenHash};

const NOT_OURS: &str = "the SAML logout response answers no logout of this browser";

/// What a logout message at `/saml/slo` comes to.
#[derive(Debug, Clone)]
pub struct SamlLogoutOutcome {
    /// Where the browser goes next: the identity provider with our LogoutResponse, or the
    /// landing page once our own logout has come back.
    pub answer: SloAnswer,
    /// Handles of the sessions it ended.
    pub ended: Vec<String>,
}

/// A logout of ours on its way to the identity provider.
#[derive(Debug, Clone)]
pub struct SamlLogoutStarted {
    /// How the browser takes our LogoutRequest there.
    pub to_idp: SloAnswer,
    /// The binding cookie's value: the provider's answer must come back with it.
    pub binding: String,
    /// How long the logout may take.
    pub timeout: Duration,
}

impl Authority {
    /// Records with a new session whom the identity provider logged in, so a logout either
    /// way finds it. A failure is logged, not fatal: the user is logged in, and only Single
    /// Logout would miss this session.
    pub(super) async fn link_saml_session(
        &self,
        idp: &str,
        issued: &IssuedSession,
        subject: &SamlSubject,
    ) {
        let session = &issued.session;
        let ttl = session
            .absolute_expiry
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        let proxy = session.virtual_proxy.as_str();
        let mut links = vec![(
            saml::link_key(proxy, idp, &subject.name_id, None),
            session.handle.clone(),
        )];
        if let Some(index) = &subject.session_index {
            links.push((
                saml::link_key(proxy, idp, &subject.name_id, Some(index)),
                session.handle.clone(),
            ));
        }
        match serde_json::to_string(subject) {
            Ok(record) => links.push((saml::subject_key(&session.handle), record)),
            Err(error) => tracing::error!(%error, "cannot record a SAML subject"),
        }
        for (key, value) in links {
            if let Err(error) = self.store.link_session(&key, &value, ttl).await {
                tracing::error!(%error, "cannot record the SAML subject of a login; single logout will miss it");
            }
        }
    }

    /// A message the identity provider had the browser bring to `/saml/slo`: its
    /// LogoutRequest (signed; ends the sessions it names and answers a LogoutResponse) or
    /// its LogoutResponse to ours (bound to this browser's logout; lands on the configured
    /// page).
    pub async fn saml_slo(
        &self,
        virtual_proxy: &str,
        message: SloMessage,
        binding: &str,
    ) -> Result<SamlLogoutOutcome, Error> {
        let source = self.saml_provider(virtual_proxy)?;
        let sp = source.sp().await?;
        let now = self.clock.now();
        let reading = sp.clone();
        let read = tokio::task::spawn_blocking(move || reading.read_logout_message(&message, now))
            .await
            .map_err(|error| {
                tracing::error!(%error, "SAML logout message check failed");
                Error::ProviderUnavailable("the SAML logout cannot be checked right now")
            })??;
        match read {
            IdpLogoutMessage::Request {
                id,
                name_id,
                session_indexes,
                relay_state,
            } => {
                let idp = sp.idp_entity_id();
                // A LogoutRequest works once: replayed later, it must not end sessions
                // started since.
                let spent = TokenHash::of(&format!(
                    "gatehouse-saml-logout-request\0{virtual_proxy}\0{idp}\0{id}"
                ));
                let memory = saml::request_memory(sp.config().clock_skew);
                if !self.store.first_use(&spent, memory).await? {
                    return Err(Error::Unauthenticated(
                        "the SAML logout request was used already",
                    ));
                }
                let keys: Vec<TokenHash> = if session_indexes.is_empty() {
                    vec![saml::link_key(virtual_proxy, idp, &name_id, None)]
                } else {
                    session_indexes
                        .iter()
                        .map(|index| saml::link_key(virtual_proxy, idp, &name_id, Some(index)))
                        .collect()
                };
                let ended = self.end_linked(&keys).await?;
                tracing::info!(
                    virtual_proxy,
                    ended = ended.len(),
                    "SAML IdP-initiated logout"
                );
                let answering = sp.clone();
                let answer =
                    off_async(move || answering.logout_response(&id, relay_state.as_deref(), now))
                        .await?;
                Ok(SamlLogoutOutcome { answer, ended })
            }
            IdpLogoutMessage::Response {
                in_response_to,
                relay_state,
                success,
            } => {
                // The logout is spent only by the browser that started it, as a login is
                // (`claim_login`): a RelayState read from a log or a Referer, brought with
                // any LogoutResponse by another browser, must not spend it. The request id
                // comes from the binding and the RelayState, so it is checked first.
                if !is_binding(binding)
                    || in_response_to != logout_request_id(binding, &relay_state)
                {
                    return Err(Error::Unauthenticated(NOT_OURS));
                }
                let binding_hash = TokenHash::of(binding).to_text();
                let logout = match self
                    .store
                    .claim_login(&logout_key(&relay_state), &binding_hash)
                    .await?
                {
                    LoginClaim::Taken(logout) if logout.virtual_proxy == virtual_proxy => logout,
                    LoginClaim::Taken(_) | LoginClaim::OtherBrowser | LoginClaim::Unknown => {
                        return Err(Error::Unauthenticated(NOT_OURS));
                    }
                };
                if !success {
                    // Logged out here all the same; only the provider's session lives on.
                    tracing::warn!(virtual_proxy, "the identity provider did not log out");
                }
                Ok(SamlLogoutOutcome {
                    answer: SloAnswer::Redirect(logout.target),
                    ended: Vec::new(),
                })
            }
        }
    }

    /// Ends the sessions linked under `keys`; returns their handles.
    async fn end_linked(&self, keys: &[TokenHash]) -> Result<Vec<String>, Error> {
        let mut ended = Vec::new();
        for key in keys {
            for handle in self.store.linked_sessions(key).await? {
                let deleted = self
                    .store
                    .delete_session(&handle, RevocationReason::ProviderLogout)
                    .await?;
                if let Some(session) = &deleted {
                    self.audit(&AuditEvent::SessionRevoked {
                        session,
                        actor: Actor::Provider,
                        reason: RevocationReason::ProviderLogout,
                    });
                    ended.push(handle);
                }
            }
        }
        Ok(ended)
    }

    /// After a browser's SAML session `handle` has ended here: the identity provider's URL
    /// with our LogoutRequest for it, and the binding cookie its answer must come back with.
    /// `None` when there is nothing to log out of there (Single Logout is off, the
    /// provider has no SingleLogoutService, the session was not a SAML one).
    pub async fn saml_logout_begin(
        &self,
        virtual_proxy: &str,
        handle: &str,
        binding: &str,
    ) -> Result<Option<SamlLogoutStarted>, Error> {
        let source = self.saml_provider(virtual_proxy)?;
        let sp = source.sp().await?;
        if !sp.single_logout() {
            return Ok(None);
        }
        let subject = self
            .store
            .linked_sessions(&saml::subject_key(handle))
            .await?
            .into_iter()
            .find_map(|record| serde_json::from_str::<SamlSubject>(&record).ok());
        let Some(subject) = subject else {
            return Ok(None);
        };
        let binding = if is_binding(binding) {
            binding.to_owned()
        } else {
            tokens::new_session_token()
        };
        let relay_state = tokens::new_session_token();
        let request_id = logout_request_id(&binding, &relay_state);
        let now = self.clock.now();
        let (requesting, relay) = (sp.clone(), relay_state.clone());
        let to_idp =
            off_async(move || requesting.logout_request(&request_id, &subject, &relay, now))
                .await?;
        let Some(to_idp) = to_idp else {
            return Ok(None);
        };
        let config = sp.config();
        let logout = OidcLogin {
            virtual_proxy: virtual_proxy.to_owned(),
            binding_hash: TokenHash::of(&binding).to_text(),
            redirect_uri: config.slo_url(),
            target: config.logout_landing(virtual_proxy),
        };
        self.store
            .put_oidc_login(&logout_key(&relay_state), &logout, config.login_timeout)
            .await?;
        Ok(Some(SamlLogoutStarted {
            to_idp,
            binding,
            timeout: config.login_timeout,
        }))
    }
}

/// `make` (signing with libxml2, which waits for the one document at a time) on a blocking
/// thread.
async fn off_async<T: Send + 'static>(
    make: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(make).await.map_err(|error| {
        tracing::error!(%error, "SAML logout message could not be made");
        Error::ProviderUnavailable("SAML logout is not available right now")
    })?
}

/// Where a logout of ours in flight is stored, apart from logins.
fn logout_key(relay_state: &str) -> TokenHash {
    TokenHash::of(&format!("gatehouse-saml-logout\0{relay_state}"))
}

/// Our LogoutRequest's id: derived, as a login's AuthnRequest id is, from the binding
/// cookie and the RelayState, so only the browser that logged out can bring its answer.
fn logout_request_id(binding: &str, relay_state: &str) -> String {
    saml::request_id(binding, &format!("logout\0{relay_state}"))
}
