//! Public origins: the external base URLs (scheme, host, port) a virtual proxy is served at,
//! and the rules both planes must agree on when they match a request's `Host`, a login target
//! or a browser's `Origin` against them. A node builds every absolute URL from the origin a
//! request's `Host` names, never from the `Host` itself; the control plane records login
//! targets only on a public origin or an allow-listed host. Without configured origins, only
//! loopback hosts are served (development on one machine): a browser elsewhere cannot be sent
//! anywhere an attacker controls by a forged `Host`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest host name DNS can carry (RFC 1035), with one trailing dot.
const MAX_HOST_LEN: usize = 254;
/// Longest label of a host name (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("https") {
            Some(Self::Https)
        } else if text.eq_ignore_ascii_case("http") {
            Some(Self::Http)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    pub fn is_secure(self) -> bool {
        self == Self::Https
    }
}

/// Why an authority (a `Host` value, or the authority of a URL) is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityError {
    Empty,
    NotAscii,
    /// `user@host`: browsers drop the user part, so `real@evil` goes to `evil`.
    UserInfo,
    /// A path, query or fragment where only `host[:port]` belongs.
    NotJustHostAndPort,
    BadPort,
    BadHost,
}

impl fmt::Display for AuthorityError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Empty => "the host is empty",
            Self::NotAscii => "the host is not ASCII",
            Self::UserInfo => "the host carries user information",
            Self::NotJustHostAndPort => "the host carries a path",
            Self::BadPort => "the host's port is not a number from 1 to 65535",
            Self::BadHost => "the host name is not valid",
        })
    }
}

impl std::error::Error for AuthorityError {}

/// A syntactically valid `host[:port]`, borrowed from the text it was read from (checking
/// a request's `Host` allocates nothing). The host keeps its case (compare with
/// [`Authority::same_host`]); an IPv6 literal keeps its brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    text: &'a str,
    /// Where the host ends in `text` (at the port's `:`, or the end).
    host_end: usize,
    port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// Reads `host[:port]` as a `Host` header or a URL carries it: a DNS name of labels of
    /// letters, digits, `-` and `_` (with an optional trailing dot), an IPv4 address, or a
    /// bracketed IPv6 address, then an optional port from 1 to 65535 written one way only (no
    /// sign, no leading zero, so two spellings cannot compare unequal). Nothing else: no user
    /// information, no path, no percent-encoding, no empty port.
    pub fn parse(text: &'a str) -> Result<Self, AuthorityError> {
        if text.is_empty() {
            return Err(AuthorityError::Empty);
        }
        // One pass over the bytes for what the three checks below look for, in their order.
        let (mut not_ascii, mut user_info, mut more) = (false, false, false);
        for byte in text.bytes() {
            not_ascii |= !byte.is_ascii();
            user_info |= byte == b'@';
            more |= matches!(byte, b'/' | b'\\' | b'?' | b'#');
        }
        if not_ascii {
            return Err(AuthorityError::NotAscii);
        }
        if user_info {
            return Err(AuthorityError::UserInfo);
        }
        if more {
            return Err(AuthorityError::NotJustHostAndPort);
        }
        let host_end = if text.starts_with('[') {
            text.find(']').map_or(text.len(), |at| at + 1)
        } else {
            text.find(':').unwrap_or(text.len())
        };
        let (host, rest) = text.split_at(host_end);
        if host.is_empty() {
            return Err(AuthorityError::Empty);
        }
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(parse_port(port)?),
            None if rest.is_empty() => None,
            None => return Err(AuthorityError::BadHost),
        };
        let well_formed = match host.strip_prefix('[') {
            Some(literal) => literal
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
            None => is_host_name(host),
        };
        if !well_formed {
            return Err(AuthorityError::BadHost);
        }
        Ok(Self {
            text,
            host_end,
            port,
        })
    }

    /// The authority as sent (case kept), e.g. `Sense.Example:8443`.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The host as sent (IPv6 in brackets).
    pub fn host(&self) -> &'a str {
        &self.text[..self.host_end]
    }

    /// The explicit port, if the text had one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port a client using `scheme` reached.
    pub fn port_for(&self, scheme: Scheme) -> u16 {
        self.port.unwrap_or_else(|| scheme.default_port())
    }

    /// Whether `host` (a host without port) names the same host, ASCII case ignored.
    pub fn same_host(&self, host: &str) -> bool {
        self.host().eq_ignore_ascii_case(host)
    }

    /// `localhost`, `127.0.0.0/8` or `[::1]`: a name that always means the client's own
    /// machine, whoever sent it.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }
}

