//! The OpenID Connect login flow's rules: starting a login, finishing it at the callback,
//! back-channel logout and the end-session redirect. The protocol work is in
//! [`crate::oidc`]; this module decides what is stored and which sessions start or end.

use std::time::Duration;

use super::{Authority, IssuedSession};
use crate::audit::{Actor, AuditEvent, Method};
use crate::config::OidcConfig;
use crate::domain::{ClientInfo, LoginClaim, OidcLogin, RevocationReason};
use crate::error::Error;
use crate::oidc::{self, LoginSecrets, Provider};
use crate::tokens::{self, TokenHash};

/// Longest target path remembered.
const MAX_TARGET_LEN: usize = 4096;
/// Longest a used logout token's id is remembered (its `exp` is normally minutes away).
const MAX_LOGOUT_TOKEN_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Length of a binding cookie's value (256 random bits, base64url).
const BINDING_LEN: usize = 43;

const UNKNOWN_LOGIN: &str = "the login is unknown, expired or already used; start again";

/// A login the browser should continue at the provider.
#[derive(Debug, Clone)]
pub struct OidcLoginStarted {
    pub authorization_uri: String,
    /// The binding cookie's value.
    pub binding: String,
    pub login_timeout: Duration,
}

impl Authority {
    fn oidc_provider(&self, virtual_proxy: &str) -> Result<std::sync::Arc<Provider>, Error> {
        let proxies = self.virtual_proxies();
        let config = proxies
            .get(virtual_proxy)?
            .oidc
            .as_ref()
            .ok_or(Error::PermissionDenied(
                "this virtual proxy does not use OpenID Connect",
            ))?;
        self.oidc.provider(virtual_proxy, config)
    }

    /// Starts a login: records a fresh state with where the browser is going, and returns
    /// the provider URL to send it to. `binding` is the browser's binding cookie, kept when
    /// it is well formed so that logins started in two tabs both finish.
    pub async fn oidc_begin(
        &self,
        virtual_proxy: &str,
        redirect_uri: &str,
        target: &str,
        binding: &str,
    ) -> Result<OidcLoginStarted, Error> {
        let provider = self.oidc_provider(virtual_proxy)?;
        let config = provider.config();
        let redirect_uri = match &config.redirect_uri {
            Some(configured) => configured.clone(),
            None => {
                check_redirect_uri(virtual_proxy, redirect_uri)?;
                // The provider sends the code to this URL: it must be one of our origins.
                let proxies = self.virtual_proxies();
                let proxy = proxies.get(virtual_proxy)?;
                if !gatehouse_proto::origin::url_is_admitted(
                    redirect_uri,
                    &proxy.public_origins,
                    &[],
                ) {
                    return Err(Error::invalid(
                        "redirect_uri is not on a public origin of this virtual proxy",
                    ));
                }
                redirect_uri.to_owned()
            }
        };
        check_target(target)?;
        let binding = if is_binding(binding) {
            binding.to_owned()
        } else {
            tokens::new_session_token()
        };
        let state = tokens::new_session_token();
        let secrets = LoginSecrets::derive(&binding, &state);
        let authorization_uri =
            oidc::within_budget(provider.authorization_uri(&redirect_uri, &state, &secrets))
                .await?;
        let login = OidcLogin {
            virtual_proxy: virtual_proxy.to_owned(),
            binding_hash: TokenHash::of(&binding).to_text(),
            redirect_uri,
            target: target.to_owned(),
        };
        self.store
            .put_oidc_login(&TokenHash::of(&state), &login, config.login_timeout)
            .await?;
        Ok(OidcLoginStarted {
            authorization_uri,
            binding,
            login_timeout: config.login_timeout,
        })
    }

    /// Finishes a login: the state is consumed (a callback URL works once), the browser must
    /// hold the binding cookie the login started with, the response must come from this
    /// provider (`iss`, when it sends one), the provider must accept the code
    /// with this login's PKCE verifier, and the ID token must be valid and carry this
    /// login's nonce. Returns the new session and the path to send the browser to.
    pub async fn oidc_callback(
        &self,
        virtual_proxy: &str,
        state: &str,
        code: &str,
        binding: &str,
        iss: &str,
        client: ClientInfo,
    ) -> Result<(IssuedSession, String), Error> {
        let outcome = self
            .oidc_session(virtual_proxy, state, code, binding, iss, client.clone())
            .await;
        let issued = outcome.as_ref().map(|(issued, _)| issued);
        self.audit_login(Method::Oidc, virtual_proxy, None, &client, issued);
        outcome
    }

