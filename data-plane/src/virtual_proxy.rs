//! Virtual proxies as a node serves them: plain data, built from the control plane's
//! snapshots. Routing a path to one is `router`'s job, the headers made from them
//! `identity_headers`'.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::origin::PublicOrigin;
use gatehouse_proto::v1 as pb;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::assertion::ProxyAssertion;
use crate::auth::rules::{AccessRule, Scope, fold};
use crate::identity_headers::{IdentityPreset, ProxyIdentity};
use crate::request::path::AllowedSpellings;
use crate::request::public::PublicPath;
use crate::upstream::{Strategy, UpstreamPool, UpstreamSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    None,
    Allow,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// Where header authentication finds the user.
#[derive(Debug, Clone)]
pub enum HeaderUser {
    /// Every user is in this directory; the header is the user id.
    Static(String),
    /// The header holds directory and id, laid out by a pattern such as `$ud\\$id`.
    Pattern(String),
}

#[derive(Debug, Clone)]
pub struct HeaderAuthentication {
    pub header: HeaderName,
    pub user: HeaderUser,
    pub trusted_networks: Vec<IpNet>,
}

/// Windows authentication (Kerberos / SPNEGO), validated by the control plane.
#[derive(Debug, Clone)]
pub struct KerberosAuthentication {
    /// Lowercase; the method applies to clients whose User-Agent contains it ("" matches
    /// every client).
    pub user_agent_pattern: String,
}

impl KerberosAuthentication {
    /// Whether a client with this User-Agent gets Windows authentication (QPS's rule).
    pub fn applies_to(&self, user_agent: Option<&[u8]>) -> bool {
        if self.user_agent_pattern.is_empty() {
            return true;
        }
        let pattern = self.user_agent_pattern.as_bytes();
        user_agent.is_some_and(|agent| {
            agent
                .windows(pattern.len())
                .any(|window| window.eq_ignore_ascii_case(pattern))
        })
    }
}

/// OpenID Connect login on a virtual proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcAuthentication {
    /// The login-binding cookie's name over plain HTTP: the session cookie's with `-oidc`
    /// appended.
    pub binding_cookie: String,
    /// Its name over TLS: with `__Host-`, so that no sibling subdomain or plain-HTTP page
    /// can plant one (which would let an attacker finish a login of theirs in the victim's
    /// browser).
    pub binding_cookie_tls: String,
    /// After `/{prefix}/oidc/logout`, the browser goes to the provider's end-session page.
    pub end_session_redirect: bool,
    /// The provider sends browsers back over https (TLS may end before this node): the
    /// binding cookie is always the `__Host-`, Secure one.
    pub https_redirect_uri: bool,
}

impl OidcAuthentication {
    /// Whether the binding cookie is the Secure, `__Host-` one for a request that reached
    /// this node over TLS (`secure`) or not.
    pub fn binding_is_secure(&self, secure: bool) -> bool {
        secure || self.https_redirect_uri
    }

    /// The binding cookie's name for a request over TLS (`secure`) or not.
    pub fn binding_cookie(&self, secure: bool) -> &str {
        if self.binding_is_secure(secure) {
            &self.binding_cookie_tls
        } else {
            &self.binding_cookie
        }
    }
}

/// SAML login on a virtual proxy. The binding cookie ties a login in progress to the
/// browser, as OpenID Connect's does, but the identity provider posts the Response from its
/// own site: over TLS the cookie is SameSite=None (and Secure, `__Host-`) so that the
/// browser sends it with that cross-site POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAuthentication {
    /// The binding cookie's name over plain HTTP: the session cookie's with `-saml`.
    pub binding_cookie: String,
    /// Its name over TLS, with `__Host-`.
    pub binding_cookie_tls: String,
    /// The ACS URL is https (TLS may end before this node): always the `__Host-` cookie.
    pub https_acs_url: bool,
    /// Single Logout with the identity provider: `/saml/slo` and `/saml/logout` are served,
    /// and a logout here sends the browser there.
    pub single_logout: bool,
}

impl SamlAuthentication {
    /// Whether the binding cookie is the Secure, `__Host-` one for a request that reached
    /// this node over TLS (`secure`) or not.
    pub fn binding_is_secure(&self, secure: bool) -> bool {
        secure || self.https_acs_url
    }

