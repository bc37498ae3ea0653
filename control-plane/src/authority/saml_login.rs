//! The SAML login flow's rules: starting an SP-initiated login, and taking the Response the
//! browser posts to the Assertion Consumer Service. The XML and signature work is in
//! [`crate::saml`]; this module binds the Response to the login and the browser, spends
//! the assertion, and starts the session.

use std::time::Duration;

use super::oidc_login::{check_target, is_binding};
use super::{Authority, IssuedSession};
use crate::audit::Method;
use crate::domain::{ClientInfo, LoginClaim, OidcLogin};
use crate::error::Error;
use crate::saml::{self, SamlSource};
use crate::tokens::{self, TokenHash};

/// Longest RelayState taken (ours are 43 characters; the binding allows 80 bytes).
const MAX_RELAY_STATE_LEN: usize = 512;

const UNKNOWN_LOGIN: &str = "the login is unknown, expired or already used; start again";

/// A login the browser should continue at the identity provider.
#[derive(Debug, Clone)]
pub struct SamlLoginStarted {
    /// The identity provider's SSO URL with the AuthnRequest and RelayState.
    pub redirect_uri: String,
    /// The binding cookie's value.
    pub binding: String,
    pub login_timeout: Duration,
}

impl Authority {
    pub(super) fn saml_provider(
        &self,
        virtual_proxy: &str,
    ) -> Result<std::sync::Arc<SamlSource>, Error> {
        let proxies = self.virtual_proxies();
        let config = proxies
            .get(virtual_proxy)?
            .saml
            .as_ref()
            .ok_or(Error::PermissionDenied(
                "this virtual proxy does not use SAML",
            ))?;
        self.saml.provider(virtual_proxy, config)
    }

    /// Starts a login: a fresh RelayState names the login kept server-side (where the
    /// browser is going, which browser it is), and the AuthnRequest's id is derived from it
    /// and the binding cookie. `binding` is the browser's binding cookie, kept when it is
    /// well formed so that logins started in two tabs both finish.
    pub async fn saml_begin(
        &self,
        virtual_proxy: &str,
        target: &str,
        binding: &str,
    ) -> Result<SamlLoginStarted, Error> {
        let source = self.saml_provider(virtual_proxy)?;
        check_target(target)?;
        let sp = source.sp().await?;
        let binding = if is_binding(binding) {
            binding.to_owned()
        } else {
            tokens::new_session_token()
        };
        let relay_state = tokens::new_session_token();
        let request_id = saml::request_id(&binding, &relay_state);
        let redirect_uri = sp.authn_request_uri(&request_id, &relay_state)?;
        let config = sp.config();
        let login = OidcLogin {
            virtual_proxy: virtual_proxy.to_owned(),
            binding_hash: TokenHash::of(&binding).to_text(),
            redirect_uri: config.acs_url().to_owned(),
            target: target.to_owned(),
        };
        self.store
            .put_oidc_login(&login_key(&relay_state), &login, config.login_timeout)
            .await?;
        Ok(SamlLoginStarted {
            redirect_uri,
            binding,
            login_timeout: config.login_timeout,
        })
    }

    /// Takes a Response posted to the ACS. With a RelayState of ours, the browser must hold
    /// the binding cookie the login started with, and only then is the login consumed (it
    /// works once); the Response must answer this login's AuthnRequest. Without one, it is an
    /// IdP-initiated login, taken only when the configuration allows it. Either way the
    /// signature, addressing and validity window are checked, and the assertion is spent
    /// (once across all replicas). Returns the new session and the path to send the browser
    /// to.
    pub async fn saml_acs(
        &self,
        virtual_proxy: &str,
        saml_response: &str,
        relay_state: &str,
        binding: &str,
        client: ClientInfo,
    ) -> Result<(IssuedSession, String), Error> {
        let outcome = self
            .saml_session(
                virtual_proxy,
                saml_response,
                relay_state,
                binding,
                client.clone(),
            )
            .await;
        let issued = outcome.as_ref().map(|(issued, _)| issued);
        self.audit_login(Method::Saml, virtual_proxy, None, &client, issued);
        outcome
    }