    async fn oidc_session(
        &self,
        virtual_proxy: &str,
        state: &str,
        code: &str,
        binding: &str,
        iss: &str,
        client: ClientInfo,
    ) -> Result<(IssuedSession, String), Error> {
        let provider = self.oidc_provider(virtual_proxy)?;
        if state.is_empty() || state.len() > 512 || code.is_empty() || code.len() > 4096 {
            return Err(Error::invalid("state and code are required"));
        }
        // The login is spent only by the browser that started it: a callback URL read from a
        // log or a Referer and opened elsewhere must not end the real login.
        let binding_hash = if is_binding(binding) {
            TokenHash::of(binding).to_text()
        } else {
            String::new()
        };
        let login = match self
            .store
            .claim_login(&TokenHash::of(state), &binding_hash)
            .await?
        {
            LoginClaim::Taken(login) if login.virtual_proxy == virtual_proxy => login,
            LoginClaim::Taken(_) | LoginClaim::Unknown => {
                return Err(Error::Unauthenticated(UNKNOWN_LOGIN));
            }
            LoginClaim::OtherBrowser => {
                // Someone else's callback URL (login CSRF), or a browser that lost the cookie.
                tracing::info!(
                    virtual_proxy,
                    "OpenID callback from a browser that did not start the login"
                );
                return Err(Error::Unauthenticated(
                    "the login was started in another browser; start again",
                ));
            }
        };
        let secrets = LoginSecrets::derive(binding, state);
        // The provider's part has a time budget; the store's part (the session) does not, so
        // a session is never created and then abandoned by a cut-off caller.
        let claims = oidc::within_budget(async {
            provider.check_response_issuer(iss).await?;
            let tokens = provider
                .exchange(code, &login.redirect_uri, &secrets.code_verifier)
                .await?;
            let id_token = tokens.id_token.as_deref().ok_or(Error::Unauthenticated(
                "the identity provider sent no ID token",
            ))?;
            let mut claims = provider
                .verify_id_token(id_token, &secrets.nonce, self.clock.now())
                .await?;
            let subject = claims
                .get("sub")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(userinfo) = provider
                .userinfo(tokens.access_token.as_deref(), &subject)
                .await?
            {
                // The signed ID token wins where both say something.
                for (name, value) in userinfo {
                    claims.entry(name).or_insert(value);
                }
            }
            Ok(claims)
        })
        .await?;
        let user = provider.user(&claims)?;
        let issued = self
            .start_session(virtual_proxy, user, tokens::new_session_token(), client)
            .await?;
        self.link_provider_session(provider.config(), &issued, &claims)
            .await;
        Ok((issued, login.target))
    }

    /// Records which provider subject and session this session came from, so a
    /// back-channel logout can find it. A failure here is logged, not fatal: the user is
    /// logged in, and only the provider's logout would miss this session.
    async fn link_provider_session(
        &self,
        config: &OidcConfig,
        issued: &IssuedSession,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) {
        let session = &issued.session;
        let ttl = session
            .absolute_expiry
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        for kind in ["sub", "sid"] {
            let Some(value) = claims.get(kind).and_then(serde_json::Value::as_str) else {
                continue;
            };
            let key = oidc::link_key(&session.virtual_proxy, &config.issuer, kind, value);
            if let Err(error) = self.store.link_session(&key, &session.handle, ttl).await {
                tracing::error!(%error, kind, "cannot record the provider session of a login; back-channel logout will miss it");
            }
        }
    }