    /// The binding cookie's name for a request over TLS (`secure`) or not.
    pub fn binding_cookie(&self, secure: bool) -> &str {
        if self.binding_is_secure(secure) {
            &self.binding_cookie_tls
        } else {
            &self.binding_cookie
        }
    }
}

#[derive(Debug)]
pub struct VirtualProxy {
    pub prefix: String,
    /// `prefix` as the `virtual_proxy` label of per-request metrics, shared rather than
    /// copied into each sample.
    pub metric_label: Arc<str>,
    /// The cookie's full name (with `__Host-` when configured).
    pub cookie_name: String,
    /// The companion cookie with the session's seal (`{cookie_name}-seal`), which lets the
    /// control plane vouch for the session while its store is down.
    pub seal_cookie_name: String,
    /// `__Host-` cookie: Secure, Path=/, never a Domain.
    pub cookie_host_prefix: bool,
    pub same_site: SameSite,
    pub websocket_requires_csrf_token: bool,
    pub cookie_domain: Option<String>,
    pub inactivity_timeout: Duration,
    pub authentication_module_uri: Option<String>,
    /// The control plane's REST surface for this proxy (`proxyRestUri`), when it has one.
    pub proxy_rest_uri: Option<String>,
    /// `host` or `host:port`, lowercase: where browsers may also be sent back to and come
    /// from (see `origin::admits_url`).
    pub host_allow_list: Vec<String>,
    /// Where the proxy is served; empty: loopback names (any port).
    pub public_origins: Vec<ConfiguredOrigin>,
    pub unknown_host: UnknownHost,
    pub anonymous: Anonymous,
    pub header_authentication: Option<HeaderAuthentication>,
    pub kerberos: Option<KerberosAuthentication>,
    /// `Authorization: Bearer <jwt>` logs in (verified by the control plane).
    pub jwt_authentication: bool,
    /// OpenID Connect login (the provider is the control plane's business).
    pub oidc: Option<OidcAuthentication>,
    /// SAML login (metadata and keys are the control plane's business).
    pub saml: Option<SamlAuthentication>,
    pub strip_prefix: bool,
    pub upstream: Arc<UpstreamPool>,
    /// Which identity headers upstreams get, with those that are the same for every user.
    pub identity: ProxyIdentity,
    pub access_rules: Vec<AccessRule>,
    /// Paths served without identification.
    pub public_paths: Vec<PublicPath>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Path spellings let through although some upstreams read them as another path.
    pub allowed_spellings: AllowedSpellings,
    pub proxy_id: String,
}

impl VirtualProxy {
    /// The path prefix with its leading slash ("" for the default proxy).
    pub fn path_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        }
    }
}

/// A public origin of a virtual proxy, with its authority ready for a request's use.
#[derive(Debug, Clone)]
pub struct ConfiguredOrigin {
    pub origin: PublicOrigin,
    authority: HeaderValue,
}

impl ConfiguredOrigin {
    pub fn parse(text: &str) -> Result<Self, String> {
        let origin = PublicOrigin::parse(text).map_err(|error| error.to_string())?;
        let authority = HeaderValue::from_str(origin.authority())
            .map_err(|_| format!("public origin {text:?} is not a valid host"))?;
        Ok(Self { origin, authority })
    }

    /// `host[:port]` as a header value.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }
}

impl AsRef<PublicOrigin> for ConfiguredOrigin {
    fn as_ref(&self) -> &PublicOrigin {
        &self.origin
    }
}

/// What a node does with a `Host` that is none of the public origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHost {
    Refuse,
    /// Serve it as the first public origin.
    FirstOrigin,
}

/// Why a snapshot's virtual proxy could not be used.
#[derive(Debug, thiserror::Error)]
#[error("virtual proxy {prefix:?}: {reason}")]
pub struct SnapshotError {
    prefix: String,
    reason: String,
}

impl VirtualProxy {
    /// Builds a proxy from a snapshot entry, reusing `previous`'s upstream pool when its
    /// settings are unchanged (so health and balancing state survive configuration pushes).
    pub fn from_proto(
        proto: &pb::VirtualProxy,
        previous: Option<&VirtualProxy>,
    ) -> Result<Self, SnapshotError> {
        let tls = crate::upstream::tls::client_config(None).map_err(|error| SnapshotError {
            prefix: proto.prefix.clone(),
            reason: error.to_string(),
        })?;
        Self::from_proto_with(proto, previous, &tls)
    }

