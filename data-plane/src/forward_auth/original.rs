//! The original request, rebuilt from what the ingress says about it. Each ingress has its
//! convention: nginx `auth_request` and ingress-nginx send `X-Original-URI` (or the whole
//! `X-Original-URL`) and `X-Original-Method`; Traefik and Caddy send `X-Forwarded-Method`,
//! `-Proto`, `-Host` and `-Uri`. They are believed only from `forward_auth.trusted_networks`:
//! an authorizer that took any caller's word for the URI could be steered around the access
//! rules. From anywhere else they are never read, and since nothing else describes an
//! original request, the answer is a 400, never a decision about the authorizer's own path.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};

use crate::proxy::headers::is_trusted_proxy;
use crate::refusal::Refusal;
use crate::request::context::Client;

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The headers through which an ingress describes the original request. (A static: a const
/// array would be made and dropped again at each use.)
static DESCRIBING: [HeaderName; 9] = [
    X_ORIGINAL_URL,
    X_ORIGINAL_URI,
    X_ORIGINAL_METHOD,
    X_FORWARDED_URI,
    X_FORWARDED_METHOD,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    X_FORWARDED_FOR,
    X_REAL_IP,
];

// Each describing header's place in `DESCRIBING`.
const ORIGINAL_URL: usize = 0;
const ORIGINAL_URI: usize = 1;
const ORIGINAL_METHOD: usize = 2;
const FORWARDED_URI: usize = 3;
const FORWARDED_METHOD: usize = 4;
const FORWARDED_HOST: usize = 5;
const FORWARDED_PROTO: usize = 6;
const FORWARDED_FOR: usize = 7;
const REAL_IP: usize = 8;

/// How a check reached this node.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The ingress's address.
    pub peer: SocketAddr,
    /// The port of the forward-auth listener.
    pub listener_port: u16,
    /// The check arrived over TLS.
    pub secure: bool,
}

/// What an ingress says about the original request, read from its headers.
#[derive(Debug, Default)]
pub struct Description<'a> {
    pub method: Option<&'a str>,
    /// An absolute URL (`X-Original-URL`), else a path and query.
    pub uri: Option<&'a str>,
    pub host: Option<&'a str>,
    pub proto: Option<&'a str>,
    /// The browser's address as the ingress saw it.
    pub client: Option<IpAddr>,
}

impl<'a> Description<'a> {
    /// The description in `headers`, by each ingress's convention.
    pub fn from_headers(headers: &'a HeaderMap) -> Result<Self, Refusal> {
        let mut describing = Describing::default();
        for (name, value) in headers {
            describing.note(name.as_str(), value.as_bytes());
        }
        describing.description()
    }
}

/// What one header of a description said: its first value, whether it came more than once,
/// and (for `X-Forwarded-For`, whose last entry counts) its last value.
#[derive(Debug, Default, Clone, Copy)]
struct Said<'a> {
    first: Option<&'a [u8]>,
    repeated: bool,
    last: Option<&'a [u8]>,
}

/// The describing headers of one check, gathered in one pass over its headers (a check's
/// headers are looked through once, not once per name).
#[derive(Debug, Default)]
struct Describing<'a> {
    said: [Said<'a>; 9],
}

impl<'a> Describing<'a> {
    /// Takes note of one header line; whether it is one of the describing headers.
    fn note(&mut self, name: &str, value: &'a [u8]) -> bool {
        // Every describing header is an `x-` one; most of a check's others are not.
        if !name
            .as_bytes()
            .first()
            .is_some_and(|first| first.eq_ignore_ascii_case(&b'x'))
        {
            return false;
        }
        let Some(index) = DESCRIBING
            .iter()
            .position(|describing| describing.as_str().eq_ignore_ascii_case(name))
        else {
            return false;
        };
        let said = &mut self.said[index];
        match said.first {
            None => said.first = Some(value),
            Some(_) => said.repeated = true,
        }
        said.last = Some(value);
        true
    }