    /// Back-channel logout: ends the sessions of the provider session (`sid`) or, without
    /// one, of the subject (`sub`) the logout token names. Returns how many ended.
    pub async fn oidc_backchannel_logout(
        &self,
        virtual_proxy: &str,
        logout_token: &str,
    ) -> Result<u32, Error> {
        let provider = self.oidc_provider(virtual_proxy)?;
        let now = self.clock.now();
        let target = oidc::within_budget(provider.verify_logout_token(logout_token, now)).await?;
        let issuer = &provider.config().issuer;
        // A logout token works once (Back-Channel Logout 1.0, 2.6): a captured one replayed
        // must not end sessions started after it. It is marked used only once its sessions
        // have ended, so a provider retrying after a failure here is not refused.
        let used = TokenHash::of(&format!(
            "gatehouse-oidc-logout\0{virtual_proxy}\0{issuer}\0{}",
            target.jti
        ));
        if self.store.jwt_remembered(&used).await? {
            return Err(Error::invalid("the logout token was used already"));
        }
        let key = match (&target.sid, &target.sub) {
            (Some(sid), _) => oidc::link_key(virtual_proxy, issuer, "sid", sid),
            (None, Some(sub)) => oidc::link_key(virtual_proxy, issuer, "sub", sub),
            (None, None) => return Err(Error::invalid("the logout token is not valid")),
        };
        let mut ended = 0;
        for handle in self.store.linked_sessions(&key).await? {
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
            }
            ended += u32::from(deleted.is_some());
        }
        // Kept until the token expires (with leeway), and never more than a day whatever
        // its `exp` says.
        let remember = target
            .expires
            .duration_since(now)
            .unwrap_or_default()
            .saturating_add(provider.config().leeway)
            .clamp(Duration::from_secs(1), MAX_LOGOUT_TOKEN_MEMORY);
        self.store.remember_jwt(&used, remember).await?;
        tracing::info!(virtual_proxy, ended, "back-channel logout");
        Ok(ended)
    }

    /// The provider's end-session URL for a browser that logged out here, if any.
    pub async fn oidc_end_session(&self, virtual_proxy: &str) -> Result<Option<String>, Error> {
        oidc::within_budget(self.oidc_provider(virtual_proxy)?.end_session_uri()).await
    }
}

/// Whether `binding` is a value this module could have set as a binding cookie.
pub fn is_binding(binding: &str) -> bool {
    binding.len() == BINDING_LEN
        && binding
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// A path on this site: one leading `/`, never `//` or `/\` (which browsers read as another
/// host), no control characters.
pub fn check_target(target: &str) -> Result<(), Error> {
    let local = target.starts_with('/')
        && !target.starts_with("//")
        && !target.starts_with("/\\")
        && target.len() <= MAX_TARGET_LEN
        && !target.chars().any(char::is_control);
    if local {
        Ok(())
    } else {
        Err(Error::invalid(
            "the login target must be a path on this site",
        ))
    }
}

/// Checks that `uri` is the node's own callback URL for this virtual proxy.
pub fn check_redirect_uri(virtual_proxy: &str, uri: &str) -> Result<(), Error> {
    let fits = uri.parse::<http::Uri>().is_ok_and(|parsed| {
        matches!(parsed.scheme_str(), Some("http" | "https"))
            && parsed.host().is_some_and(|host| !host.is_empty())
            && parsed.path() == OidcConfig::callback_path(virtual_proxy)
            && parsed.query().is_none()
            && !uri.contains('@')
    });
    if fits {
        Ok(())
    } else {
        Err(Error::invalid(
            "redirect_uri must be this virtual proxy's callback URL",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_targets() {
        for good in ["/", "/app/hub?x=1", "/app/a%20b"] {
            assert!(check_target(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "app",
            "//evil.example.com/",
            "/\\evil.example.com",
            "https://x/",
            "/a\nb",
        ] {
            assert!(check_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_callback_must_be_this_proxys() {
        assert!(check_redirect_uri("app", "https://gh.example.com/app/oidc/callback").is_ok());
        assert!(check_redirect_uri("", "http://127.0.0.1:8080/oidc/callback").is_ok());
        for bad in [
            "https://gh.example.com/other/oidc/callback",
            "https://gh.example.com/app/oidc/callback?x=1",
            "https://user@gh.example.com/app/oidc/callback",
            "ftp://gh.example.com/app/oidc/callback",
        ] {
            assert!(check_redirect_uri("app", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bindings_are_43_base64url_characters() {
        assert!(is_binding(&tokens::new_session_token()));
        assert!(!is_binding("short"));
        assert!(!is_binding(&"=".repeat(43)));
    }
}
