//! `[virtual_proxies.oidc]`: OpenID Connect login through one provider. See AUTH-OIDC.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::login_methods::{TokenRules, validate_token_rules};

/// How the control plane authenticates to the provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthentication {
    /// HTTP Basic with the client id and secret (the OpenID default).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: PKCE alone protects the code.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer identifier; its discovery document is
    /// `{issuer}/.well-known/openid-configuration`. https, or http on a loopback host.
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret (read by the control plane only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Default: `client_secret_basic` with a secret, `none` without one.
    #[serde(default)]
    pub client_authentication: Option<ClientAuthentication>,
    /// The callback URL registered at the provider. Default: the address the browser used,
    /// `{scheme}://{host}/{prefix}/oidc/callback` (the provider only accepts registered ones).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Extra parameters of the authorization request, such as `prompt = "select_account"`,
    /// `acr_values` or a provider's `domain_hint`; never one Gatehouse sets itself.
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Accepted ID token `alg` values (public-key algorithms only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on the ID token's `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// How long a browser may take at the provider before its login is forgotten.
    #[serde(default = "default_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Merge the claims of the userinfo endpoint into the ID token's (when it has one).
    #[serde(default = "default_true")]
    pub userinfo: bool,
    #[serde(default = "default_user_id_claim")]
    pub user_id_claim: String,
    #[serde(default)]
    pub user_directory_claim: Option<String>,
    #[serde(default)]
    pub user_directory: Option<String>,
    /// Attribute name → claim; an array claim gives one attribute per element.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Claim whose values become `Group` attributes; empty: none.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// After `/{prefix}/oidc/logout`, send the browser to the provider's end-session endpoint.
    #[serde(default = "default_true")]
    pub end_session_redirect: bool,
    /// Where the provider sends the browser after its logout (must be registered there).
    #[serde(default)]
    pub post_logout_redirect_uri: Option<String>,
    /// PEM file of extra CA certificates to trust for the provider, besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl OidcConfig {
    pub fn client_authentication(&self) -> ClientAuthentication {
        self.client_authentication
            .unwrap_or(if self.client_secret_file.is_some() {
                ClientAuthentication::ClientSecretBasic
            } else {
                ClientAuthentication::None
            })
    }

    /// The callback path on a virtual proxy with this prefix.
    pub fn callback_path(prefix: &str) -> String {
        if prefix.is_empty() {
            "/oidc/callback".to_owned()
        } else {
            format!("/{prefix}/oidc/callback")
        }
    }

    /// Checks everything that can be checked without the provider; `prefix` is the virtual
    /// proxy's.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let issuer: http::Uri = self
            .issuer
            .parse()
            .map_err(|_| "oidc.issuer must be an absolute URL".to_owned())?;
        if !is_https_or_loopback(&issuer) {
            return Err(
                "oidc.issuer must be an https URL (http only on a loopback host)".to_owned(),
            );
        }
        if issuer.query().is_some() || self.issuer.contains('#') {
            return Err("oidc.issuer must not have a query or fragment".to_owned());
        }
        if self.client_id.trim().is_empty() {
            return Err("oidc.client_id must not be empty".to_owned());
        }
        match (self.client_authentication(), &self.client_secret_file) {
            (ClientAuthentication::None, None) => {}
            (ClientAuthentication::None, Some(_)) => {
                return Err(
                    "oidc.client_secret_file is set but client_authentication is \"none\": remove one"
                        .to_owned(),
                );
            }
            (_, None) => {
                return Err(
                    "oidc.client_secret_file is required unless client_authentication = \"none\""
                        .to_owned(),
                );
            }
            (_, Some(path)) => {
                read_secret(path).map_err(|error| format!("oidc.client_secret_file: {error}"))?;
            }
        }
        if let Some(uri) = &self.redirect_uri {
            let parsed: http::Uri = uri
                .parse()
                .map_err(|_| "oidc.redirect_uri must be an absolute URL".to_owned())?;
            if !matches!(parsed.scheme_str(), Some("http" | "https"))
                || parsed.host().is_none()
                || parsed.path() != Self::callback_path(prefix)
                || parsed.query().is_some()
            {
                return Err(format!(
                    "oidc.redirect_uri must be an absolute http(s) URL with the path {} and no query",
                    Self::callback_path(prefix)
                ));
            }
        }
        if let Some(uri) = &self.post_logout_redirect_uri
            && !uri
                .parse::<http::Uri>()
                .is_ok_and(|parsed| matches!(parsed.scheme_str(), Some("http" | "https")))
        {
            return Err("oidc.post_logout_redirect_uri must be an absolute http(s) URL".to_owned());
        }
        if let Some(name) = self
            .authorization_params
            .keys()
            .find(|name| RESERVED_PARAMS.contains(&name.as_str()) || name.is_empty())
        {
            return Err(format!(
                "oidc.authorization_params: {name:?} is set by Gatehouse and cannot be configured"
            ));
        }
        if !self.scopes.iter().any(|scope| scope == "openid") {
            return Err("oidc.scopes must include \"openid\"".to_owned());
        }
        if let Some(scope) = self
            .scopes
            .iter()
            .find(|scope| scope.is_empty() || !scope.chars().all(is_scope_char))
        {
            return Err(format!("oidc.scopes: {scope:?} is not a scope"));
        }
        validate_token_rules(
            "oidc",
            &TokenRules {
                algorithms: &self.algorithms,
                leeway: self.leeway,
                user_id_claim: &self.user_id_claim,
                user_directory: self.user_directory.as_deref(),
                user_directory_claim: self.user_directory_claim.as_deref(),
            },
        )?;
        if self.login_timeout < Duration::from_secs(10)
            || self.login_timeout > Duration::from_secs(3600)
        {
            return Err("oidc.login_timeout must be between 10s and 1h".to_owned());
        }
        if let Some(path) = &self.ca_file {
            read_ca_file(path).map_err(|error| format!("oidc.ca_file: {error}"))?;
        }
        Ok(())
    }
}