    /// The description, or why it is refused: the same checks in the same order whichever
    /// way the headers arrived. (Headers are named by their place in `DESCRIBING`: finding
    /// each by comparing names was 3 % of a check.)
    fn description(&self) -> Result<Description<'a>, Refusal> {
        let one = |index: usize| -> Result<Option<&'a str>, Refusal> {
            let said = self.said[index];
            let Some(value) = said.first else {
                return Ok(None);
            };
            let name = &DESCRIBING[index];
            if said.repeated {
                return Err(Refusal::bad_request(format!("{name} is repeated")));
            }
            header_text(value)
                .map(|text| Some(text.trim()))
                .ok_or_else(|| Refusal::bad_request(format!("{name} is not text")))
        };
        // One convention per check: the ingress sets its own headers and passes the
        // client's on, so a header of another convention is the client's. No precedence
        // between them (a client could pick the one that wins): two are refused.
        let uris = [
            (one(ORIGINAL_URL)?, ORIGINAL_METHOD),
            (one(ORIGINAL_URI)?, ORIGINAL_METHOD),
            (one(FORWARDED_URI)?, FORWARDED_METHOD),
        ];
        let mut described = uris.iter().filter(|(uri, _)| uri.is_some());
        let (uri, method) = match (described.next(), described.next()) {
            (Some((uri, method_header)), None) => (*uri, one(*method_header)?),
            (None, _) => (None, None),
            (Some(_), Some(_)) => {
                return Err(Refusal::bad_request(
                    "the check names the original URI in more than one way (X-Original-URL, X-Original-URI, X-Forwarded-Uri)",
                ));
            }
        };
        let host = one(FORWARDED_HOST)?;
        if host.is_some_and(|host| host.contains(',')) {
            return Err(Refusal::bad_request(
                "X-Forwarded-Host names more than one host",
            ));
        }
        Ok(Description {
            method,
            uri,
            host,
            proto: one(FORWARDED_PROTO)?,
            client: client_address(self.said[FORWARDED_FOR].last, self.said[REAL_IP].first)?,
        })
    }
}

/// A header value as text, as `HeaderValue::to_str` reads it: visible ASCII and tabs only.
pub fn header_text(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&byte| byte == b'\t' || (32..127).contains(&byte))
    {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// The browser's address: the last `X-Forwarded-For` entry (the one the ingress itself
/// appended), else `X-Real-IP`; none when neither is sent. One that is no address is refused:
/// taking the ingress's own address instead would pass header authentication's
/// `trusted_networks` whenever the ingress is in them. The entry is cut out of the bytes, not
/// of the text: a client's non-ASCII entry before the ingress's must neither hide the
/// ingress's entry nor count as no header at all.
fn client_address(
    last_forwarded_for: Option<&[u8]>,
    real_ip: Option<&[u8]>,
) -> Result<Option<IpAddr>, Refusal> {
    let last_forwarded =
        last_forwarded_for.map(|list| list.rsplit(|&byte| byte == b',').next().unwrap_or_default());
    let Some(named) = last_forwarded.or(real_ip) else {
        return Ok(None);
    };
    std::str::from_utf8(named)
        .ok()
        .and_then(|named| named.trim().parse::<IpAddr>().ok())
        .map(|address| Some(address.to_canonical()))
        .ok_or_else(|| {
            Refusal::bad_request(
                "the client's address (X-Forwarded-For or X-Real-IP) is not an IP address",
            )
        })
}

/// Whether `peer` may describe original requests.
pub fn is_trusted(trusted_networks: &[ipnet::IpNet], peer: IpAddr) -> bool {
    is_trusted_proxy(trusted_networks, peer)
}

/// The original request of a check whose headers are `headers`, or why there is none. The
/// original carries the check's other headers (the cookie, `Authorization`, `Origin`, ...)
/// as the browser sent them, minus the description and any framing.
pub fn rebuild(
    mut headers: HeaderMap,
    caller: Caller,
    trusted_networks: &[ipnet::IpNet],
) -> Result<(Request<()>, Client), Refusal> {
    if !is_trusted(trusted_networks, caller.peer.ip()) {
        tracing::info!(peer = %caller.peer, "forward-auth check from an untrusted network");
        return Err(untrusted());
    }
    let described = {
        let description = Description::from_headers(&headers)?;
        let fallback_host = headers.get(HOST).and_then(|host| host.to_str().ok());
        Described::resolve(description, caller, fallback_host)?
    };
    for name in &DESCRIBING {
        headers.remove(name);
    }
    for name in [CONTENT_LENGTH, TRANSFER_ENCODING] {
        headers.remove(name);
    }
    Ok(described.into_request(headers, caller))
}

/// A check's header lines as the node's own HTTP/1 loop reads them, sorted as they arrive:
/// the description noted, the check's own `Host` kept aside (the original's is the one
/// described), framing dropped, and every other line put straight into the original's
/// headers. The same request as [`rebuild`] makes from a map of all of them, without that
/// map and its removals.
#[derive(Debug)]
pub struct CheckLines<'a> {
    describing: Describing<'a>,
    host: Option<&'a [u8]>,
    others: HeaderMap,
}

