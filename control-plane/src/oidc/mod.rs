//! OpenID Connect login (authorization code flow with PKCE) for virtual proxies with
//! `[virtual_proxies.oidc]`. Everything that talks to the provider lives here, in the control
//! plane: discovery, the token request, ID token and logout token validation, userinfo. A
//! data-plane node only redirects browsers and relays `code` and `state`.
//!
//! The state is random and stored (hashed) by the control plane with the login's target; the
//! PKCE verifier and the nonce are derived from the state and the browser's binding cookie,
//! so neither is stored anywhere and a leaked callback URL (state and code) does not give
//! them away.

// Public, with the checks they make, for the fuzz targets (`tests/src/fuzz_entry.rs`).
pub mod claims;
pub mod discovery;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::Request;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

pub use self::claims::LogoutTarget;
use self::discovery::Metadata;
use crate::config::{ClientAuthentication, JwtConfig, OidcConfig};
use crate::domain::User;
use crate::error::Error;
use crate::jwt::{self, ClaimRules, Verifier};
use crate::outbound::{self, HttpClient};
use crate::tokens::TokenHash;
use crate::virtual_proxies::PerProxy;

/// The discovery document is read again after this long (a failed re-read keeps the old one).
const REDISCOVER_AFTER: Duration = Duration::from_secs(3600);
/// After a failed discovery with nothing cached, logins fail fast for this long instead of
/// each waiting on an unreachable provider.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);
/// Shortest time between two JWKS re-reads on an unknown `kid`.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Longest ID or logout token looked at.
const MAX_TOKEN_LEN: usize = 16 * 1024;

const UNREACHABLE: &str = "the identity provider cannot be reached; try again shortly";

/// Longest the provider's part of one OpenID call may take (discovery, token request,
/// keys, userinfo together): under the node's 5 s call timeout, so that a slow provider is
/// answered as such and never looks to the node like a control-plane replica that is down.
pub const PROVIDER_BUDGET: Duration = Duration::from_secs(4);

/// Runs the provider's part of a call within [`PROVIDER_BUDGET`].
pub async fn within_budget<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(PROVIDER_BUDGET, work)
        .await
        .unwrap_or(Err(Error::ProviderUnavailable(
            "the identity provider is too slow; try again shortly",
        )))
}

/// The values one login sends to the provider and expects back, derived from its state and
/// the browser's binding cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSecrets {
    pub code_verifier: String,
    pub code_challenge: String,
    pub nonce: String,
}

impl LoginSecrets {
    pub fn derive(binding: &str, state: &str) -> Self {
        let derive = |label: &str| {
            URL_SAFE_NO_PAD.encode(
                Sha256::new()
                    .chain_update(label.as_bytes())
                    .chain_update(b"\0")
                    .chain_update(binding.as_bytes())
                    .chain_update(b"\0")
                    .chain_update(state.as_bytes())
                    .finalize(),
            )
        };
        // 43 characters of base64url: a valid RFC 7636 verifier.
        let code_verifier = derive("gatehouse-oidc-pkce");
        let code_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
        Self {
            code_verifier,
            code_challenge,
            nonce: derive("gatehouse-oidc-nonce"),
        }
    }
}

/// The key under which a virtual proxy's sessions of one provider subject (`kind` "sub") or
/// provider session (`kind` "sid") are linked, for back-channel logout.
pub fn link_key(virtual_proxy: &str, issuer: &str, kind: &str, value: &str) -> TokenHash {
    TokenHash::of(&format!(
        "gatehouse-oidc-link\0{virtual_proxy}\0{issuer}\0{kind}\0{value}"
    ))
}

/// What the token endpoint answered.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
}

/// One provider per virtual proxy, rebuilt when that proxy's `oidc` configuration changes.
#[derive(Debug, Default)]
pub struct OidcProviders(PerProxy<OidcConfig, Provider>);

impl OidcProviders {
    pub fn provider(&self, prefix: &str, config: &OidcConfig) -> Result<Arc<Provider>, Error> {
        self.0.get(prefix, config, |config| {
            Provider::new(config).map_err(|detail| {
                tracing::error!(prefix, %detail, "OpenID Connect client cannot be set up");
                Error::ProviderUnavailable("OpenID Connect login is not available right now")
            })
        })
    }
}

struct Discovered {
    metadata: Metadata,
    verifier: Arc<Verifier>,
    read_at: Instant,
}

#[derive(Default)]
struct DiscoveryState {
    current: Option<Arc<Discovered>>,
    failed_at: Option<Instant>,
}

