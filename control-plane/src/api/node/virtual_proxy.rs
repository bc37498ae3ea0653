//! Virtual-proxy configuration as data-plane nodes receive it in `Watch` snapshots.

use gatehouse_proto::v1 as pb;

use crate::config::{
    AccessRuleConfig, AnonymousMode, BalanceStrategy, IdentityPreset, RuleAction, SameSite,
    UnknownHost, UpstreamConfig, VirtualProxyConfig,
};

/// `proxy_rest_uri`: the REST surface's address for this proxy, when that surface is on.
pub(crate) fn virtual_proxy_to_proto(
    proxy: &VirtualProxyConfig,
    proxy_rest_uri: Option<String>,
) -> pb::VirtualProxy {
    pb::VirtualProxy {
        prefix: proxy.prefix.clone(),
        cookie_name: proxy.cookie_name.clone(),
        cookie_domain: proxy.cookie_domain.clone().unwrap_or_default(),
        inactivity_timeout: duration(proxy.inactivity_timeout),
        authentication_module_uri: proxy.authentication_module_uri.clone().unwrap_or_default(),
        host_allow_list: proxy.host_allow_list.clone(),
        public_origins: proxy
            .public_origins
            .iter()
            .map(ToString::to_string)
            .collect(),
        unknown_host: match proxy.unknown_host {
            UnknownHost::Refuse => pb::UnknownHost::Refuse,
            UnknownHost::FirstOrigin => pb::UnknownHost::FirstOrigin,
        }
        .into(),
        anonymous: match proxy.anonymous {
            AnonymousMode::None => pb::AnonymousMode::None,
            AnonymousMode::Allow => pb::AnonymousMode::Allow,
            AnonymousMode::Always => pb::AnonymousMode::Always,
        }
        .into(),
        header_authentication: proxy.header_authentication.as_ref().map(|header| {
            pb::HeaderAuthentication {
                header: header.header.clone(),
                user_directory: header.user_directory.clone().unwrap_or_default(),
                pattern: header.pattern.clone().unwrap_or_default(),
                trusted_networks: header.trusted_networks.clone(),
            }
        }),
        kerberos_authentication: proxy.kerberos.as_ref().map(|kerberos| {
            pb::KerberosAuthentication {
                user_agent_pattern: kerberos.user_agent_pattern.clone(),
            }
        }),
        jwt_authentication: proxy
            .jwt
            .as_ref()
            .map(|_| pb::JwtAuthentication { enabled: true }),
        oidc_authentication: proxy.oidc.as_ref().map(|oidc| pb::OidcAuthentication {
            enabled: true,
            end_session_redirect: oidc.end_session_redirect,
            https_redirect_uri: oidc
                .redirect_uri
                .as_deref()
                .is_some_and(|uri| uri.starts_with("https://")),
        }),
        saml_authentication: proxy.saml.as_ref().map(|saml| pb::SamlAuthentication {
            enabled: true,
            https_acs_url: saml.acs_url().starts_with("https://"),
            single_logout: saml.single_logout,
        }),
        strip_prefix: proxy.strip_prefix,
        upstream: Some(upstream_to_proto(&proxy.upstream)),
        identity_headers: Some(pb::IdentityHeaders {
            preset: match proxy.identity_headers {
                IdentityPreset::Qlik => pb::IdentityPreset::Qlik,
                IdentityPreset::Generic => pb::IdentityPreset::Generic,
            }
            .into(),
        }),
        // The issuer is the control plane's (`[assertion]`), filled in by the snapshot.
        identity_assertion: proxy
            .assertion
            .as_ref()
            .map(|assertion| pb::IdentityAssertion {
                header: assertion.header.clone(),
                audience: assertion.audience_of(&proxy.prefix),
                issuer: String::new(),
                lifetime: duration(assertion.lifetime),
            }),
        access_rules: proxy.access_rules.iter().map(rule_to_proto).collect(),
        public_paths: proxy
            .public_paths
            .iter()
            .map(|path| pb::PublicPath {
                prefix: path.prefix.clone(),
                methods: path.methods.clone(),
            })
            .collect(),
        additional_response_headers: proxy
            .additional_response_headers
            .iter()
            .map(|(name, value)| pb::HeaderValue {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        proxy_id: proxy.proxy_id.clone(),
        same_site: match proxy.same_site {
            SameSite::Lax => pb::SameSite::Lax,
            SameSite::Strict => pb::SameSite::Strict,
            SameSite::None => pb::SameSite::None,
        }
        .into(),
        cookie_host_prefix: proxy.cookie_host_prefix,
        websocket_requires_csrf_token: proxy.websocket_requires_csrf_token,
        proxy_rest_uri: proxy_rest_uri.unwrap_or_default(),
        allow_path_parameters: proxy.allow_path_parameters,
        allow_double_encoding: proxy.allow_double_encoding,
    }
}

fn upstream_to_proto(upstream: &UpstreamConfig) -> pb::Upstream {
    pb::Upstream {
        nodes: upstream.nodes.clone(),
        strategy: match upstream.strategy {
            BalanceStrategy::RoundRobin => pb::BalanceStrategy::RoundRobin,
            BalanceStrategy::LeastOutstanding => pb::BalanceStrategy::LeastOutstanding,
            BalanceStrategy::StickySession => pb::BalanceStrategy::StickySession,
        }
        .into(),
        http2: upstream.http2,
        eject_after_failures: upstream.eject_after_failures,
        ejection_time: duration(upstream.ejection_time),
        connect_timeout: duration(upstream.connect_timeout),
        response_timeout: duration(upstream.response_timeout),
        tls: upstream.tls,
        tls_server_name: upstream.tls_server_name.clone().unwrap_or_default(),
    }
}

fn rule_to_proto(rule: &AccessRuleConfig) -> pb::AccessRule {
    pb::AccessRule {
        path_prefix: rule.path_prefix.clone(),
        methods: rule.methods.clone(),
        allow: rule.action == RuleAction::Allow,
        user_directory: rule.user_directory.clone().unwrap_or_default(),
        user_id: rule.user_id.clone().unwrap_or_default(),
        attribute: rule.attribute.as_ref().map(|attribute| pb::Attribute {
            name: attribute.name.clone(),
            value: attribute.value.clone(),
        }),
        scope: match rule.public {
            None => pb::RuleScope::Any,
            Some(true) => pb::RuleScope::Public,
            Some(false) => pb::RuleScope::Identified,
        }
        .into(),
    }
}

fn duration(duration: std::time::Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(duration).ok()
}