    /// As [`from_proto`](Self::from_proto), with the node's TLS configuration for upstreams.
    pub fn from_proto_with(
        proto: &pb::VirtualProxy,
        previous: Option<&VirtualProxy>,
        upstream_tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Self, SnapshotError> {
        let fail = |reason: String| SnapshotError {
            prefix: proto.prefix.clone(),
            reason,
        };
        let header_authentication = match &proto.header_authentication {
            Some(header) if !header.header.is_empty() => Some(HeaderAuthentication {
                header: HeaderName::from_bytes(header.header.as_bytes())
                    .map_err(|_| fail(format!("bad header name {:?}", header.header)))?,
                user: if header.pattern.is_empty() {
                    HeaderUser::Static(header.user_directory.clone())
                } else {
                    HeaderUser::Pattern(header.pattern.clone())
                },
                trusted_networks: header
                    .trusted_networks
                    .iter()
                    .map(|network| {
                        network
                            .parse()
                            .map_err(|_| fail(format!("bad network {network:?}")))
                    })
                    .collect::<Result<_, _>>()?,
            }),
            _ => None,
        };
        let upstream = proto.upstream.clone().unwrap_or_default();
        let settings = UpstreamSettings {
            nodes: upstream.nodes.clone(),
            tls: upstream.tls,
            tls_server_name: Some(upstream.tls_server_name.clone()).filter(|name| !name.is_empty()),
            strategy: match upstream.strategy() {
                pb::BalanceStrategy::RoundRobin => Strategy::RoundRobin,
                pb::BalanceStrategy::LeastOutstanding => Strategy::LeastOutstanding,
                pb::BalanceStrategy::StickySession => Strategy::StickySession,
            },
            http2: upstream.http2,
            eject_after_failures: upstream.eject_after_failures.max(1),
            ejection_time: duration(upstream.ejection_time, Duration::from_secs(10)),
            connect_timeout: duration(upstream.connect_timeout, Duration::from_secs(2)),
            response_timeout: duration(upstream.response_timeout, Duration::from_secs(60)),
        };
        let upstream = match previous {
            Some(previous) if previous.upstream.settings() == &settings => {
                previous.upstream.clone()
            }
            _ => UpstreamPool::new(settings, upstream_tls.clone()),
        };
        let response_headers = proto
            .additional_response_headers
            .iter()
            .map(|header| {
                Ok((
                    HeaderName::from_bytes(header.name.as_bytes())
                        .map_err(|_| fail(format!("bad response header {:?}", header.name)))?,
                    HeaderValue::from_str(&header.value).map_err(|_| {
                        fail(format!("bad value for response header {:?}", header.name))
                    })?,
                ))
            })
            .collect::<Result<_, SnapshotError>>()?;
        let mut identity = ProxyIdentity::new(
            match proto
                .identity_headers
                .as_ref()
                .map(pb::IdentityHeaders::preset)
            {
                Some(pb::IdentityPreset::Generic) => IdentityPreset::Generic,
                _ => IdentityPreset::Qlik,
            },
            &proto.proxy_id,
            &proto.prefix,
        );
        identity.assertion = proto
            .identity_assertion
            .as_ref()
            .map(|assertion| ProxyAssertion::from_proto(assertion, &proto.prefix))
            .transpose()
            .map_err(fail)?;
        let cookie_name = if proto.cookie_host_prefix {
            format!("__Host-{}", proto.cookie_name)
        } else {
            proto.cookie_name.clone()
        };
        Ok(Self {
            prefix: proto.prefix.clone(),
            metric_label: proto.prefix.as_str().into(),
            cookie_host_prefix: proto.cookie_host_prefix,
            same_site: match proto.same_site() {
                pb::SameSite::Lax => SameSite::Lax,
                pb::SameSite::Strict => SameSite::Strict,
                pb::SameSite::None => SameSite::None,
            },
            websocket_requires_csrf_token: proto.websocket_requires_csrf_token,
            cookie_domain: Some(proto.cookie_domain.clone())
                .filter(|domain| !domain.is_empty() && !proto.cookie_host_prefix),
            inactivity_timeout: duration(proto.inactivity_timeout, Duration::from_secs(1800)),
            authentication_module_uri: Some(proto.authentication_module_uri.clone())
                .filter(|uri| !uri.is_empty()),
            proxy_rest_uri: Some(proto.proxy_rest_uri.clone()).filter(|uri| !uri.is_empty()),
            host_allow_list: proto
                .host_allow_list
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            public_origins: proto
                .public_origins
                .iter()
                .map(|origin| ConfiguredOrigin::parse(origin).map_err(fail))
                .collect::<Result<_, SnapshotError>>()?,
            unknown_host: match proto.unknown_host() {
                pb::UnknownHost::Refuse => UnknownHost::Refuse,
                pb::UnknownHost::FirstOrigin => UnknownHost::FirstOrigin,
            },
            anonymous: match proto.anonymous() {
                pb::AnonymousMode::None => Anonymous::None,
                pb::AnonymousMode::Allow => Anonymous::Allow,
                pb::AnonymousMode::Always => Anonymous::Always,
            },
            header_authentication,
            kerberos: proto.kerberos_authentication.as_ref().map(|kerberos| {
                KerberosAuthentication {
                    user_agent_pattern: kerberos.user_agent_pattern.to_ascii_lowercase(),
                }
            }),
            oidc: proto
                .oidc_authentication
                .as_ref()
                .filter(|oidc| oidc.enabled)
                .map(|oidc| OidcAuthentication {
                    binding_cookie: format!("{cookie_name}-oidc"),
                    binding_cookie_tls: if cookie_name.starts_with("__Host-") {
                        format!("{cookie_name}-oidc")
                    } else {
                        format!("__Host-{cookie_name}-oidc")
                    },
                    end_session_redirect: oidc.end_session_redirect,
                    https_redirect_uri: oidc.https_redirect_uri,
                }),
            saml: proto
                .saml_authentication
                .as_ref()
                .filter(|saml| saml.enabled)
                .map(|saml| SamlAuthentication {
                    binding_cookie: format!("{cookie_name}-saml"),
                    binding_cookie_tls: if cookie_name.starts_with("__Host-") {
                        format!("{cookie_name}-saml")
                    } else {
                        format!("__Host-{cookie_name}-saml")
                    },
                    https_acs_url: saml.https_acs_url,
                    single_logout: saml.single_logout,
                }),
            seal_cookie_name: format!("{cookie_name}-seal"),
            cookie_name,
            jwt_authentication: proto
                .jwt_authentication
                .as_ref()
                .is_some_and(|jwt| jwt.enabled),
            strip_prefix: proto.strip_prefix,
            upstream,
            identity,
            access_rules: proto
                .access_rules
                .iter()
                .map(|rule| AccessRule {
                    path_prefix: rule.path_prefix.clone(),
                    folded_prefix: fold(&rule.path_prefix),
                    methods: rule
                        .methods
                        .iter()
                        .map(|m| m.to_ascii_uppercase())
                        .collect(),
                    allow: rule.allow,
                    user_directory: Some(rule.user_directory.clone()).filter(|d| !d.is_empty()),
                    user_id: Some(rule.user_id.clone()).filter(|id| !id.is_empty()),
                    attribute: rule
                        .attribute
                        .as_ref()
                        .map(|attribute| (attribute.name.clone(), attribute.value.clone())),
                    scope: match rule.scope() {
                        pb::RuleScope::Any => Scope::Any,
                        pb::RuleScope::Public => Scope::Public,
                        pb::RuleScope::Identified => Scope::Identified,
                    },
                })
                .collect(),
            public_paths: proto
                .public_paths
                .iter()
                .map(|path| match path.prefix.starts_with('/') {
                    true => Ok(PublicPath::new(&path.prefix, &path.methods)),
                    false => Err(fail(format!("bad public path {:?}", path.prefix))),
                })
                .collect::<Result<_, SnapshotError>>()?,
            response_headers,
            allowed_spellings: AllowedSpellings {
                path_parameters: proto.allow_path_parameters,
                double_encoding: proto.allow_double_encoding,
            },
            proxy_id: proto.proxy_id.clone(),
        })
    }
}

fn duration(value: Option<prost_types::Duration>, default: Duration) -> Duration {
    value
        .and_then(|value| Duration::try_from(value).ok())
        .filter(|value| !value.is_zero())
        .unwrap_or(default)
}