/// Authorization-request parameters Gatehouse sets itself (or must never send).
const RESERVED_PARAMS: [&str; 11] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "request",
    "request_uri",
];

/// The client secret in a file, without surrounding whitespace (a trailing newline is
/// usual in secret files).
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

/// The certificates of a PEM file of CA certificates; at least one.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

/// https anywhere, plain http only to this machine (a provider under test).
pub fn is_https_or_loopback(uri: &http::Uri) -> bool {
    match uri.scheme_str() {
        Some("https") => uri.host().is_some_and(|host| !host.is_empty()),
        Some("http") => uri.host().is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// RFC 6749 scope-token characters.
fn is_scope_char(c: char) -> bool {
    c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c)
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(str::to_owned).to_vec()
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_login_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_true() -> bool {
    true
}

fn default_user_id_claim() -> String {
    "sub".to_owned()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<OidcConfig, String> {
        let text = format!(
            "issuer = \"https://idp.example.com\"\nclient_id = \"gatehouse\"\n\
             user_directory = \"IDP\"\n{extra}"
        );
        let config: OidcConfig = toml::from_str(&text).map_err(|error| error.to_string())?;
        config.validate("sales").map(|()| config)
    }

    #[test]
    fn a_minimal_public_client_is_accepted_with_safe_defaults() {
        let config = config("").unwrap();
        assert_eq!(config.scopes, ["openid", "profile", "email"]);
        assert_eq!(config.algorithms, ["RS256"]);
        assert_eq!(config.login_timeout, Duration::from_secs(600));
        assert!(config.userinfo && config.end_session_redirect);
        assert_eq!(config.groups_claim, "groups");
    }

    #[test]
    fn plain_http_issuers_are_only_for_loopback() {
        for issuer in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            let uri: http::Uri = issuer.parse().unwrap();
            assert!(is_https_or_loopback(&uri), "{issuer}");
        }
        for issuer in [
            "http://idp.example.com",
            "http://10.0.0.1",
            "ftp://idp.example.com",
        ] {
            let uri: http::Uri = issuer.parse().unwrap();
            assert!(!is_https_or_loopback(&uri), "{issuer}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let refused = |extra: &str| config(extra).unwrap_err();
        assert!(refused("scopes = [\"email\"]").contains("openid"));
        assert!(refused("algorithms = [\"HS256\"]").contains("HS256"));
        assert!(refused("algorithms = [\"none\"]").contains("none"));
        assert!(
            refused("redirect_uri = \"https://gh.example.com/other/oidc/callback\"")
                .contains("/sales/oidc/callback")
        );
        assert!(refused("leeway = \"1h\"").contains("leeway"));
        assert!(refused("login_timeout = \"1s\"").contains("login_timeout"));
        assert!(
            refused("client_authentication = \"client_secret_basic\"")
                .contains("client_secret_file")
        );
        config("redirect_uri = \"https://gh.example.com/sales/oidc/callback\"").unwrap();
        assert!(
            refused("client_authentication = \"none\"\nclient_secret_file = \"/etc/hostname\"")
                .contains("remove one")
        );
        assert!(refused("authorization_params = { state = \"x\" }").contains("state"));
        assert!(
            refused("authorization_params = { response_mode = \"form_post\" }")
                .contains("response_mode")
        );
        config("authorization_params = { prompt = \"select_account\" }").unwrap();
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("gatehouse-oidc-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "just text\n").unwrap();
        let error = config(&format!("ca_file = {:?}", not_pem.display().to_string())).unwrap_err();
        assert!(error.contains("no PEM certificate"), "{error}");
        let missing = config("ca_file = \"/nonexistent/ca.pem\"").unwrap_err();
        assert!(missing.contains("ca_file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