fn parse_port(text: &str) -> Result<u16, AuthorityError> {
    if text.is_empty()
        || text.len() > 5
        || text.starts_with('0')
        || !text.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err(AuthorityError::BadPort);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(AuthorityError::BadPort),
        Ok(port) => Ok(port),
    }
}

/// Dot-separated labels of letters, digits, `-` and `_` (which some internal names carry),
/// with an optional trailing dot; an IPv4 address is such a name too.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    // Split as bytes: `.` is ASCII, and a byte split costs a fraction of a `char` search.
    !host.is_empty()
        && host.len() < MAX_HOST_LEN
        && host.as_bytes().split(|&byte| byte == b'.').all(|label| {
            (1..=MAX_LABEL_LEN).contains(&label.len())
                && label
                    .iter()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
        })
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .and_then(|ip| ip.parse::<Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback())
}

/// Why a configured public origin was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginError(String);

impl fmt::Display for OriginError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for OriginError {}

/// One external base URL a virtual proxy is served at, e.g. `https://sense.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    scheme: Scheme,
    /// Lowercase; IPv6 in brackets.
    host: String,
    port: u16,
    /// `host` or `host:port` (the port only when it is not the scheme's default), as URLs
    /// built on this origin name it.
    authority: String,
}

impl PublicOrigin {
    /// Reads `scheme://host[:port]`, with an optional trailing `/`; nothing else (no path,
    /// query, user information).
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let refused = |why: &str| OriginError(format!("public origin {text:?} {why}"));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| refused("must be an absolute http or https URL"))?;
        let scheme =
            Scheme::parse(scheme).ok_or_else(|| refused("must be an http or https URL"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let authority = Authority::parse(rest).map_err(|error| match error {
            AuthorityError::NotJustHostAndPort => {
                refused("must be scheme://host[:port] without a path")
            }
            error => refused(&error.to_string()),
        })?;
        Ok(Self::new(
            scheme,
            authority.host(),
            authority.port_for(scheme),
        ))
    }

    /// The origin `scheme://host:port` (the port left out of URLs when it is the default).
    pub fn new(scheme: Scheme, host: &str, port: u16) -> Self {
        let host = host.to_ascii_lowercase();
        let authority = if port == scheme.default_port() {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Self {
            scheme,
            host,
            port,
            authority,
        }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host` or `host:port`, as URLs on this origin carry it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The absolute URL of `path_and_query` on this origin (a `/` is put first if it has
    /// none, so the path can never extend the host).
    pub fn url(&self, path_and_query: &str) -> String {
        let slash = if path_and_query.starts_with('/') {
            ""
        } else {
            "/"
        };
        format!(
            "{}://{}{slash}{path_and_query}",
            self.scheme.as_str(),
            self.authority
        )
    }

    /// Whether a request that named `authority` in its `Host` addressed this origin. A host
    /// without a port means the origin scheme's default port: behind a TLS-terminating load
    /// balancer, `Host: sense.example.com` reached `https://sense.example.com` on 443.
    pub fn serves(&self, authority: &Authority<'_>) -> bool {
        authority.same_host(&self.host) && authority.port_for(self.scheme) == self.port
    }

    /// Whether `scheme` and `authority` (of a URL, or of a browser's `Origin`) are this
    /// origin.
    pub fn is(&self, scheme: Scheme, authority: &Authority<'_>) -> bool {
        self.scheme == scheme && self.serves(authority)
    }
}

impl AsRef<PublicOrigin> for PublicOrigin {
    fn as_ref(&self) -> &PublicOrigin {
        self
    }
}

impl fmt::Display for PublicOrigin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}://{}", self.scheme.as_str(), self.authority)
    }
}

