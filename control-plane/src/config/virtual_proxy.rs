//! Virtual proxies as configured: how each one authenticates, what it forwards and where.
//! The control plane enforces the session rules and streams the rest to data-plane nodes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use gatehouse_proto::origin::{Authority, PublicOrigin};

use super::access_rules::validate_rule;
pub use super::access_rules::{AccessRuleConfig, AttributeMatch, RuleAction};
use super::assertion::ProxyAssertionConfig;
pub use super::login_methods::{HeaderAuthConfig, JwtConfig, KerberosConfig};
use super::login_methods::{validate_header_auth, validate_jwt, validate_kerberos};
use super::oidc::OidcConfig;
pub use super::public_paths::PublicPathConfig;
use super::public_paths::validate_public_path;
use super::saml::SamlConfig;
use super::syntax::{is_absolute_http_uri, is_host_name, is_token};
use super::upstream::validate_upstream;
pub use super::upstream::{BalanceStrategy, UpstreamConfig};
use crate::domain::CapPolicy;

/// One virtual proxy, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualProxyConfig {
    /// Lowercase path prefix; "" is the default proxy.
    pub prefix: String,
    /// Name of the session cookie, unique among virtual proxies.
    pub cookie_name: String,
    /// Parent domain the cookie is set for, if any.
    pub cookie_domain: Option<String>,
    /// A session ends after this long without activity.
    pub inactivity_timeout: Duration,
    /// A session ends this long after it was created, whatever its activity.
    pub max_lifetime: Duration,
    /// Parallel sessions one user may hold in this virtual proxy.
    pub max_sessions_per_user: u32,
    /// What happens to a new session beyond `max_sessions_per_user`.
    pub session_cap_policy: CapPolicy,
    /// Where browsers without a session are sent for a ticket.
    pub authentication_module_uri: Option<String>,
    /// The `TargetUri` of a ticket whose target id is missing, unknown or expired (else the
    /// answer has none, as in QPS): where a module sends such a browser.
    pub default_target_uri: Option<String>,
    /// Hosts (lowercase, optional `:port`; no port means the scheme's default) browsers may
    /// be sent back to and open WebSockets from, besides the public origins.
    pub host_allow_list: Vec<String>,
    /// The external base URLs this proxy is served at. Nodes build every absolute URL from
    /// the one a request's `Host` names and refuse other hosts; login targets must be on one
    /// (or on an allow-listed host). Empty: loopback hosts only (development).
    pub public_origins: Vec<PublicOrigin>,
    /// What a node does with a request whose `Host` is none of `public_origins`.
    pub unknown_host: UnknownHost,
    pub anonymous: AnonymousMode,
    pub header_authentication: Option<HeaderAuthConfig>,
    /// Windows authentication (Kerberos / SPNEGO).
    pub kerberos: Option<KerberosConfig>,
    /// `Authorization: Bearer <jwt>` logs in; see AUTH-JWT.md.
    pub jwt: Option<JwtConfig>,
    /// OpenID Connect login; see AUTH-OIDC.md.
    pub oidc: Option<OidcConfig>,
    /// SAML 2.0 login; see AUTH-SAML.md.
    pub saml: Option<SamlConfig>,
    /// Remove `/{prefix}` from the path before forwarding.
    pub strip_prefix: bool,
    pub upstream: UpstreamConfig,
    pub identity_headers: IdentityPreset,
    /// A signed identity assertion for upstreams; `None`: none.
    pub assertion: Option<ProxyAssertionConfig>,
    pub access_rules: Vec<AccessRuleConfig>,
    /// Paths served without identification: no login, no session, no identity headers.
    pub public_paths: Vec<PublicPathConfig>,
    pub additional_response_headers: Vec<(String, String)>,
    /// Sent upstream in `X-Qlik-ProxyId`.
    pub proxy_id: String,
    pub same_site: SameSite,
    /// Prefix the cookie name with `__Host-` (browsers then insist on Secure, Path=/ and no
    /// Domain).
    pub cookie_host_prefix: bool,
    /// WebSocket upgrades must carry the token from `GET /{prefix}/qps/csrftoken`.
    pub websocket_requires_csrf_token: bool,
    /// Let `;` and `%3B` path parameters through (refused by default: Tomcat reads
    /// `/admin;x` as `/admin` and `..;` as `..`).
    pub allow_path_parameters: bool,
    /// Let `%25` followed by two hex digits through (refused by default: an upstream that
    /// decodes twice reads `%252e` as `.`).
    pub allow_double_encoding: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    /// Only with Secure: over plain HTTP nodes fall back to Lax.
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownHost {
    /// 400: the request named a host this proxy is not served at.
    #[default]
    Refuse,
    /// Serve it as if it had named the first public origin (for clients that send a
    /// host the operator cannot list, such as an internal alias).
    FirstOrigin,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousMode {
    /// Every user logs in.
    #[default]
    None,
    /// Users without a session are anonymous unless they ask to log in
    /// (`forceAuthentication=yes`).
    Allow,
    /// Every user without a session is anonymous.
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityPreset {
    /// `X-Qlik-User`, `X-Qlik-Security`, `X-Qlik-ProxyId`, `X-Qlik-Virtual-Proxy-Prefix`.
    #[default]
    Qlik,
    /// `X-Gatehouse-User-Directory`, `-User-Id`, `-Attributes`, `-Virtual-Proxy`.
    Generic,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileVirtualProxy {
    prefix: String,
    cookie_name: Option<String>,
    cookie_domain: Option<String>,
    #[serde(default = "default_inactivity_timeout", with = "humantime_serde")]
    inactivity_timeout: Duration,
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    max_lifetime: Duration,
    #[serde(default = "default_max_sessions_per_user")]
    max_sessions_per_user: u32,
    #[serde(default)]
    session_cap_policy: CapPolicy,
    authentication_module_uri: Option<String>,
    default_target_uri: Option<String>,
    #[serde(default)]
    host_allow_list: Vec<String>,
    #[serde(default)]
    public_origins: Vec<String>,
    #[serde(default)]
    unknown_host: UnknownHost,
    #[serde(default)]
    anonymous: AnonymousMode,
    header_authentication: Option<HeaderAuthConfig>,
    kerberos: Option<KerberosConfig>,
    jwt: Option<JwtConfig>,
    oidc: Option<OidcConfig>,
    saml: Option<SamlConfig>,
    #[serde(default = "default_strip_prefix")]
    strip_prefix: bool,
    #[serde(default)]
    upstream: UpstreamConfig,
    #[serde(default)]
    identity_headers: IdentityPreset,
    assertion: Option<ProxyAssertionConfig>,
    #[serde(default)]
    access_rules: Vec<AccessRuleConfig>,
    #[serde(default)]
    public_paths: Vec<PublicPathConfig>,
    #[serde(default)]
    additional_response_headers: BTreeMap<String, String>,
    #[serde(default = "default_proxy_id")]
    proxy_id: String,
    #[serde(default)]
    same_site: SameSite,
    #[serde(default)]
    cookie_host_prefix: bool,
    #[serde(default)]
    websocket_requires_csrf_token: bool,
    #[serde(default)]
    allow_path_parameters: bool,
    #[serde(default)]
    allow_double_encoding: bool,
}

impl FileVirtualProxy {
    fn default_proxy() -> Self {
        Self {
            prefix: String::new(),
            cookie_name: None,
            cookie_domain: None,
            inactivity_timeout: default_inactivity_timeout(),
            max_lifetime: default_max_lifetime(),
            max_sessions_per_user: default_max_sessions_per_user(),
            session_cap_policy: CapPolicy::default(),
            authentication_module_uri: None,
            default_target_uri: None,
            host_allow_list: Vec::new(),
            public_origins: Vec::new(),
            unknown_host: UnknownHost::default(),
            anonymous: AnonymousMode::default(),
            header_authentication: None,
            kerberos: None,
            jwt: None,
            oidc: None,
            saml: None,
            strip_prefix: default_strip_prefix(),
            upstream: UpstreamConfig::default(),
            identity_headers: IdentityPreset::default(),
            assertion: None,
            access_rules: Vec::new(),
            public_paths: Vec::new(),
            additional_response_headers: BTreeMap::new(),
            proxy_id: default_proxy_id(),
            same_site: SameSite::default(),
            cookie_host_prefix: false,
            websocket_requires_csrf_token: false,
            allow_path_parameters: false,
            allow_double_encoding: false,
        }
    }
}

fn default_inactivity_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(12 * 60 * 60)
}

fn default_max_sessions_per_user() -> u32 {
    5
}

fn default_strip_prefix() -> bool {
    true
}

fn default_proxy_id() -> String {
    "gatehouse".to_owned()
}

/// Validates every virtual proxy and their uniqueness; no proxies means one default proxy.
pub(super) fn validate_all(
    proxies: Vec<FileVirtualProxy>,
) -> Result<Vec<VirtualProxyConfig>, String> {
    let proxies = if proxies.is_empty() {
        vec![FileVirtualProxy::default_proxy()]
    } else {
        proxies
    };
    let mut prefixes = HashSet::new();
    let mut cookie_names = HashSet::new();
    let mut audiences = HashSet::new();
    let mut validated = Vec::with_capacity(proxies.len());
    for proxy in proxies {
        let proxy = validate(proxy)?;
        if !prefixes.insert(proxy.prefix.clone()) {
            return Err(format!(
                "virtual proxy prefix {:?} is defined twice",
                proxy.prefix
            ));
        }
        // Browsers treat cookie names case-sensitively, but intermediaries do not always:
        // two names differing only in case would be one cookie to some of them.
        for name in proxy.cookie_names() {
            if !cookie_names.insert(name.to_ascii_lowercase()) {
                return Err(format!(
                    "cookie name {name:?} (of virtual proxy {:?}) is used by two virtual proxies",
                    proxy.prefix
                ));
            }
        }
        // An upstream checks the audience to refuse assertions meant for another proxy: an
        // anonymous proxy's assertion must not pass where a login is required.
        if let Some(assertion) = &proxy.assertion {
            let audience = assertion.audience_of(&proxy.prefix);
            if !audiences.insert(audience.clone()) {
                return Err(format!(
                    "assertion audience {audience:?} (of virtual proxy {:?}) is used by two virtual proxies",
                    proxy.prefix
                ));
            }
        }
        validated.push(proxy);
    }
    unreachable_public_paths(&validated)?;
    Ok(validated)
}

/// The default proxy's public path under another proxy's prefix would never apply: nodes
/// route that path to the other proxy.
fn unreachable_public_paths(proxies: &[VirtualProxyConfig]) -> Result<(), String> {
    let Some(default) = proxies.iter().find(|proxy| proxy.prefix.is_empty()) else {
        return Ok(());
    };
    for path in &default.public_paths {
        let first = path.prefix.trim_start_matches('/').split('/').next();
        if let Some(other) = proxies
            .iter()
            .find(|proxy| !proxy.prefix.is_empty() && Some(proxy.prefix.as_str()) == first)
        {
            return Err(format!(
                "virtual proxy \"\": public_paths prefix {:?} is served by virtual proxy {:?}; \
                 list it there, below that proxy's prefix",
                path.prefix, other.prefix
            ));
        }
    }
    Ok(())
}

impl VirtualProxyConfig {
    /// Every cookie name this proxy sets, as the node names them: the session cookie as
    /// configured and with its `__Host-` prefix, and with OpenID Connect the login-binding
    /// cookie over plain HTTP (`{cookie}-oidc`) and over TLS (`__Host-{cookie}-oidc`), with
    /// SAML the same with `-saml`, and the companion cookie with the session's sealed claims (`{cookie}-seal`).
    pub fn cookie_names(&self) -> std::collections::BTreeSet<String> {
        let session = if self.cookie_host_prefix {
            format!("__Host-{}", self.cookie_name)
        } else {
            self.cookie_name.clone()
        };
        let mut names = std::collections::BTreeSet::from([
            self.cookie_name.clone(),
            session.clone(),
            format!("{session}-seal"),
        ]);
        let host_prefixed = session.strip_prefix("__Host-").unwrap_or(&session);
        for (on, suffix) in [(self.oidc.is_some(), "oidc"), (self.saml.is_some(), "saml")] {
            if on {
                names.insert(format!("{session}-{suffix}"));
                names.insert(format!("__Host-{host_prefixed}-{suffix}"));
            }
        }
        names
    }
}

fn validate(mut proxy: FileVirtualProxy) -> Result<VirtualProxyConfig, String> {
    let prefix = proxy.prefix;
    let named = |message: String| format!("virtual proxy {prefix:?}: {message}");
    validate_prefix(&prefix)
        .map_err(|reason| format!("virtual proxy prefix {prefix:?} {reason}"))?;
    let cookie_name = proxy
        .cookie_name
        .unwrap_or_else(|| default_cookie_name(&prefix));
    validate_cookie_name(&cookie_name)
        .map_err(|reason| named(format!("cookie name {cookie_name:?} {reason}")))?;
    if let Some(domain) = &proxy.cookie_domain
        && !is_host_name(domain.trim_start_matches('.'))
    {
        return Err(named(format!(
            "cookie_domain {domain:?} is not a domain name"
        )));
    }
    if proxy.inactivity_timeout < Duration::from_secs(1)
        || proxy.max_lifetime < Duration::from_secs(1)
    {
        return Err(named(
            "inactivity_timeout and max_lifetime must be at least 1s".to_owned(),
        ));
    }
    if proxy.max_sessions_per_user == 0 {
        return Err(named("max_sessions_per_user must be at least 1".to_owned()));
    }
    if let Some(uri) = &proxy.authentication_module_uri
        && !is_absolute_http_uri(uri)
    {
        return Err(named(
            "authentication_module_uri must be an absolute http or https URL".to_owned(),
        ));
    }
    let host_allow_list: Vec<String> = proxy
        .host_allow_list
        .iter()
        .map(|host| host.trim().to_ascii_lowercase())
        .collect();
    if let Some(host) = host_allow_list
        .iter()
        .find(|host| Authority::parse(host).is_err())
    {
        return Err(named(format!(
            "host_allow_list entry {host:?} is not a host name"
        )));
    }
    let public_origins = proxy
        .public_origins
        .iter()
        .map(|origin| PublicOrigin::parse(origin.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| named(error.to_string()))?;
    if proxy.unknown_host == UnknownHost::FirstOrigin && public_origins.is_empty() {
        return Err(named(
            "unknown_host = \"first-origin\" needs public_origins".to_owned(),
        ));
    }
    if let Some(uri) = &proxy.default_target_uri {
        // A landing every ticket without a target may be sent to: the same rule as any target.
        let absolute = uri.parse::<http::Uri>().is_ok_and(|parsed| {
            matches!(parsed.scheme_str(), Some("http" | "https"))
                && parsed.host().is_some_and(|host| !host.is_empty())
        });
        if !absolute
            || !gatehouse_proto::origin::url_is_admitted(uri, &public_origins, &host_allow_list)
        {
            return Err(named(format!(
                "default_target_uri {uri:?} must be an absolute http(s) URL on one of public_origins or host_allow_list"
            )));
        }
    }
    if let Some(header) = &proxy.header_authentication {
        validate_header_auth(header).map_err(named)?;
    }
    if let Some(kerberos) = &proxy.kerberos {
        validate_kerberos(kerberos).map_err(named)?;
    }
    if let Some(jwt) = &proxy.jwt {
        validate_jwt(jwt).map_err(named)?;
    }
    if let Some(oidc) = &proxy.oidc {
        oidc.validate(&prefix).map_err(named)?;
        // The provider sends the authorization code there: it must be this site.
        if let Some(uri) = &oidc.redirect_uri
            && !public_origins.is_empty()
            && !gatehouse_proto::origin::url_is_admitted(uri, &public_origins, &[])
        {
            return Err(named(format!(
                "oidc.redirect_uri {uri:?} is on none of public_origins"
            )));
        }
    }
    if let Some(saml) = &mut proxy.saml {
        if proxy.oidc.is_some() {
            return Err(named(
                "oidc and saml cannot both log browsers in: use one virtual proxy for each"
                    .to_owned(),
            ));
        }
        saml.load(&prefix, &public_origins).map_err(named)?;
    }
    validate_upstream(&proxy.upstream).map_err(named)?;
    if let Some(assertion) = &mut proxy.assertion {
        let login_header = proxy
            .header_authentication
            .as_ref()
            .map(|header| header.header.to_ascii_lowercase());
        assertion.validate(login_header.as_deref()).map_err(named)?;
    }
    for rule in &proxy.access_rules {
        validate_rule(rule).map_err(named)?;
    }
    for path in &mut proxy.public_paths {
        validate_public_path(path).map_err(named)?;
    }
    for (name, value) in &proxy.additional_response_headers {
        if !is_token(name) || value.chars().any(|c| c.is_control()) {
            return Err(named(format!(
                "additional response header {name:?} is not a valid header"
            )));
        }
    }
    if proxy.cookie_host_prefix && proxy.cookie_domain.is_some() {
        return Err(named(
            "cookie_host_prefix forbids cookie_domain (a __Host- cookie has no Domain)".to_owned(),
        ));
    }
    if !is_token(&proxy.proxy_id) {
        return Err(named("proxy_id must be a non-empty token".to_owned()));
    }
    Ok(VirtualProxyConfig {
        prefix: prefix.clone(),
        cookie_name,
        cookie_domain: proxy.cookie_domain,
        inactivity_timeout: proxy.inactivity_timeout,
        max_lifetime: proxy.max_lifetime,
        max_sessions_per_user: proxy.max_sessions_per_user,
        session_cap_policy: proxy.session_cap_policy,
        authentication_module_uri: proxy.authentication_module_uri,
        default_target_uri: proxy.default_target_uri,
        host_allow_list,
        public_origins,
        unknown_host: proxy.unknown_host,
        anonymous: proxy.anonymous,
        header_authentication: proxy.header_authentication,
        kerberos: proxy.kerberos,
        jwt: proxy.jwt,
        oidc: proxy.oidc,
        saml: proxy.saml,
        strip_prefix: proxy.strip_prefix,
        upstream: proxy.upstream,
        identity_headers: proxy.identity_headers,
        assertion: proxy.assertion,
        access_rules: proxy.access_rules,
        public_paths: proxy.public_paths,
        additional_response_headers: proxy.additional_response_headers.into_iter().collect(),
        proxy_id: proxy.proxy_id,
        same_site: proxy.same_site,
        cookie_host_prefix: proxy.cookie_host_prefix,
        websocket_requires_csrf_token: proxy.websocket_requires_csrf_token,
        allow_path_parameters: proxy.allow_path_parameters,
        allow_double_encoding: proxy.allow_double_encoding,
    })
}

/// QPS's convention, so existing clients that set the cookie themselves keep working.
fn default_cookie_name(prefix: &str) -> String {
    if prefix.is_empty() {
        "X-Qlik-Session".to_owned()
    } else {
        format!("X-Qlik-Session-{prefix}")
    }
}

/// Prefix rules as in QPS: lowercase `a-z 0-9 - . _ ~`, no slashes.
pub fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.len() > 64 {
        return Err("is longer than 64 characters");
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~".contains(c))
    {
        return Err("may only hold lowercase letters, digits, '-', '.', '_' and '~'");
    }
    Ok(())
}

/// A cookie name is an HTTP token (RFC 6265 / RFC 9110 `tchar`).
fn validate_cookie_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1 to 128 characters long");
    }
    if !is_token(name) {
        return Err("may only hold letters, digits and !#$%&'*+-.^_`|~");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(extra: &str) -> Result<Vec<VirtualProxyConfig>, String> {
        let file: super::super::FileConfig =
            toml::from_str(&format!("[[virtual_proxies]]\nprefix = \"p\"\n{extra}"))
                .map_err(|error| error.to_string())?;
        validate_all(file.virtual_proxies)
    }

    #[test]
    fn public_origins_are_base_urls_and_a_configured_redirect_uri_is_on_one() {
        let proxies =
            proxy("public_origins = [\"https://Sense.Example.com/\", \"http://127.0.0.1:8080\"]")
                .unwrap_or_else(|e| panic!("{e}"));
        let origins: Vec<String> = proxies[0]
            .public_origins
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            origins,
            ["https://sense.example.com", "http://127.0.0.1:8080"]
        );
        for bad in [
            "public_origins = [\"sense.example.com\"]",
            "public_origins = [\"https://sense.example.com/hub\"]",
            "public_origins = [\"https://user@sense.example.com\"]",
            "unknown_host = \"first-origin\"",
        ] {
            assert!(proxy(bad).is_err(), "{bad}");
        }
        let oidc = |redirect: &str| {
            proxy(&format!(
                "public_origins = [\"https://sense.example.com\"]\n\
                 [virtual_proxies.oidc]\nissuer = \"https://idp.example.com\"\n\
                 client_id = \"gatehouse\"\nuser_directory = \"IDP\"\n\
                 redirect_uri = \"{redirect}\""
            ))
        };
        assert!(oidc("https://sense.example.com/p/oidc/callback").is_ok());
        let refused = oidc("https://evil.example/p/oidc/callback").unwrap_err();
        assert!(refused.contains("public_origins"), "{refused}");
    }

    #[test]
    fn kerberos_maps_realms_to_directories() {
        let proxies =
            proxy("[virtual_proxies.kerberos]\nrealms = { \"CORP.EXAMPLE.COM\" = \"CORP\" }")
                .unwrap_or_else(|e| panic!("{e}"));
        let kerberos = proxies[0].kerberos.clone().unwrap_or_else(|| panic!("on"));
        assert_eq!(kerberos.user_agent_pattern, "Windows");
        assert_eq!(kerberos.directory_of("corp.example.com"), Some("CORP"));
        assert_eq!(kerberos.directory_of("OTHER.EXAMPLE.COM"), None);
        let fallback = KerberosConfig {
            user_directory: Some("ANY".into()),
            ..kerberos
        };
        assert_eq!(fallback.directory_of("OTHER.EXAMPLE.COM"), Some("ANY"));
        assert_eq!(fallback.directory_of("CORP.EXAMPLE.COM"), Some("CORP"));

        for bad in [
            "[virtual_proxies.kerberos]",
            "[virtual_proxies.kerberos]\nuser_directory = \" \"",
            "[virtual_proxies.kerberos]\nrealms = { \"CORP\" = \"A\\\\B\" }",
            "[virtual_proxies.kerberos]\nuser_directory = \"D\"\nkeytab = \"/x\"",
        ] {
            assert!(proxy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_plane_settings_have_safe_defaults() {
        let proxy = &proxy("").unwrap()[0];
        assert_eq!(proxy.anonymous, AnonymousMode::None);
        assert!(proxy.header_authentication.is_none());
        assert!(proxy.strip_prefix);
        assert_eq!(proxy.identity_headers, IdentityPreset::Qlik);
        assert_eq!(proxy.upstream.strategy, BalanceStrategy::RoundRobin);
        assert!(proxy.upstream.nodes.is_empty());
    }

    #[test]
    fn header_authentication_refuses_every_header_the_data_plane_strips_as_identity() {
        for header in gatehouse_proto::identity_headers::ALL {
            let error = proxy(&format!(
                "[virtual_proxies.header_authentication]\nheader = \"{header}\"\nuser_directory = \"CORP\""
            ))
            .unwrap_err();
            assert!(error.contains("collides"), "{header}: {error}");
        }
    }

    #[test]
    fn header_authentication_cannot_use_identity_or_credential_headers() {
        for header in [
            "X-Qlik-User",
            "cookie",
            "Authorization",
            "x-gatehouse-user-id",
        ] {
            let error = proxy(&format!(
                "[virtual_proxies.header_authentication]\nheader = \"{header}\"\nuser_directory = \"CORP\""
            ))
            .unwrap_err();
            assert!(error.contains("collides"), "{header}: {error}");
        }
        let error = proxy(
            "[virtual_proxies.header_authentication]\nheader = \"X_Remote_User\"\nuser_directory = \"CORP\"",
        )
        .unwrap_err();
        assert!(error.contains("'_'"), "{error}");
        assert!(
            proxy("[virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"\npattern = '$ud\\$id'\ntrusted_networks = [\"10.0.0.0/8\"]")
                .is_ok()
        );
        let error = proxy("[virtual_proxies.header_authentication]\nheader = \"X-Remote-User\"")
            .unwrap_err();
        assert!(error.contains("either user_directory"), "{error}");
        let error = proxy(
            "[virtual_proxies.header_authentication]\nheader = \"X-U\"\nuser_directory = \"D\"\ntrusted_networks = [\"10.0.0.0/33\"]",
        )
        .unwrap_err();
        assert!(error.contains("CIDR"), "{error}");
    }

    #[test]
    fn upstreams_rules_and_uris_are_checked() {
        assert!(
            proxy("[virtual_proxies.upstream]\nnodes = [\"engine:4747\", \"127.0.0.1:1\"]").is_ok()
        );
        assert!(proxy("[virtual_proxies.upstream]\nnodes = [\"engine\"]").is_err());
        assert!(proxy("authentication_module_uri = \"/login\"").is_err());
        assert!(proxy("host_allow_list = [\"evil.com/path\"]").is_err());
        assert!(
            proxy("[[virtual_proxies.access_rules]]\npath_prefix = \"admin\"\naction = \"deny\"")
                .is_err()
        );
        assert!(proxy("additional_response_headers = { \"Bad Header\" = \"x\" }").is_err());
    }

    #[test]
    fn public_paths_are_checked_and_named_in_errors() {
        let proxies = proxy(
            "[[virtual_proxies.public_paths]]\nprefix = \"/static/\"\nmethods = [\"get\", \"HEAD\"]\n\
             [[virtual_proxies.public_paths]]\nprefix = \"/health\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let paths = &proxies[0].public_paths;
        assert_eq!(paths[0].methods, ["GET", "HEAD"]);
        assert!(paths[1].methods.is_empty());
        let error =
            proxy("[[virtual_proxies.public_paths]]\nprefix = \"/static/../admin\"").unwrap_err();
        assert!(
            error.contains("virtual proxy \"p\"") && error.contains("public_paths prefix"),
            "{error}"
        );
        assert!(
            proxy("[[virtual_proxies.public_paths]]\nprefix = \"/x\"\nmethod = [\"GET\"]").is_err()
        );
        let error = proxy(
            "[[virtual_proxies.access_rules]]\npath_prefix = \"/\"\naction = \"deny\"\n\
             public = true\nuser_id = \"bob\"",
        )
        .unwrap_err();
        assert!(error.contains("public = true"), "{error}");
        let file: super::super::FileConfig = toml::from_str(
            "[[virtual_proxies]]\nprefix = \"\"\n[[virtual_proxies.public_paths]]\nprefix = \"/app/x\"\n\
             [[virtual_proxies]]\nprefix = \"app\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let error = validate_all(file.virtual_proxies).unwrap_err();
        assert!(error.contains("served by virtual proxy \"app\""), "{error}");
    }

    #[test]
    fn jwt_accepts_only_public_key_algorithms_and_needs_keys_and_a_directory() {
        let key = std::env::temp_dir().join(format!("gatehouse-jwt-{}.pem", std::process::id()));
        std::fs::write(
            &key,
            "-----BEGIN PUBLIC KEY-----\n\
             MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6+Ga1sWzOOhkDWzOER+sps/zMFrK\n\
             wRtSkuHmbhGXe4ITnFLJGE0bOUbQmODlMniuUERP5OUMXLLTn2VibFGC9g==\n\
             -----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let jwt = |keys: &str| {
            proxy(&format!(
                "[virtual_proxies.jwt]\npublic_keys = [{:?}]\nuser_directory = \"IDP\"\n{keys}",
                key.to_str().unwrap()
            ))
        };
        let missing = proxy(
            "[virtual_proxies.jwt]\npublic_keys = [\"/nonexistent/k.pem\"]\nuser_directory = \"IDP\"",
        )
        .unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
        let accepted = jwt("").unwrap();
        let config = accepted[0].jwt.as_ref().unwrap();
        assert_eq!(config.algorithms, ["RS256"]);
        assert_eq!(config.leeway, Duration::from_secs(60));
        assert_eq!(config.user_id_claim, "sub");
        for alg in ["none", "HS256", "HS512", "rs256"] {
            let error = jwt(&format!("algorithms = [\"{alg}\"]")).unwrap_err();
            assert!(error.contains("not accepted"), "{alg}: {error}");
        }
        assert!(jwt("algorithms = []").is_err());
        assert!(jwt("leeway = \"1h\"").is_err());
        let error = proxy("[virtual_proxies.jwt]\nuser_directory = \"IDP\"").unwrap_err();
        assert!(
            error.contains("public_keys, jwks_file or jwks_url"),
            "{error}"
        );
        let error = proxy("[virtual_proxies.jwt]\njwks_url = \"ftp://x/\"\nuser_directory = \"D\"")
            .unwrap_err();
        assert!(error.contains("jwks_url"), "{error}");
        let error = proxy("[virtual_proxies.jwt]\njwks_file = \"/j.json\"").unwrap_err();
        assert!(error.contains("user_directory"), "{error}");
        assert!(jwt("unknown_key = 1").is_err());
        let _ = std::fs::remove_file(&key);
    }
}