pub struct Provider {
    config: OidcConfig,
    client: HttpClient,
    secret: Option<String>,
    discovery: Mutex<DiscoveryState>,
    /// Held while reading the discovery document, so concurrent logins read it once.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    fn new(config: OidcConfig) -> Result<Self, String> {
        let client = outbound::client(config.ca_file.as_deref())?;
        let secret = match (config.client_authentication(), &config.client_secret_file) {
            (ClientAuthentication::None, _) | (_, None) => None,
            (_, Some(path)) => Some(crate::config::read_oidc_secret(path)?),
        };
        Ok(Self {
            config,
            client,
            secret,
            discovery: Mutex::new(DiscoveryState::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The provider's metadata and ID token verifier: read on first use, re-read hourly.
    /// While one caller re-reads a stale document, the others use it; after a failed read,
    /// nobody tries again for [`DISCOVERY_RETRY`] (a stale document is used meanwhile), so an
    /// unreachable provider costs one wait, not one per login.
    async fn discovered(&self) -> Result<Arc<Discovered>, Error> {
        if let Some(answer) = self.cached_answer() {
            return answer;
        }
        let _reading = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => match self.discovery_state().0 {
                // Someone is re-reading: the stale document serves meanwhile.
                Some(current) => return Ok(current),
                // Wait for the first read.
                None => self.refreshing.lock().await,
            },
        };
        // Another caller may have read (or failed to read) the document meanwhile.
        if let Some(answer) = self.cached_answer() {
            return answer;
        }
        let fetched = discovery::fetch(&self.client, &self.config).await;
        let mut state = self
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(metadata) => {
                let verifier = match &state.current {
                    // Same keys: keep the verifier and the keys it has read.
                    Some(current) if current.metadata.jwks_uri == metadata.jwks_uri => {
                        current.verifier.clone()
                    }
                    _ => match self.verifier(&metadata) {
                        Ok(verifier) => Arc::new(verifier),
                        Err(detail) => {
                            tracing::error!(issuer = %self.config.issuer, %detail, "cannot verify the provider's tokens");
                            state.failed_at = Some(Instant::now());
                            return Err(Error::ProviderUnavailable(UNREACHABLE));
                        }
                    },
                };
                let discovered = Arc::new(Discovered {
                    metadata,
                    verifier,
                    read_at: Instant::now(),
                });
                state.current = Some(discovered.clone());
                state.failed_at = None;
                Ok(discovered)
            }
            Err(detail) => {
                tracing::warn!(issuer = %self.config.issuer, %detail, "OpenID discovery failed");
                state.failed_at = Some(Instant::now());
                state
                    .current
                    .clone()
                    .ok_or(Error::ProviderUnavailable(UNREACHABLE))
            }
        }
    }

    /// The answer the cached state gives without reading the document: `None` when it must
    /// be read (nothing yet, or stale, and no failure in the last [`DISCOVERY_RETRY`]).
    fn cached_answer(&self) -> Option<Result<Arc<Discovered>, Error>> {
        let (current, failed_at) = self.discovery_state();
        let recently_failed = failed_at.is_some_and(|at| at.elapsed() < DISCOVERY_RETRY);
        match current {
            Some(current) if recently_failed || current.read_at.elapsed() < REDISCOVER_AFTER => {
                Some(Ok(current))
            }
            None if recently_failed => Some(Err(Error::ProviderUnavailable(UNREACHABLE))),
            _ => None,
        }
    }

    fn discovery_state(&self) -> (Option<Arc<Discovered>>, Option<Instant>) {
        let state = self
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (state.current.clone(), state.failed_at)
    }

    /// A verifier for tokens this provider signs for this client.
    fn verifier(&self, metadata: &Metadata) -> Result<Verifier, String> {
        let config = JwtConfig {
            public_keys: Vec::new(),
            jwks_file: None,
            jwks_url: Some(metadata.jwks_uri.clone()),
            // The client below already trusts `oidc.ca_file`.
            ca_file: None,
            jwks_min_refresh: JWKS_MIN_REFRESH,
            algorithms: self.config.algorithms.clone(),
            issuers: vec![self.config.issuer.clone()],
            audiences: vec![self.config.client_id.clone()],
            leeway: self.config.leeway,
            user_id_claim: self.config.user_id_claim.clone(),
            user_directory_claim: self.config.user_directory_claim.clone(),
            user_directory: self.config.user_directory.clone(),
            attributes: self.config.attributes.clone(),
        };
        Verifier::with_client(config, Some(self.client.clone()))
    }

    /// The provider's authorization URL for one login.
    pub async fn authorization_uri(
        &self,
        redirect_uri: &str,
        state: &str,
        secrets: &LoginSecrets,
    ) -> Result<String, Error> {
        let discovered = self.discovered().await?;
        let scope = self.config.scopes.join(" ");
        let mut fields = vec![
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", &scope),
            ("state", state),
            ("nonce", &secrets.nonce),
            ("code_challenge", &secrets.code_challenge),
            ("code_challenge_method", "S256"),
        ];
        fields.extend(
            self.config
                .authorization_params
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let query = outbound::form(&fields);
        let endpoint = &discovered.metadata.authorization_endpoint;
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Ok(format!("{endpoint}{separator}{query}"))
    }

    /// Checks the callback's `iss` (RFC 9207): a response that names another issuer came
    /// from another provider (a mix-up attack); a provider that promises `iss` must send it.
    pub async fn check_response_issuer(&self, iss: &str) -> Result<(), Error> {
        let discovered = self.discovered().await?;
        let required = discovered
            .metadata
            .authorization_response_iss_parameter_supported;
        if (iss.is_empty() && required) || (!iss.is_empty() && iss != self.config.issuer) {
            // The value comes from the browser: quoted and cut short in the log.
            let named: String = iss.chars().take(200).collect();
            tracing::info!(iss = ?named, "OpenID callback from another issuer");
            return Err(Error::Unauthenticated(
                "the login came back from another identity provider",
            ));
        }
        Ok(())
    }

    /// Sends a request to the provider's `endpoint` (named for the log). A failure to get an
    /// answer, or a 5xx, is the provider being unavailable; any other answer is returned.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        endpoint: &'static str,
    ) -> Result<outbound::Reply, Error> {
        let reply = outbound::send(&self.client, request)
            .await
            .map_err(|detail| {
                tracing::warn!(%detail, endpoint, "request to the identity provider failed");
                Error::ProviderUnavailable(UNREACHABLE)
            })?;
        if reply.status.is_server_error() {
            tracing::warn!(status = %reply.status, endpoint, "the identity provider failed");
            return Err(Error::ProviderUnavailable(UNREACHABLE));
        }
        Ok(reply)
    }

    /// Exchanges an authorization code at the token endpoint.
    pub async fn exchange(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<TokenResponse, Error> {
        let discovered = self.discovered().await?;
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let authentication = self.config.client_authentication();
        let secret = self.secret.as_deref().unwrap_or_default();
        if authentication != ClientAuthentication::ClientSecretBasic {
            fields.push(("client_id", &self.config.client_id));
        }
        if authentication == ClientAuthentication::ClientSecretPost {
            fields.push(("client_secret", secret));
        }
        let mut request = Request::post(&discovered.metadata.token_endpoint)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        if authentication == ClientAuthentication::ClientSecretBasic {
            // RFC 6749, 2.3.1: both parts form-encoded before Basic encoding.
            let credentials = format!(
                "{}:{}",
                outbound::encode(&self.config.client_id),
                outbound::encode(secret)
            );
            request = request.header(
                AUTHORIZATION,
                format!("Basic {}", STANDARD.encode(credentials)),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(outbound::form(&fields))))
            .map_err(|_| Error::ProviderUnavailable(UNREACHABLE))?;
        let reply = self.send(request, "token").await?;
        if !reply.status.is_success() {
            // invalid_grant for a used, expired or stolen code, or a PKCE mismatch.
            let error = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|body| body.get("error").and_then(Value::as_str).map(str::to_owned));
            tracing::info!(status = %reply.status, ?error, "the provider refused the authorization code");
            return Err(Error::Unauthenticated(
                "the identity provider did not accept the login; start again",
            ));
        }
        serde_json::from_slice(&reply.body).map_err(|error| {
            tracing::warn!(%error, "the token response is not valid");
            Error::Unauthenticated("the identity provider's answer is not valid")
        })
    }

    /// The claims of an ID token that is valid for this client and this login's nonce.
    pub async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: &str,
        now: SystemTime,
    ) -> Result<Map<String, Value>, Error> {
        let invalid = Error::Unauthenticated("the identity provider's ID token is not valid");
        if id_token.len() > MAX_TOKEN_LEN {
            return Err(invalid);
        }
        let discovered = self.discovered().await?;
        let claims = discovered
            .verifier
            .claims(id_token)
            .await
            .map_err(|error| match error {
                // The provider's keys cannot be read: not the token's fault.
                Error::ProviderUnavailable(_) => error,
                error => {
                    tracing::info!(%error, "ID token refused");
                    Error::Unauthenticated("the identity provider's ID token is not valid")
                }
            })?;
        claims::check_id_token(
            &claims,
            &self.config.client_id,
            nonce,
            now,
            self.config.leeway,
        )
        .map_err(|reason| {
            tracing::info!(reason, "ID token refused");
            invalid
        })?;
        Ok(claims)
    }