/// The origin among `origins` that a request naming `authority` addressed. When two differ
/// only by scheme (`https://h` and `http://h` both match `Host: h`), the https one: the node
/// cannot tell a TLS-terminating load balancer from a plain-HTTP browser, and choosing http
/// would send tickets and cookies in cleartext.
pub fn served_origin<'o, O: AsRef<PublicOrigin>>(
    origins: &'o [O],
    authority: &Authority<'_>,
) -> Option<&'o O> {
    let mut serving = origins
        .iter()
        .filter(|origin| origin.as_ref().serves(authority));
    let first = serving.next()?;
    if first.as_ref().scheme.is_secure() {
        return Some(first);
    }
    Some(
        serving
            .find(|origin| origin.as_ref().scheme.is_secure())
            .unwrap_or(first),
    )
}

/// Whether a host allow-list entry (`host` or `host:port`, lowercase) admits `authority`
/// reached with `scheme`. An entry without a port admits only the scheme's default port.
pub fn allow_list_admits(entry: &str, scheme: Scheme, authority: &Authority<'_>) -> bool {
    let Ok(allowed) = Authority::parse(entry) else {
        return false;
    };
    authority.same_host(allowed.host()) && authority.port_for(scheme) == allowed.port_for(scheme)
}

/// The scheme and authority of an absolute `http(s)://authority[/...]` URL (a login target, a
/// `reloadUri`, a browser's `Origin`), or `None` for anything else: a relative URL, another
/// scheme, a backslash or user information in the authority.
pub fn url_origin(url: &str) -> Option<(Scheme, Authority<'_>)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = Scheme::parse(scheme)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = Authority::parse(&rest[..end]).ok()?;
    Some((scheme, authority))
}

