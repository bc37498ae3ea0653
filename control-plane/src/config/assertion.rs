//! `[assertion]` and `[virtual_proxies.assertion]`: the signed identity assertion (a
//! short-lived ES256 JWT) nodes send upstream, and the life of the keys that sign it.

use std::time::Duration;

use serde::Deserialize;

use super::syntax::is_token;

/// The assertion header when a virtual proxy names none.
pub const DEFAULT_HEADER: &str = "X-Gatehouse-Assertion";
/// Longest an assertion may be valid: it is a bearer credential upstream.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Headers an assertion may not travel in: the framing, the client's credentials and what
/// the node writes itself.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "forwarded",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    // What a forward-auth answer carries to the browser or the ingress: an assertion there
    // would replace the session cookie, the login redirect or the challenge.
    "set-cookie",
    "location",
    "www-authenticate",
    "retry-after",
    // Request headers whose meaning upstreams depend on; stripping a client's copy of the
    // assertion header would drop them from every request.
    "accept",
    "content-type",
    "content-encoding",
    "range",
    "expect",
    "origin",
    "referer",
    "user-agent",
    "x-real-ip",
];
/// Prefixes of header families an assertion may not use: the node's own, the browser's
/// fetch metadata and WebSocket handshake, and Envoy's.
const RESERVED_PREFIXES: &[&str] = &["x-forwarded-", "x-gatehouse-", "sec-", "x-envoy-"];

/// `[assertion]`: what every virtual proxy's assertions share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssertionConfig {
    /// The `iss` claim.
    pub issuer: String,
    /// How often a new signing key is made.
    #[serde(with = "humantime_serde")]
    pub key_rotation: Duration,
    /// How long a new key is published in the JWKS before it signs: longer than any
    /// verifier caches the JWKS.
    #[serde(with = "humantime_serde")]
    pub publish_ahead: Duration,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        Self {
            issuer: "gatehouse".to_owned(),
            key_rotation: Duration::from_secs(24 * 3600),
            publish_ahead: Duration::from_secs(3600),
        }
    }
}

impl AssertionConfig {
    /// How often each replica reads the keys again (to learn of keys other replicas made):
    /// several times within `publish_ahead`, so every node holds a key before it signs.
    pub fn reload_interval(&self) -> Duration {
        (self.publish_ahead / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
    }

    /// A key signs from `publish_ahead` after it is made until the next one takes over, a
    /// rotation later (at most a reload late), and is removed two rotations after it was
    /// made: its last assertions must have expired by then.
    pub(super) fn validate(&self, longest_lifetime: Duration) -> Result<(), String> {
        if self.issuer.trim().is_empty() || self.issuer.chars().any(char::is_control) {
            return Err("assertion.issuer must be non-empty text".to_owned());
        }
        if self.publish_ahead < Duration::from_secs(1) {
            return Err("assertion.publish_ahead must be at least 1s".to_owned());
        }
        if self.key_rotation > Duration::from_secs(365 * 24 * 3600) {
            return Err("assertion.key_rotation must be at most 365 days".to_owned());
        }
        if self.key_rotation < self.publish_ahead + longest_lifetime + self.reload_interval() * 2 {
            return Err(
                "assertion.key_rotation must be at least assertion.publish_ahead + the longest \
                 virtual_proxies.assertion.lifetime + 2 key reloads (publish_ahead / 4, at most 30s each)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// `[virtual_proxies.assertion]`: its presence turns the assertion on for the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyAssertionConfig {
    /// The request header (and forward-auth answer header) it travels in.
    #[serde(default = "default_header")]
    pub header: String,
    /// The `aud` claim; default `gatehouse:virtual-proxy:/{prefix}`.
    pub audience: Option<String>,
    /// `exp - iat`.
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
}

fn default_header() -> String {
    DEFAULT_HEADER.to_owned()
}

fn default_lifetime() -> Duration {
    Duration::from_secs(120)
}

impl ProxyAssertionConfig {
    /// The audience the proxy's assertions name.
    pub fn audience_of(&self, prefix: &str) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| format!("gatehouse:virtual-proxy:/{prefix}"))
    }

    /// `login_header`: the proxy's header-authentication header, if any (lowercase).
    pub(super) fn validate(&mut self, login_header: Option<&str>) -> Result<(), String> {
        let name = self.header.to_ascii_lowercase();
        if !is_token(&name) || name.contains('_') {
            return Err(format!(
                "assertion.header {:?} is not a header name without '_'",
                self.header
            ));
        }
        let identity = gatehouse_proto::identity_headers::is_identity_header(&name)
            && name != gatehouse_proto::identity_headers::GATEHOUSE_ASSERTION;
        if identity
            || RESERVED_HEADERS.contains(&name.as_str())
            || (name != gatehouse_proto::identity_headers::GATEHOUSE_ASSERTION
                && RESERVED_PREFIXES
                    .iter()
                    .any(|prefix| name.starts_with(prefix)))
            || login_header == Some(name.as_str())
        {
            return Err(format!(
                "assertion.header {:?} collides with a header the proxy sets or reads",
                self.header
            ));
        }
        self.header = name;
        if self.audience.as_ref().is_some_and(|audience| {
            audience.trim().is_empty() || audience.chars().any(char::is_control)
        }) {
            return Err("assertion.audience must be non-empty text".to_owned());
        }
        if self.lifetime < Duration::from_secs(1) || self.lifetime > MAX_LIFETIME {
            return Err("assertion.lifetime must be between 1s and 1h".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(header: &str) -> ProxyAssertionConfig {
        ProxyAssertionConfig {
            header: header.to_owned(),
            audience: None,
            lifetime: default_lifetime(),
        }
    }

    #[test]
    fn the_header_is_a_fresh_name_and_the_default_audience_names_the_proxy() {
        let mut assertion = proxy("X-Gatehouse-Assertion");
        assert_eq!(assertion.validate(None), Ok(()));
        assert_eq!(assertion.header, "x-gatehouse-assertion");
        assert_eq!(
            assertion.audience_of("sales"),
            "gatehouse:virtual-proxy:/sales"
        );
        assert_eq!(assertion.audience_of(""), "gatehouse:virtual-proxy:/");
        for bad in [
            "X-Qlik-User",
            "Authorization",
            "X_Assertion",
            "X-Forwarded-User",
            "x-remote-user",
            "Set-Cookie",
            "Location",
            "WWW-Authenticate",
            "Content-Type",
            "Sec-WebSocket-Key",
            "X-Gatehouse-Location",
            "X-Envoy-Original-Path",
            "",
        ] {
            assert!(proxy(bad).validate(Some("x-remote-user")).is_err(), "{bad}");
        }
        let mut long = proxy("X-Assertion");
        long.lifetime = Duration::from_secs(7200);
        assert!(long.validate(None).is_err());
    }

    #[test]
    fn keys_outlive_the_assertions_they_signed() {
        let config = AssertionConfig::default();
        assert_eq!(config.validate(MAX_LIFETIME), Ok(()));
        let tight = AssertionConfig {
            key_rotation: Duration::from_secs(3600),
            ..AssertionConfig::default()
        };
        assert!(tight.validate(Duration::from_secs(120)).is_err());
        let quick = AssertionConfig {
            key_rotation: Duration::from_secs(6),
            publish_ahead: Duration::from_secs(2),
            ..AssertionConfig::default()
        };
        assert_eq!(quick.validate(Duration::from_secs(2)), Ok(()));
        assert!(quick.validate(Duration::from_secs(4)).is_err());
    }
}