impl<'a> CheckLines<'a> {
    pub fn with_capacity(lines: usize) -> Self {
        Self {
            describing: Describing::default(),
            host: None,
            others: HeaderMap::with_capacity(lines),
        }
    }

    /// Adds one line as httparse read it; `None` when its name cannot be a header's. Its
    /// value is not looked through here: httparse takes in a value exactly the bytes
    /// `HeaderValue` does (no control character but the tab), and a second pass over every
    /// cookie was 3.5 % of a check. A describing value is read as text later, and every other
    /// one is checked once more where it becomes a `HeaderValue`.
    pub fn add(&mut self, name: &'a str, value: &'a [u8]) -> Option<()> {
        if self.describing.note(name, value) {
            return Some(());
        }
        if name.eq_ignore_ascii_case(HOST.as_str()) {
            self.host.get_or_insert(value);
            return Some(());
        }
        if name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str())
            || name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str())
        {
            return Some(());
        }
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(value).ok()?;
        self.others.append(name, value);
        Some(())
    }
}

/// [`rebuild`] of a check read as [`CheckLines`].
pub fn rebuild_lines(
    lines: CheckLines<'_>,
    caller: Caller,
    trusted_networks: &[ipnet::IpNet],
) -> Result<(Request<()>, Client), Refusal> {
    if !is_trusted(trusted_networks, caller.peer.ip()) {
        tracing::info!(peer = %caller.peer, "forward-auth check from an untrusted network");
        return Err(untrusted());
    }
    let description = lines.describing.description()?;
    let fallback_host = lines.host.and_then(header_text);
    let described = Described::resolve(description, caller, fallback_host)?;
    Ok(described.into_request(lines.others, caller))
}

fn untrusted() -> Refusal {
    Refusal::bad_request(
        "forwarded request headers are accepted only from forward_auth.trusted_networks",
    )
}

/// The original request `description` speaks of, with `headers`; its `Host` is the one the
/// description names, else `fallback_host` (the check's own).
pub fn describe(
    description: Description<'_>,
    headers: HeaderMap,
    caller: Caller,
    fallback_host: Option<&str>,
) -> Result<(Request<()>, Client), Refusal> {
    Ok(Described::resolve(description, caller, fallback_host)?.into_request(headers, caller))
}

/// A description, checked and owned.
#[derive(Debug)]
struct Described {
    method: Method,
    target: PathAndQuery,
    host: HeaderValue,
    secure: bool,
    client: Option<IpAddr>,
}

