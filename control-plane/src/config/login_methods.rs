//! How a virtual proxy may log users in besides tickets: JWT bearer tokens, a trusted header,
//! Windows authentication, and the token rules JWT and OpenID Connect share; what each
//! requires of its configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_proto::identity_headers;
use serde::Deserialize;

use super::syntax::{is_absolute_http_uri, is_token};

/// Headers that mean something else already; trusting them as identity would be a hole.
const UNTRUSTABLE_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "forwarded",
    "x-forwarded-for",
];

/// JWT bearer authentication: which keys sign acceptable tokens, which claims they must hold
/// and how claims name the user. Keys live in the control plane only (nodes ask it to verify).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// PEM files, each a public key (`PUBLIC KEY`, `RSA PUBLIC KEY`) or a certificate.
    #[serde(default)]
    pub public_keys: Vec<std::path::PathBuf>,
    /// A JWKS document (`{"keys": [...]}`), re-read when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// A JWKS URL (http or https, system roots), fetched on first use and re-fetched when a
    /// token names an unknown `kid`. Ignored when `jwks_file` is set.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM file of extra CA certificates trusted for `jwks_url`, besides the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Shortest time between two re-reads of the JWKS (unknown `kid`s cannot force more).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
    /// Accepted `alg` values: RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Required `iss` (any of these). Empty: not checked.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Required `aud` (any of these). Empty: a token carrying `aud` is refused.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_jwt_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Claim holding the user id.
    #[serde(default = "default_user_id_claim")]
    pub user_id_claim: String,
    /// Claim holding the user directory (wins over `user_directory` when present).
    #[serde(default)]
    pub user_directory_claim: Option<String>,
    /// Fixed user directory, when no claim names it.
    #[serde(default)]
    pub user_directory: Option<String>,
    /// Attribute name → claim; an array claim gives one attribute per element.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(30)
}

fn default_jwt_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}

fn default_jwt_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_user_id_claim() -> String {
    "sub".to_owned()
}

/// Trust a request header as the user's identity, from trusted networks only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderAuthConfig {
    pub header: String,
    /// Static: every user is in this directory.
    #[serde(default)]
    pub user_directory: Option<String>,
    /// Dynamic: `$ud` and `$id` placeholders, e.g. `$ud\$id` for `CORP\alice`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// CIDR networks the header is accepted from. Empty: from nowhere.
    #[serde(default)]
    pub trusted_networks: Vec<String>,
}

/// Windows authentication: a SPNEGO token accepted with the control plane's keytab names the
/// user as `user@REALM`; the realm decides the user directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KerberosConfig {
    /// The method applies only to clients whose User-Agent contains this (ASCII case
    /// ignored); others get the ticket flow. Empty: every client.
    #[serde(default = "default_user_agent_pattern")]
    pub user_agent_pattern: String,
    /// Realm → user directory. Realms are matched case-insensitively.
    #[serde(default)]
    pub realms: BTreeMap<String, String>,
    /// The directory of principals whose realm is not in `realms`. Absent: such principals
    /// are refused.
    #[serde(default)]
    pub user_directory: Option<String>,
}

impl KerberosConfig {
    /// The user directory of a principal of `realm`, if that realm is accepted.
    pub fn directory_of(&self, realm: &str) -> Option<&str> {
        self.realms
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(realm))
            .map(|(_, directory)| directory.as_str())
            .or(self.user_directory.as_deref())
    }
}

fn default_user_agent_pattern() -> String {
    "Windows".to_owned()
}

pub(super) fn validate_jwt(jwt: &JwtConfig) -> Result<(), String> {
    if jwt.public_keys.is_empty() && jwt.jwks_file.is_none() && jwt.jwks_url.is_none() {
        return Err("jwt needs public_keys, jwks_file or jwks_url".to_owned());
    }
    if let Some(url) = &jwt.jwks_url
        && !is_absolute_http_uri(url)
    {
        return Err("jwt.jwks_url must be an absolute http or https URL".to_owned());
    }
    for path in &jwt.public_keys {
        crate::jwt::read_pem_key(path).map_err(|error| format!("jwt.public_keys: {error}"))?;
    }
    if let Some(path) = &jwt.ca_file {
        super::oidc::read_ca_file(path).map_err(|error| format!("jwt.ca_file: {error}"))?;
    }
    validate_token_rules(
        "jwt",
        &TokenRules {
            algorithms: &jwt.algorithms,
            leeway: jwt.leeway,
            user_id_claim: &jwt.user_id_claim,
            user_directory: jwt.user_directory.as_deref(),
            user_directory_claim: jwt.user_directory_claim.as_deref(),
        },
    )
}

