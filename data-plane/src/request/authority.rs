//! The authority a request names (`Host`, or HTTP/2's `:authority`), checked for count and
//! syntax only: which hosts are this node's own is decided elsewhere, against configuration.
//!
//! Two `Host` headers, or a `Host` that disagrees with `:authority` or an absolute-form target,
//! let a front end and an upstream each pick a different one (request smuggling, cache
//! poisoning, password-reset links to an attacker's host); user info or a path in `Host`
//! turns into another host in code that pastes it into a URL.

use http::header::{HOST, HeaderMap};
use http::{Uri, Version};

pub use gatehouse_proto::origin::Authority;

/// Why a request's authority is refused. Each says in a few words what the client got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request has no Host header")]
    Missing,
    #[error("the request has more than one Host header")]
    Repeated,
    #[error("the Host header does not match the request's authority")]
    Conflicting,
    #[error("the Host header is empty")]
    Empty,
    #[error("the Host header is not ASCII")]
    NotAscii,
    #[error("the Host header holds user info")]
    UserInfo,
    #[error("the Host header holds more than a host and port")]
    NotAHost,
    #[error("the Host header's port is not a number from 1 to 65535")]
    BadPort,
}

/// The one authority a request names, from `Host` or (HTTP/2, absolute-form targets) the
/// URI; it must be the same in both places when both carry one. `Missing` is not an error
/// for HTTP/1.0, which has no `Host` requirement: the caller decides.
pub fn request_authority<'a>(
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<Authority<'a>, AuthorityError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Repeated);
    }
    let from_uri = uri
        .authority()
        .map(|authority| authority.as_str().as_bytes());
    let host = host.map(http::HeaderValue::as_bytes);
    let text = match (from_uri, host) {
        (Some(from_uri), Some(host)) if !from_uri.eq_ignore_ascii_case(host) => {
            return Err(AuthorityError::Conflicting);
        }
        // RFC 9112: an HTTP/1.1 request carries Host even with an absolute-form target.
        (Some(_), None) if version == Version::HTTP_11 => {
            return Err(AuthorityError::Missing);
        }
        (Some(text), _) | (None, Some(text)) => text,
        (None, None) => return Err(AuthorityError::Missing),
    };
    parse(text)
}