impl Described {
    fn resolve(
        description: Description<'_>,
        caller: Caller,
        fallback_host: Option<&str>,
    ) -> Result<Self, Refusal> {
        let method = description.method.ok_or_else(|| {
            Refusal::bad_request(
                "the original method is missing (X-Original-Method or X-Forwarded-Method)",
            )
        })?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Refusal::bad_request("the original method is not a method"))?;
        let uri = description.uri.ok_or_else(|| {
            Refusal::bad_request("the original URI is missing (X-Original-URI or X-Forwarded-Uri)")
        })?;
        // Parsing would drop a fragment silently, and the ingress forwards it: `/app/hub#/../x`.
        if uri.contains('#') {
            return Err(Refusal::bad_request(
                "the original URI holds a fragment, which no browser sends",
            ));
        }
        let secure = match description.proto {
            None => caller.secure,
            Some(proto) if proto.eq_ignore_ascii_case("https") => true,
            Some(proto) if proto.eq_ignore_ascii_case("http") => false,
            Some(_) => {
                return Err(Refusal::bad_request(
                    "X-Forwarded-Proto is not http or https",
                ));
            }
        };
        let host = |named: Option<&str>| {
            let host = named
                .or(description.host)
                .or(fallback_host)
                .ok_or_else(|| {
                    Refusal::bad_request("the original host is missing (X-Forwarded-Host)")
                })?;
            HeaderValue::from_str(host)
                .map_err(|_| Refusal::bad_request("the original host is not acceptable"))
        };
        if uri.starts_with('/') {
            let target = uri.parse::<PathAndQuery>().map_err(|_| {
                Refusal::bad_request("the original URI is not a path such as /app/hub")
            })?;
            return Ok(Self {
                method,
                target,
                host: host(None)?,
                secure,
                client: description.client,
            });
        }
        let url = uri
            .parse::<Uri>()
            .ok()
            .filter(|url| matches!(url.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| {
                Refusal::bad_request("the original URL is not an absolute http(s) URL")
            })?;
        Ok(Self {
            method,
            target: url
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            host: host(url.authority().map(http::uri::Authority::as_str))?,
            secure: url.scheme_str() == Some("https"),
            client: description.client,
        })
    }