/// Whether an absolute URL is on one of `origins` or on an allow-listed host, or, when no
/// origin is configured, on a loopback host. This is the rule for every place a browser may
/// be sent to or come from.
pub fn url_is_admitted(url: &str, origins: &[PublicOrigin], allow_list: &[String]) -> bool {
    let Some((scheme, authority)) = url_origin(url) else {
        return false;
    };
    origins.iter().any(|origin| origin.is(scheme, &authority))
        || (origins.is_empty() && authority.is_loopback())
        || allow_list
            .iter()
            .any(|entry| allow_list_admits(entry, scheme, &authority))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn authorities_are_host_and_port_only() {
        let parsed = Authority::parse("Sense.Example.com:8443").unwrap();
        assert_eq!(
            (parsed.host(), parsed.port()),
            ("Sense.Example.com", Some(8443))
        );
        let parsed = Authority::parse("[::1]:80").unwrap();
        assert_eq!((parsed.host(), parsed.port()), ("[::1]", Some(80)));
        assert_eq!(Authority::parse("[::1]").unwrap().port(), None);
        assert_eq!(Authority::parse("10.0.0.1").unwrap().host(), "10.0.0.1");
        for (bad, why) in [
            ("", AuthorityError::Empty),
            (":80", AuthorityError::Empty),
            ("real.example@evil.example", AuthorityError::UserInfo),
            (
                "evil.example/real.example",
                AuthorityError::NotJustHostAndPort,
            ),
            ("evil.example\\real", AuthorityError::NotJustHostAndPort),
            ("evil.example?x", AuthorityError::NotJustHostAndPort),
            ("host:", AuthorityError::BadPort),
            ("host:0", AuthorityError::BadPort),
            ("host:65536", AuthorityError::BadPort),
            ("host:+80", AuthorityError::BadPort),
            ("host:80:81", AuthorityError::BadPort),
            ("host:008080", AuthorityError::BadPort),
            ("ho st", AuthorityError::BadHost),
            ("host%2ecom", AuthorityError::BadHost),
            ("exämple.com", AuthorityError::NotAscii),
            ("host:08080", AuthorityError::BadPort),
            (&"a".repeat(64), AuthorityError::BadHost),
            ("[::1", AuthorityError::BadHost),
            ("[evil]", AuthorityError::BadHost),
            ("[::1]x", AuthorityError::BadHost),
            (".example.com", AuthorityError::BadHost),
            ("a..b", AuthorityError::BadHost),
        ] {
            assert_eq!(Authority::parse(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let origin = PublicOrigin::parse("HTTPS://Sense.Example.com/").unwrap();
        assert_eq!(origin.to_string(), "https://sense.example.com");
        assert_eq!(origin.url("/hub?x=1"), "https://sense.example.com/hub?x=1");
        let origin = PublicOrigin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(origin.authority(), "127.0.0.1:8080");
        assert_eq!(
            PublicOrigin::parse("https://sense.example.com:443")
                .unwrap()
                .authority(),
            "sense.example.com"
        );
        for bad in [
            "sense.example.com",
            "ftp://sense.example.com",
            "https://sense.example.com/hub",
            "https://user@sense.example.com",
            "https://sense.example.com?x",
            "https://",
            "https://sense.example.com:0",
        ] {
            assert!(PublicOrigin::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_host_without_port_reaches_the_scheme_default_port() {
        let https = PublicOrigin::parse("https://sense.example.com").unwrap();
        let serves = |host| https.serves(&Authority::parse(host).unwrap());
        assert!(serves("sense.example.com"));
        assert!(serves("SENSE.example.COM:443"));
        assert!(!serves("sense.example.com:8443"));
        assert!(!serves("sense.example.com.evil.example"));
        assert!(!serves("evil-sense.example.com"));
        assert!(!serves("sense.example.com."));
    }

    #[test]
    fn https_is_served_when_two_origins_differ_only_by_scheme() {
        let origins = [
            PublicOrigin::parse("http://sense.example").unwrap(),
            PublicOrigin::parse("https://sense.example").unwrap(),
            PublicOrigin::parse("http://sense.example:8080").unwrap(),
        ];
        let served = |host| {
            served_origin(&origins, &Authority::parse(host).unwrap()).map(ToString::to_string)
        };
        assert_eq!(
            served("sense.example").as_deref(),
            Some("https://sense.example")
        );
        assert_eq!(
            served("sense.example:8080").as_deref(),
            Some("http://sense.example:8080")
        );
        assert_eq!(
            served("sense.example:80").as_deref(),
            Some("http://sense.example")
        );
        assert_eq!(served("evil.example"), None);
        assert_eq!(
            PublicOrigin::parse("https://h").unwrap().url("*"),
            "https://h/*"
        );
    }

    #[test]
    fn allow_list_entries_without_port_mean_the_default_port() {
        let admits = |entry, scheme, host| {
            allow_list_admits(entry, scheme, &Authority::parse(host).unwrap())
        };
        assert!(admits(
            "portal.example.com",
            Scheme::Https,
            "Portal.Example.com"
        ));
        assert!(admits(
            "portal.example.com",
            Scheme::Https,
            "portal.example.com:443"
        ));
        assert!(admits(
            "portal.example.com",
            Scheme::Http,
            "portal.example.com"
        ));
        assert!(!admits(
            "portal.example.com",
            Scheme::Https,
            "portal.example.com:8443"
        ));
        assert!(!admits(
            "portal.example.com",
            Scheme::Http,
            "portal.example.com:443"
        ));
        assert!(admits(
            "portal.example.com:8443",
            Scheme::Https,
            "portal.example.com:8443"
        ));
        assert!(!admits(
            "portal.example.com:8443",
            Scheme::Https,
            "portal.example.com"
        ));
    }

    #[test]
    fn urls_are_admitted_only_on_origins_allow_list_or_loopback_without_origins() {
        let origins = [PublicOrigin::parse("https://sense.example.com").unwrap()];
        let allow = ["portal.example.com".to_owned()];
        let admitted = |url| url_is_admitted(url, &origins, &allow);
        assert!(admitted("https://sense.example.com/hub"));
        assert!(admitted("HTTPS://SENSE.example.com:443/hub?x"));
        assert!(admitted("https://portal.example.com"));
        assert!(!admitted("http://sense.example.com/hub"));
        assert!(!admitted("https://sense.example.com@evil.example/"));
        assert!(!admitted("https://evil.example/https://sense.example.com/"));
        assert!(!admitted("https://sense.example.com.evil.example/"));
        assert!(!admitted("https://127.0.0.1/"));
        assert!(!admitted("//sense.example.com/"));
        assert!(!admitted("/hub"));
        assert!(!admitted("javascript://sense.example.com/%0aalert(1)"));
        assert!(url_is_admitted("http://127.0.0.1:9/x", &[], &[]));
        assert!(url_is_admitted("http://localhost:9/x", &[], &[]));
        assert!(url_is_admitted("http://[::1]:9/x", &[], &[]));
        assert!(!url_is_admitted("http://sense.example.com/x", &[], &[]));
        assert!(url_is_admitted("https://portal.example.com/x", &[], &allow));
    }
}
