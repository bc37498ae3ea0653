//! Who may do what on the plaintext ports that carry no client certificate: the two admin
//! ports and, without TLS, the REST surface. One source for both planes (the data plane
//! includes this file), so the same request meets the same rule on every port.
//!
//! - **Changes need the admin token.** `PUT /log-level` can silence every log, the access log
//!   included, so it needs `Authorization: Bearer <admin token>`; with no token configured it is
//!   refused (closed by default). Reading (`/live`, `/ready`, `/metrics`, `GET /log-level`)
//!   stays open: kubelet probes and metrics scrapers carry no credential. A token rather than
//!   a second, loopback-only listener: the admin port must be reachable from the node for
//!   probes anyway, and a loopback listener would admit every process in the pod (sidecars
//!   included) with no identity at all, while a token is one Kubernetes Secret to mount.
//! - **Only Host values that cannot come from DNS rebinding.** A page on `evil.example` whose
//!   name is re-pointed at 127.0.0.1 or a pod IP makes the browser call these ports as a
//!   same-origin page, able to send any header (the Xrfkey included) and read the answer; its
//!   requests still say `Host: evil.example`. Rebinding needs a name, so a loopback name or an
//!   IP literal cannot be one; kubelet probes and Prometheus send `Host: <pod IP>:<port>`.

use std::net::IpAddr;
use std::path::Path;

use http::{HeaderMap, StatusCode, Uri, header};

/// Shortest admin token accepted: `openssl rand -hex 32` gives 64 characters.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The credential that unlocks changes on an admin port: compared in constant time, never
/// printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token in `value` (surrounding whitespace and a final newline ignored); refused when
    /// shorter than [`MIN_ADMIN_TOKEN_LEN`].
    pub fn new(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(format!(
                "the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters (e.g. openssl rand -hex 32)"
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The token held in `path` (a mounted Kubernetes Secret, say).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read admin_token_file {}: {error}", path.display()))?;
        Self::new(&text)
    }

    fn matches(&self, candidate: &[u8]) -> bool {
        crate::constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// Why a request to an admin port (or the plaintext REST surface) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// The request names a host this port does not answer to (DNS rebinding guard).
    ForeignHost,
    /// No admin token is configured, so nothing may be changed.
    ChangesDisabled,
    /// A token is configured and the request carries none, or another one.
    BadCredential,
}

impl AdminRefusal {
    pub fn status(self) -> StatusCode {
        match self {
            Self::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            Self::ChangesDisabled => StatusCode::FORBIDDEN,
            Self::BadCredential => StatusCode::UNAUTHORIZED,
        }
    }

    /// One line for the caller; it names no secret.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ForeignHost => {
                "the Host header names a host this port does not serve (DNS rebinding guard): use localhost or an IP address"
            }
            Self::ChangesDisabled => {
                "changing the log filter is off: configure admin_token_file (or GATEHOUSE_ADMIN_TOKEN) and send Authorization: Bearer <token>"
            }
            Self::BadCredential => "send the admin token as Authorization: Bearer <token>",
        }
    }

    /// The `WWW-Authenticate` challenge a 401 carries.
    pub fn challenge(self) -> Option<&'static str> {
        (self == Self::BadCredential).then_some("Bearer realm=\"gatehouse-admin\"")
    }
}

/// Which `Host` values a port answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRule {
    /// `localhost` and loopback addresses: a port only this machine reaches.
    Loopback,
    /// Those, and any IP literal: an admin port probes and scrapers reach by pod IP.
    LoopbackOrAddress,
}