    fn into_request(self, mut headers: HeaderMap, caller: Caller) -> (Request<()>, Client) {
        headers.insert(HOST, self.host);
        let mut request = Request::new(());
        *request.method_mut() = self.method;
        *request.uri_mut() = Uri::from(self.target);
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        let client = Client {
            peer: SocketAddr::new(self.client.unwrap_or(caller.peer.ip()), caller.peer.port()),
            listener_port: caller.listener_port,
            secure: self.secure,
            traced: false,
        };
        (request, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: Caller = Caller {
        peer: SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)), 40000),
        listener_port: 9904,
        secure: false,
    };

    fn trusted() -> Vec<ipnet::IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    /// The check's headers as the node's own loop reads them, line by line (names as sent).
    fn lines(headers: &HeaderMap) -> CheckLines<'_> {
        let mut lines = CheckLines::with_capacity(headers.len());
        for (name, value) in headers {
            lines.add(name.as_str(), value.as_bytes()).unwrap();
        }
        lines
    }

    /// Both ways of rebuilding give the same request, or the same refusal.
    fn rebuilt_both_ways(headers: HeaderMap) -> Result<(Request<()>, Client), Refusal> {
        let from_lines = rebuild_lines(lines(&headers), CALLER, &trusted());
        let from_map = rebuild(headers.clone(), CALLER, &trusted());
        match (&from_lines, &from_map) {
            (Ok((a, a_client)), Ok((b, b_client))) => {
                assert_eq!(a.method(), b.method());
                assert_eq!(a.uri(), b.uri());
                let mut a_headers: Vec<_> = a.headers().iter().collect();
                let mut b_headers: Vec<_> = b.headers().iter().collect();
                a_headers.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
                b_headers.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
                assert_eq!(a_headers, b_headers);
                assert_eq!(a_client.peer, b_client.peer);
                assert_eq!(a_client.secure, b_client.secure);
            }
            (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{headers:?}"),
            _ => panic!("one way refused, the other not: {headers:?}"),
        }
        from_map
    }

    #[test]
    fn nginx_and_traefik_descriptions_give_the_same_request() {
        let nginx = headers(&[
            ("x-original-uri", "/app/hub?x=1"),
            ("x-original-method", "POST"),
            ("x-forwarded-host", "sense.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "198.51.100.1, 192.0.2.9"),
            ("cookie", "c=1"),
            ("host", "gatehouse:9904"),
        ]);
        let traefik = headers(&[
            ("x-forwarded-uri", "/app/hub?x=1"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-host", "sense.example"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "192.0.2.9"),
            ("cookie", "c=1"),
        ]);
        let ingress_nginx = headers(&[
            ("x-original-url", "https://sense.example/app/hub?x=1"),
            ("x-original-method", "POST"),
            ("x-forwarded-for", "192.0.2.9"),
            ("cookie", "c=1"),
        ]);
        for described in [nginx, traefik, ingress_nginx] {
            let (request, client) = rebuilt_both_ways(described).unwrap();
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri(), "/app/hub?x=1");
            assert_eq!(request.headers()[HOST], "sense.example");
            assert_eq!(request.headers()["cookie"], "c=1");
            assert!(!request.headers().contains_key("x-forwarded-for"));
            assert!(client.secure);
            assert_eq!(client.peer.ip().to_string(), "192.0.2.9");
        }
    }

    #[test]
    fn a_client_address_that_is_not_text_is_refused_not_taken_as_absent() {
        let described = |forwarded_for: &[u8]| {
            let mut headers = headers(&[
                ("x-original-uri", "/app/hub"),
                ("x-original-method", "GET"),
                ("host", "sense.example"),
            ]);
            headers.insert(
                X_FORWARDED_FOR,
                HeaderValue::from_bytes(forwarded_for).unwrap(),
            );
            rebuilt_both_ways(headers)
        };
        // nginx appends the address it saw to what the client sent.
        let (_, client) = described(b"\xf7\xa7 1.2.3.4, 192.0.2.9").unwrap();
        assert_eq!(client.peer.ip().to_string(), "192.0.2.9");
        let refusal = described(b"192.0.2.\xf7").unwrap_err();
        assert_eq!(refusal.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn descriptions_from_untrusted_networks_are_not_read() {
        let described = headers(&[
            ("x-original-uri", "/app/public"),
            ("x-original-method", "GET"),
        ]);
        let stranger = Caller {
            peer: "203.0.113.1:5000".parse().unwrap(),
            ..CALLER
        };
        let refusal = rebuild(described, stranger, &trusted()).unwrap_err();
        assert_eq!(refusal.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_incomplete_or_ambiguous_description_is_refused() {
        for bad in [
            headers(&[("x-original-method", "GET"), ("host", "a")]),
            headers(&[("x-original-uri", "/app/"), ("host", "a")]),
            headers(&[
                ("x-original-uri", "app/hub"),
                ("x-original-method", "GET"),
                ("host", "a"),
            ]),
            headers(&[
                ("x-original-url", "ftp://a/app/"),
                ("x-original-method", "GET"),
            ]),
            headers(&[
                ("x-forwarded-uri", "/app/"),
                ("x-forwarded-uri", "/other/"),
                ("x-forwarded-method", "GET"),
                ("host", "a"),
            ]),
            headers(&[
                ("x-forwarded-uri", "/app/"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "a, b"),
            ]),
            // A client's X-Original-URI passed on by Caddy or Traefik beside theirs.
            headers(&[
                ("x-forwarded-uri", "/app/admin"),
                ("x-forwarded-method", "GET"),
                ("x-original-uri", "/app/hub"),
                ("host", "a"),
            ]),
            // A client's X-Original-URL passed on by nginx beside its X-Original-URI.
            headers(&[
                ("x-original-uri", "/app/admin"),
                ("x-original-method", "GET"),
                ("x-original-url", "http://a/app/hub"),
            ]),
            // The method of the other convention is not read.
            headers(&[
                ("x-forwarded-uri", "/app/"),
                ("x-original-method", "GET"),
                ("host", "a"),
            ]),
            headers(&[
                ("x-forwarded-uri", "/app/"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-proto", "gopher"),
                ("host", "a"),
            ]),
        ] {
            let shown = format!("{bad:?}");
            let refusal = rebuilt_both_ways(bad).unwrap_err();
            assert_eq!(refusal.status(), http::StatusCode::BAD_REQUEST, "{shown}");
        }
    }
}
