//! Which public origin a request addressed. Every absolute URL a node builds for a request
//! (the login target, `proxyRestUri`, `logoutUri`, `loginUri`, the OpenID `redirect_uri`)
//! is on that origin, and a browser may be sent back to, or come from, only the virtual
//! proxy's origins and allow-listed hosts. A `Host` that names none of them is refused before
//! anything is built from it: a forged `Host` would otherwise turn a login into a ticket
//! delivered to the attacker. The matching rules are `gatehouse_proto::origin`'s, which the
//! control plane applies to login targets too.

use gatehouse_proto::origin::{self, Authority, AuthorityError, Scheme};
use http::{HeaderValue, Request, Version};

use crate::refusal::Refusal;
use crate::virtual_proxy::{ConfiguredOrigin, UnknownHost, VirtualProxy};

/// The origin a request addressed, as the browser sees it: its scheme (which decides the
/// cookie's Secure flag, even behind a TLS-terminating load balancer) and its authority.
#[derive(Debug, Clone)]
pub struct Origin {
    pub secure: bool,
    /// `host[:port]`, a reference-counted copy of the configured origin's (or, without
    /// configured origins, of the request's own loopback `Host`).
    authority: HeaderValue,
}

/// Why a request's `Host` cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    Missing,
    Malformed(AuthorityError),
    /// A well-formed host this virtual proxy is not served at.
    NotServed,
}

impl From<HostRefusal> for Refusal {
    fn from(refusal: HostRefusal) -> Self {
        match refusal {
            HostRefusal::Missing => Refusal::bad_request("the request has no Host header"),
            HostRefusal::Malformed(error) => {
                Refusal::bad_request(format!("the Host header is not acceptable: {error}"))
            }
            HostRefusal::NotServed => {
                Refusal::bad_request("this site is not served at the requested host")
            }
        }
    }
}

impl Origin {
    /// The origin a request that reached this node's listener on `listener_port` (over TLS
    /// when `arrived_secure`) addressed, or why none. With public origins configured, the
    /// request's `Host` (or HTTP/2 `:authority`) must name one of them; without, it must be a
    /// loopback name (development on one machine: a loopback name always means the
    /// browser's own machine, so no attacker can receive what is sent there; any port, since
    /// a port-forward or a local relay in front changes it). HTTP/1.0 may leave `Host` out:
    /// such a request is served as the first origin (without any, the listener's loopback
    /// address).
    pub fn resolve<B>(
        proxy: &VirtualProxy,
        request: &Request<B>,
        listener_port: u16,
        arrived_secure: bool,
    ) -> Result<Self, HostRefusal> {
        let host = match request.headers().get(http::header::HOST) {
            Some(host) => host.clone(),
            None => match request.uri().authority() {
                Some(authority) => HeaderValue::from_str(authority.as_str())
                    .map_err(|_| HostRefusal::Malformed(AuthorityError::BadHost))?,
                None if request.version() <= Version::HTTP_10 => {
                    return Ok(Self::default_for(proxy, listener_port, arrived_secure));
                }
                None => return Err(HostRefusal::Missing),
            },
        };
        let text = host
            .to_str()
            .map_err(|_| HostRefusal::Malformed(AuthorityError::BadHost))?;
        let authority = Authority::parse(text).map_err(HostRefusal::Malformed)?;
        if proxy.public_origins.is_empty() {
            return if authority.is_loopback() {
                Ok(Self {
                    secure: arrived_secure,
                    authority: host,
                })
            } else {
                Err(HostRefusal::NotServed)
            };
        }
        let served = origin::served_origin(&proxy.public_origins, &authority)
            .or_else(|| {
                (proxy.unknown_host == UnknownHost::FirstOrigin)
                    .then(|| proxy.public_origins.first())
                    .flatten()
            })
            .ok_or(HostRefusal::NotServed)?;
        Ok(Self::configured(served))
    }

    fn configured(served: &ConfiguredOrigin) -> Self {
        Self {
            secure: served.origin.scheme().is_secure(),
            authority: served.authority().clone(),
        }
    }

    /// The origin of a request that named none: the first public origin, else the
    /// listener's loopback address.
    fn default_for(proxy: &VirtualProxy, listener_port: u16, arrived_secure: bool) -> Self {
        match proxy.public_origins.first() {
            Some(first) => Self::configured(first),
            None => Self {
                secure: arrived_secure,
                authority: HeaderValue::from_str(&format!("127.0.0.1:{listener_port}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1")),
            },
        }
    }

    /// An origin for tests and fuzzing: `scheme://host` without checks.
    pub fn new(secure: bool, host: &str) -> Option<Self> {
        Some(Self {
            secure,
            authority: HeaderValue::from_str(host).ok()?,
        })
    }

    /// `host[:port]` of the origin.
    pub fn host(&self) -> &str {
        // Made from a `&str` or checked by `to_str` in `resolve`.
        self.authority.to_str().unwrap_or_default()
    }

    /// `host[:port]` as a header value (for the upstream's `Host`).
    pub fn authority_header(&self) -> HeaderValue {
        self.authority.clone()
    }

    pub fn scheme(&self) -> &'static str {
        scheme_of(self.secure).as_str()
    }

    /// The absolute URL of a path on this origin (a `/` is put first if it has none, so the
    /// path can never extend the host).
    pub fn url(&self, path_and_query: &str) -> String {
        let slash = if path_and_query.starts_with('/') {
            ""
        } else {
            "/"
        };
        format!("{}://{}{slash}{path_and_query}", self.scheme(), self.host())
    }

    /// Whether `scheme` and `authority` are this very origin.
    fn is(&self, scheme: Scheme, authority: &Authority<'_>) -> bool {
        let own_scheme = scheme_of(self.secure);
        scheme == own_scheme
            && Authority::parse(self.host()).is_ok_and(|own| {
                authority.same_host(own.host())
                    && authority.port_for(scheme) == own.port_for(own_scheme)
            })
    }
}

fn scheme_of(secure: bool) -> Scheme {
    if secure { Scheme::Https } else { Scheme::Http }
}

/// Whether a browser may be sent to `url`, or be trusted when it says it comes from `url`
/// (a WebSocket or CSRF `Origin`): on one of the proxy's own origins (see [`is_own`]), or on
/// an allow-listed host at the port the entry names (the scheme's default when it names
/// none).
pub fn admits_url(proxy: &VirtualProxy, request_origin: &Origin, url: &str) -> bool {
    let Some((scheme, authority)) = origin::url_origin(url) else {
        return false;
    };
    is_own(proxy, request_origin, scheme, &authority)
        || proxy
            .host_allow_list
            .iter()
            .any(|entry| origin::allow_list_admits(entry, scheme, &authority))
}

/// Whether `url` is on one of the proxy's public origins (without any configured, on the
/// request's own origin): a URL of this very site.
pub fn is_on_own_origin(proxy: &VirtualProxy, request_origin: &Origin, url: &str) -> bool {
    origin::url_origin(url)
        .is_some_and(|(scheme, authority)| is_own(proxy, request_origin, scheme, &authority))
}

fn is_own(
    proxy: &VirtualProxy,
    request_origin: &Origin,
    scheme: Scheme,
    authority: &Authority<'_>,
) -> bool {
    if proxy.public_origins.is_empty() {
        request_origin.is(scheme, authority)
    } else {
        // A plaintext origin, which a network attacker can write pages into, never vouches
        // for a request made over https (nor receives a redirect from one).
        proxy.public_origins.iter().any(|configured| {
            configured.origin.is(scheme, authority)
                && (configured.origin.scheme().is_secure() || !request_origin.secure)
        })
    }
}