    /// The userinfo endpoint's claims for the user of `access_token`, when the configuration
    /// asks for them and the provider has the endpoint; they must be about `subject`.
    pub async fn userinfo(
        &self,
        access_token: Option<&str>,
        subject: &str,
    ) -> Result<Option<Map<String, Value>>, Error> {
        let discovered = self.discovered().await?;
        let (true, Some(endpoint), Some(access_token)) = (
            self.config.userinfo,
            &discovered.metadata.userinfo_endpoint,
            access_token,
        ) else {
            return Ok(None);
        };
        let request = Request::get(endpoint)
            .header(AUTHORIZATION, format!("Bearer {access_token}"))
            .header(ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|_| Error::ProviderUnavailable(UNREACHABLE))?;
        let reply = self.send(request, "userinfo").await?;
        if !reply.status.is_success() {
            tracing::warn!(status = %reply.status, "userinfo endpoint refused the access token");
            return Err(Error::Unauthenticated(
                "the identity provider did not accept the login; start again",
            ));
        }
        let claims: Map<String, Value> = serde_json::from_slice(&reply.body).map_err(|error| {
            tracing::warn!(%error, "userinfo answer is not a JSON object (signed userinfo is not supported)");
            Error::Unauthenticated("the identity provider's answer is not valid")
        })?;
        // Core 1.0, 5.3.2: claims about someone else must not be used.
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            tracing::warn!("userinfo is about another subject");
            return Err(Error::Unauthenticated(
                "the identity provider's answer is not valid",
            ));
        }
        Ok(Some(claims))
    }

    /// The user the claims name, with the groups claim as `Group` attributes.
    pub fn user(&self, claims: &Map<String, Value>) -> Result<User, Error> {
        let mut attributes = self.config.attributes.clone();
        if !self.config.groups_claim.is_empty() {
            attributes
                .entry("Group".to_owned())
                .or_insert_with(|| self.config.groups_claim.clone());
        }
        let rules = ClaimRules {
            user_id_claim: &self.config.user_id_claim,
            user_directory_claim: self.config.user_directory_claim.as_deref(),
            user_directory: self.config.user_directory.as_deref(),
            attributes: &attributes,
        };
        jwt::user_from_claims(claims, &rules).map_err(|reason| {
            tracing::info!(reason, "OpenID claims name no valid user");
            Error::Unauthenticated("the identity provider's answer names no valid user")
        })
    }

    /// Whom a back-channel logout token logs out; `InvalidArgument` when it is not valid.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<LogoutTarget, Error> {
        let invalid = || Error::invalid("the logout token is not valid");
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let discovered = self.discovered().await?;
        let claims = discovered
            .verifier
            .claims(token)
            .await
            .map_err(|error| match error {
                Error::ProviderUnavailable(_) => error,
                error => {
                    tracing::info!(%error, "logout token refused");
                    invalid()
                }
            })?;
        claims::check_logout_token(&claims, now, self.config.leeway).map_err(|reason| {
            tracing::info!(reason, "logout token refused");
            invalid()
        })
    }

    /// Where to send a browser to end its provider session, if the provider has an
    /// end-session endpoint and the redirect is on.
    pub async fn end_session_uri(&self) -> Result<Option<String>, Error> {
        if !self.config.end_session_redirect {
            return Ok(None);
        }
        let discovered = self.discovered().await?;
        let Some(endpoint) = &discovered.metadata.end_session_endpoint else {
            return Ok(None);
        };
        let mut fields = vec![("client_id", self.config.client_id.as_str())];
        if let Some(uri) = &self.config.post_logout_redirect_uri {
            fields.push(("post_logout_redirect_uri", uri));
        }
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Ok(Some(format!(
            "{endpoint}{separator}{}",
            outbound::form(&fields)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_secrets_depend_on_binding_and_state() {
        let secrets = LoginSecrets::derive("binding", "state");
        assert_eq!(secrets, LoginSecrets::derive("binding", "state"));
        assert_ne!(secrets, LoginSecrets::derive("binding", "state2"));
        assert_ne!(secrets, LoginSecrets::derive("binding2", "state"));
        assert_eq!(secrets.code_verifier.len(), 43);
        assert_ne!(secrets.nonce, secrets.code_verifier);
        assert_eq!(
            secrets.code_challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(secrets.code_verifier.as_bytes()))
        );
    }

    #[test]
    fn link_keys_separate_proxies_issuers_and_kinds() {
        let key = link_key("app", "https://idp", "sid", "x");
        assert_eq!(key, link_key("app", "https://idp", "sid", "x"));
        assert_ne!(key, link_key("other", "https://idp", "sid", "x"));
        assert_ne!(key, link_key("app", "https://idp2", "sid", "x"));
        assert_ne!(key, link_key("app", "https://idp", "sub", "x"));
    }
}