/// `host[:port]` with a host name, an IPv4 address or a bracketed IPv6 address: the syntax
/// both planes agree on (`gatehouse_proto::origin`), with this module's reasons.
pub fn parse(text: &[u8]) -> Result<Authority<'_>, AuthorityError> {
    use gatehouse_proto::origin::AuthorityError as Syntax;
    let text = std::str::from_utf8(text).map_err(|_| {
        if text.is_empty() {
            AuthorityError::Empty
        } else {
            AuthorityError::NotAscii
        }
    })?;
    Authority::parse(text).map_err(|error| match error {
        Syntax::Empty => AuthorityError::Empty,
        Syntax::NotAscii => AuthorityError::NotAscii,
        Syntax::UserInfo => AuthorityError::UserInfo,
        Syntax::BadPort => AuthorityError::BadPort,
        Syntax::NotJustHostAndPort | Syntax::BadHost => AuthorityError::NotAHost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_hosts(hosts: &[&'static [u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(HOST, HeaderValue::from_bytes(host).unwrap());
        }
        headers
    }

    /// Whether an HTTP/1.1 request of `/` with these `Host` lines names an authority, and
    /// which (as text, host and port).
    fn http11(hosts: &[&'static [u8]]) -> Result<(String, String, Option<u16>), AuthorityError> {
        let headers = with_hosts(hosts);
        let uri = Uri::from_static("/");
        request_authority(Version::HTTP_11, &uri, &headers)
            .map(|a| (a.as_str().to_owned(), a.host().to_owned(), a.port()))
    }

    #[test]
    fn well_formed_hosts_are_split_into_host_and_port() {
        let named = |text: &str, host: &str, port| Ok((text.to_owned(), host.to_owned(), port));
        assert_eq!(
            http11(&[b"Sense.Example"]),
            named("Sense.Example", "Sense.Example", None)
        );
        assert_eq!(
            http11(&[b"10.0.0.1:8443"]),
            named("10.0.0.1:8443", "10.0.0.1", Some(8443))
        );
        assert_eq!(
            http11(&[b"[2001:db8::1]:80"]),
            named("[2001:db8::1]:80", "[2001:db8::1]", Some(80))
        );
        assert_eq!(http11(&[b"[::1]"]), named("[::1]", "[::1]", None));
        for good in [
            &b"localhost"[..],
            b"sense.example.",
            b"my_host.corp",
            b"x:65535",
            b"x:1",
        ] {
            assert!(parse(good).is_ok(), "{}", String::from_utf8_lossy(good));
        }
    }

    #[test]
    fn each_malformed_host_gets_its_reason() {
        use AuthorityError::*;
        let cases: [(&'static [u8], AuthorityError); 18] = [
            (b"", Empty),
            (b"s\xc3\xa9nse.example", NotAscii),
            (b"user@sense.example", UserInfo),
            (b"user:pw@sense.example", UserInfo),
            (b"sense.example/admin", NotAHost),
            (b"sense.example?x", NotAHost),
            (b"sense example", NotAHost),
            (b"sense..example", NotAHost),
            (b".sense.example", NotAHost),
            (b"::1", Empty),
            (b"x:080", BadPort),
            (b"[::1", NotAHost),
            (b"[::1]x", NotAHost),
            (b"[not-ip]", NotAHost),
            (b"x:", BadPort),
            (b"x:0", BadPort),
            (b"x:65536", BadPort),
            (b"x:+80", BadPort),
        ];
        for (text, reason) in cases {
            assert_eq!(
                parse(text),
                Err(reason),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(parse(b"x:080808"), Err(BadPort));
        assert_eq!(parse(&[b'a'; 300]), Err(NotAHost));
    }

    #[test]
    fn one_host_is_required_and_must_agree_with_the_uri() {
        use AuthorityError::*;
        assert_eq!(http11(&[]), Err(Missing));
        assert_eq!(http11(&[b"a", b"a"]), Err(Repeated));
        let absolute = Uri::from_static("http://sense.example/x");
        assert_eq!(
            request_authority(Version::HTTP_11, &absolute, &with_hosts(&[b"evil.example"])),
            Err(Conflicting)
        );
        assert_eq!(
            request_authority(Version::HTTP_11, &absolute, &with_hosts(&[])),
            Err(Missing)
        );
        assert!(
            request_authority(
                Version::HTTP_11,
                &absolute,
                &with_hosts(&[b"SENSE.example"])
            )
            .is_ok()
        );
        // HTTP/2: :authority alone, or with an equal Host.
        let h2 = |hosts: &[&'static [u8]]| {
            request_authority(Version::HTTP_2, &absolute, &with_hosts(hosts))
                .map(|authority| authority.as_str().to_owned())
        };
        assert_eq!(h2(&[]).as_deref(), Ok("sense.example"));
        assert!(h2(&[b"sense.example"]).is_ok());
        assert_eq!(h2(&[b"evil.example"]), Err(Conflicting));
        let no_authority = Uri::from_static("/x");
        assert_eq!(
            request_authority(Version::HTTP_2, &no_authority, &with_hosts(&[b"h"]))
                .unwrap()
                .as_str(),
            "h"
        );
        assert_eq!(
            request_authority(Version::HTTP_10, &no_authority, &with_hosts(&[])),
            Err(Missing)
        );
    }

    proptest::proptest! {
        #[test]
        fn what_parses_is_a_host_and_an_optional_port(text in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            if let Ok(authority) = parse(&text) {
                proptest::prop_assert!(!authority.host().is_empty());
                proptest::prop_assert!(!authority.as_str().contains(['@', '/', '?', '#', ' ', '\\']));
                let rebuilt = match authority.port() {
                    Some(port) => format!("{}:{port}", authority.host()),
                    None => authority.host().to_owned(),
                };
                proptest::prop_assert_eq!(rebuilt.len(), authority.as_str().len());
            }
        }

        #[test]
        fn the_http_crate_reads_the_same_host_and_port(text in "[a-zA-Z0-9.:_@\\[\\]-]{0,24}") {
            if let Ok(ours) = parse(text.as_bytes()) {
                let theirs: http::uri::Authority = text.parse().unwrap();
                proptest::prop_assert_eq!(theirs.host(), ours.host());
                proptest::prop_assert_eq!(theirs.port_u16(), ours.port());
            }
        }
    }
}