/// Admits the request when the host it names (the URI's authority under HTTP/2 or an
/// absolute-form target, else `Host`) fits `rule` or is one of `also` (names the operator
/// configured, compared case-insensitively). A request naming no host at all is admitted:
/// browsers always send one, and some HTTP/1.0 health checkers do not.
pub fn check_host(
    rule: HostRule,
    uri: &Uri,
    headers: &HeaderMap,
    also: &[String],
) -> Result<(), AdminRefusal> {
    let named = match uri.authority() {
        Some(authority) => Some(authority.host().to_owned()),
        None => match headers.get(header::HOST) {
            None => None,
            Some(value) => {
                let authority = value
                    .to_str()
                    .ok()
                    .and_then(|text| text.parse::<http::uri::Authority>().ok())
                    .ok_or(AdminRefusal::ForeignHost)?;
                Some(authority.host().to_owned())
            }
        },
    };
    let Some(host) = named else {
        return Ok(());
    };
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.eq_ignore_ascii_case("localhost")
        || also.iter().any(|name| name.eq_ignore_ascii_case(host))
    {
        return Ok(());
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    match (literal.parse::<IpAddr>(), rule) {
        (Ok(address), _) if address.is_loopback() => Ok(()),
        (Ok(_), HostRule::LoopbackOrAddress) => Ok(()),
        _ => Err(AdminRefusal::ForeignHost),
    }
}

/// Admits a change when `token` is configured and the request carries it as a bearer token.
pub fn authorize_change(
    token: Option<&AdminToken>,
    headers: &HeaderMap,
) -> Result<(), AdminRefusal> {
    let Some(token) = token else {
        return Err(AdminRefusal::ChangesDisabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes)
        .and_then(|value| {
            let (scheme, credential) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then_some(credential.trim_ascii())
        });
    match presented {
        Some(credential) if token.matches(credential) => Ok(()),
        _ => Err(AdminRefusal::BadCredential),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(rule: HostRule, value: &str) -> Result<(), AdminRefusal> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().unwrap());
        check_host(rule, &Uri::from_static("/log-level"), &headers, &[])
    }

    #[test]
    fn loopback_names_and_addresses_are_always_admitted() {
        for value in [
            "localhost",
            "LocalHost:9901",
            "localhost.",
            "127.0.0.1",
            "127.8.9.10:1",
            "[::1]:9902",
        ] {
            assert_eq!(host(HostRule::Loopback, value), Ok(()), "{value}");
        }
    }

    #[test]
    fn an_ip_literal_is_admitted_only_where_the_rule_says_so() {
        assert_eq!(host(HostRule::LoopbackOrAddress, "10.1.2.3:9901"), Ok(()));
        assert_eq!(host(HostRule::LoopbackOrAddress, "[fd00::5]:9901"), Ok(()));
        assert_eq!(
            host(HostRule::Loopback, "10.1.2.3:9901"),
            Err(AdminRefusal::ForeignHost)
        );
    }

    #[test]
    fn names_are_refused_unless_configured() {
        for value in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "a b",
        ] {
            assert_eq!(
                host(HostRule::LoopbackOrAddress, value),
                Err(AdminRefusal::ForeignHost),
                "{value}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "GATEHOUSE.internal:4244".parse().unwrap());
        let also = ["gatehouse.internal".to_owned()];
        assert_eq!(
            check_host(HostRule::Loopback, &Uri::from_static("/"), &headers, &also),
            Ok(())
        );
    }

    #[test]
    fn the_uri_authority_counts_before_host() {
        let uri = Uri::from_static("http://evil.example/log-level");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1".parse().unwrap());
        assert_eq!(
            check_host(HostRule::Loopback, &uri, &headers, &[]),
            Err(AdminRefusal::ForeignHost)
        );
        assert_eq!(
            check_host(
                HostRule::Loopback,
                &Uri::from_static("/"),
                &HeaderMap::new(),
                &[]
            ),
            Ok(())
        );
    }

    #[test]
    fn a_change_needs_the_configured_token() {
        let token = AdminToken::new(&"t".repeat(40)).unwrap();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(
            authorize_change(None, &with(&format!("Bearer {}", "t".repeat(40)))),
            Err(AdminRefusal::ChangesDisabled)
        );
        assert_eq!(
            authorize_change(Some(&token), &HeaderMap::new()),
            Err(AdminRefusal::BadCredential)
        );
        assert_eq!(
            authorize_change(Some(&token), &with("Bearer wrong")),
            Err(AdminRefusal::BadCredential)
        );
        assert_eq!(
            authorize_change(Some(&token), &with(&format!("Basic {}", "t".repeat(40)))),
            Err(AdminRefusal::BadCredential)
        );
        assert_eq!(
            authorize_change(Some(&token), &with(&format!("bearer {}", "t".repeat(40)))),
            Ok(())
        );
        assert!(AdminToken::new("short").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }
}