    async fn saml_session(
        &self,
        virtual_proxy: &str,
        saml_response: &str,
        relay_state: &str,
        binding: &str,
        client: ClientInfo,
    ) -> Result<(IssuedSession, String), Error> {
        let source = self.saml_provider(virtual_proxy)?;
        if relay_state.len() > MAX_RELAY_STATE_LEN {
            return Err(Error::invalid("RelayState is too long"));
        }
        let (request_id, target) = if relay_state.is_empty() {
            // IdP-initiated: `verify` refuses it unless allowed, and then lands on the root.
            (None, root_path(virtual_proxy))
        } else {
            // The login is spent only by the browser that started it: a RelayState read
            // from a log or a Referer and posted with junk must not end the real login.
            let binding_hash = if is_binding(binding) {
                TokenHash::of(binding).to_text()
            } else {
                String::new()
            };
            let login = match self
                .store
                .claim_login(&login_key(relay_state), &binding_hash)
                .await?
            {
                LoginClaim::Taken(login) if login.virtual_proxy == virtual_proxy => login,
                LoginClaim::Taken(_) | LoginClaim::Unknown => {
                    return Err(Error::Unauthenticated(UNKNOWN_LOGIN));
                }
                LoginClaim::OtherBrowser => {
                    // Someone else's Response (login CSRF), or a browser that lost the cookie.
                    tracing::info!(
                        virtual_proxy,
                        "SAML response from a browser that did not start the login"
                    );
                    return Err(Error::Unauthenticated(
                        "the login was started in another browser; start again",
                    ));
                }
            };
            (Some(saml::request_id(binding, relay_state)), login.target)
        };
        let response = saml_response.to_owned();
        let sp = source.sp().await?;
        let checking = sp.clone();
        let assertion =
            tokio::task::spawn_blocking(move || checking.verify(&response, request_id.as_deref()))
                .await
                .map_err(|error| {
                    // A panic or the shutdown, not the Response: the login may be tried again.
                    tracing::error!(%error, "SAML response verification failed");
                    Error::ProviderUnavailable("the SAML response cannot be checked right now")
                })??;
        // An assertion works once, whichever replica it reaches: a Response copied from a
        // browser's history or a log cannot start a second session.
        let spent = TokenHash::of(&format!(
            "gatehouse-saml-assertion\0{virtual_proxy}\0{}\0{}",
            sp.config().entity_id,
            assertion.id
        ));
        // Kept as long as the assertion passes the checks (`verify` refuses any that would
        // outlast the longest memory), and at least a second, so the marker is never unset.
        let remember = assertion
            .usable_until
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), saml::MAX_ASSERTION_MEMORY);
        if !self.store.first_use(&spent, remember).await? {
            tracing::info!(virtual_proxy, "SAML assertion replayed");
            return Err(Error::Unauthenticated(
                "the SAML response was used already; start again",
            ));
        }
        let issued = self
            .start_session(
                virtual_proxy,
                assertion.user,
                tokens::new_session_token(),
                client,
            )
            .await?;
        // Only with Single Logout on: otherwise nobody reads these records.
        if let Some(subject) = assertion
            .subject
            .as_ref()
            .filter(|_| sp.config().single_logout)
        {
            self.link_saml_session(sp.idp_entity_id(), &issued, subject)
                .await;
        }
        Ok((issued, target))
    }

    /// This virtual proxy's SP metadata (XML).
    pub fn saml_metadata(&self, virtual_proxy: &str) -> Result<String, Error> {
        saml::sp_metadata_xml(self.saml_provider(virtual_proxy)?.config())
    }
}

/// Where a login in flight is stored: apart from OpenID states by a prefix of its own.
fn login_key(relay_state: &str) -> TokenHash {
    TokenHash::of(&format!("gatehouse-saml-login\0{relay_state}"))
}

fn root_path(virtual_proxy: &str) -> String {
    if virtual_proxy.is_empty() {
        "/".to_owned()
    } else {
        format!("/{virtual_proxy}/")
    }
}