/// What JWT bearer tokens and OpenID Connect share: signed tokens and claims naming a user.
pub(super) struct TokenRules<'a> {
    pub algorithms: &'a [String],
    pub leeway: Duration,
    pub user_id_claim: &'a str,
    pub user_directory: Option<&'a str>,
    pub user_directory_claim: Option<&'a str>,
}

/// Checks the rules of table `section` (`jwt`, `oidc`).
pub(super) fn validate_token_rules(section: &str, rules: &TokenRules<'_>) -> Result<(), String> {
    if rules.algorithms.is_empty() {
        return Err(format!(
            "{section}.algorithms must name at least one algorithm"
        ));
    }
    if let Some(alg) = rules
        .algorithms
        .iter()
        .find(|alg| !crate::jwt::ACCEPTED_ALGORITHMS.contains(&alg.as_str()))
    {
        return Err(format!(
            "{section}.algorithms: {alg:?} is not accepted (one of {})",
            crate::jwt::ACCEPTED_ALGORITHMS.join(", ")
        ));
    }
    if rules.leeway > Duration::from_secs(600) {
        return Err(format!("{section}.leeway must be at most 10m"));
    }
    if rules.user_id_claim.is_empty() {
        return Err(format!("{section}.user_id_claim must not be empty"));
    }
    if rules.user_directory.is_none() && rules.user_directory_claim.is_none() {
        return Err(format!(
            "{section} needs user_directory or user_directory_claim"
        ));
    }
    Ok(())
}

pub(super) fn validate_header_auth(header: &HeaderAuthConfig) -> Result<(), String> {
    let name = header.header.to_ascii_lowercase();
    if !is_token(&name) {
        return Err(format!(
            "header_authentication.header {:?} is not a header name",
            header.header
        ));
    }
    // Nodes drop every request header with '_' in its name before reading any (as nginx
    // does): upstreams would take `X_Remote_User` for `X-Remote-User`.
    if name.contains('_') {
        return Err(format!(
            "header_authentication.header {:?} holds '_': nodes drop such headers; use '-'",
            header.header
        ));
    }
    if identity_headers::is_identity_header(&name) || UNTRUSTABLE_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "header_authentication.header {:?} collides with a header the proxy sets or trusts otherwise",
            header.header
        ));
    }
    match (&header.user_directory, &header.pattern) {
        (Some(directory), None) if !directory.trim().is_empty() && !directory.contains('\\') => {}
        (None, Some(pattern)) if pattern.contains("$ud") && pattern.contains("$id") => {}
        _ => {
            return Err(
                "header_authentication needs either user_directory (static) or a pattern holding $ud and $id (dynamic)"
                    .to_owned(),
            );
        }
    }
    if let Some(network) = header
        .trusted_networks
        .iter()
        .find(|network| network.parse::<ipnet::IpNet>().is_err())
    {
        return Err(format!(
            "trusted network {network:?} is not a CIDR network such as 10.0.0.0/8"
        ));
    }
    Ok(())
}

pub(super) fn validate_kerberos(kerberos: &KerberosConfig) -> Result<(), String> {
    if kerberos.realms.is_empty() && kerberos.user_directory.is_none() {
        return Err(
            "kerberos needs a realms table (realm = user directory), a user_directory, or both"
                .to_owned(),
        );
    }
    let bad_directory = |directory: &String| {
        directory.trim().is_empty() || directory.trim() != directory || directory.contains('\\')
    };
    if let Some((realm, _)) = kerberos
        .realms
        .iter()
        .find(|(realm, directory)| realm.trim().is_empty() || bad_directory(directory))
    {
        return Err(format!(
            "kerberos.realms entry {realm:?} needs a realm name and a user directory without spaces around it or a backslash"
        ));
    }
    if kerberos.user_directory.as_ref().is_some_and(bad_directory) {
        return Err(
            "kerberos.user_directory must not be blank, padded or contain a backslash".to_owned(),
        );
    }
    if kerberos
        .user_agent_pattern
        .chars()
        .any(|c| c.is_control() || !c.is_ascii())
    {
        return Err("kerberos.user_agent_pattern must be printable ASCII".to_owned());
    }
    Ok(())
}
