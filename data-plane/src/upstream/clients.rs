//! The two clients' ways of sending one attempt ([`Attempt`]): the inline HTTP/1.1
//! connections (`connections.rs`) for plain-HTTP pools, and hyper-util's pooled client for
//! TLS, HTTP/2 and upgrades (its connections are tasks of their own and can be handed over
//! once upgraded, which the inline ones cannot). Each shapes the request the way its
//! connections need and says whether it can send it again; `retry.rs` decides when to.

use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Body as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::connections::{self, SendError};
use super::counted::UpstreamBody;
use super::discovery::ResolvedNames;
use super::member::Member;
use super::retry::{Attempt, AttemptError};
use super::settings::UpstreamSettings;
use super::tls;
use crate::body::ProxyBody;

/// hyper-util's client, as a pool that speaks TLS or HTTP/2 uses it.
pub(super) type PooledClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// The pooled client for `settings`: `tls` is the node's client configuration for upstreams
/// that speak TLS, `resolved` the names their addresses came from.
pub(super) fn pooled_client(
    settings: &UpstreamSettings,
    tls: &rustls::ClientConfig,
    resolved: ResolvedNames,
) -> PooledClient {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(settings.connect_timeout));
    tcp.set_nodelay(true);
    // https URIs only when the pool speaks TLS; the connector leaves http ones alone.
    tcp.enforce_http(false);
    let connector = tls::connector(
        tcp,
        tls,
        settings.tls_server_name.clone(),
        resolved,
        settings.http2,
    );
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(settings.http2)
        .build(connector)
}

/// A request on the inline connections. A connect failure hands the request back whole, so
/// even one with a body can go to another node.
pub(super) struct InlineAttempt {
    /// `None` only while an attempt has it.
    request: Option<Request<ProxyBody>>,
    /// The client sent a `Host`: otherwise each attempt names its node there.
    client_host: bool,
    connect_timeout: Duration,
}

impl InlineAttempt {
    pub(super) fn new(request: Request<ProxyBody>, connect_timeout: Duration) -> Self {
        let (mut parts, body) = request.into_parts();
        parts.uri = origin_form(&parts.uri);
        parts.version = http::Version::HTTP_11;
        // An HTTP/1.1 request needs a Host; a client that sent none (HTTP/1.0) gets the
        // node's address, as hyper-util's client would put there.
        let client_host = parts.headers.contains_key(http::header::HOST);
        Self {
            request: Some(Request::from_parts(parts, body)),
            client_host,
            connect_timeout,
        }
    }
}

impl Attempt for InlineAttempt {
    type Answer = Response<UpstreamBody>;

    fn can_retry(&self) -> bool {
        self.request.is_some()
    }

    async fn send(&mut self, member: &Member) -> Result<Response<UpstreamBody>, AttemptError> {
        let Some(mut request) = self.request.take() else {
            return Err(AttemptError::Failed(
                "the request was sent on an earlier attempt".to_owned(),
            ));
        };
        if !self.client_host
            && let Ok(host) = http::HeaderValue::from_str(member.authority.as_str())
        {
            request.headers_mut().insert(http::header::HOST, host);
        }
        match connections::send(&member.idle, member.address, self.connect_timeout, request).await {
            Ok(response) => Ok(response.map(UpstreamBody::Inline)),
            Err(SendError::Connect(unsent, error)) => {
                tracing::debug!(upstream = %member.address, %error, "connect failed");
                self.request = Some(*unsent);
                Err(AttemptError::Connect)
            }
            Err(SendError::Failed(detail)) => Err(AttemptError::Failed(detail)),
        }
    }
}

/// A request through hyper-util's client, which keeps no request it failed to send: only
/// one without a body can be sent again, made afresh from the head.
pub(super) struct PooledAttempt<'a> {
    client: &'a PooledClient,
    parts: http::request::Parts,
    /// Taken by the first attempt; later ones send an empty body.
    body: Option<ProxyBody>,
    replayable: bool,
    tls: bool,
    http2: bool,
}

impl<'a> PooledAttempt<'a> {
    pub(super) fn new(
        client: &'a PooledClient,
        settings: &UpstreamSettings,
        request: Request<ProxyBody>,
    ) -> Self {
        let replayable = request.body().is_end_stream();
        let (parts, body) = request.into_parts();
        Self {
            client,
            parts,
            body: Some(body),
            replayable,
            tls: settings.tls,
            http2: settings.http2,
        }
    }
}

impl Attempt for PooledAttempt<'_> {
    type Answer = Response<UpstreamBody>;

    fn can_retry(&self) -> bool {
        self.replayable
    }

    async fn send(&mut self, member: &Member) -> Result<Response<UpstreamBody>, AttemptError> {
        let body = match self.body.take() {
            Some(body) => body,
            None => crate::body::empty(),
        };
        let mut request = Request::from_parts(clone_parts(&self.parts), body);
        *request.uri_mut() = upstream_uri(request.uri(), member, self.tls);
        *request.version_mut() = upstream_version(self.http2);
        match self.client.request(request).await {
            Ok(response) => Ok(response.map(UpstreamBody::Pooled)),
            Err(error) if error.is_connect() => Err(AttemptError::Connect),
            Err(error) => Err(AttemptError::Failed(error.to_string())),
        }
    }
}

/// The request head again, for a retry (extensions do not carry over).
fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let (mut cloned, ()) = Request::new(()).into_parts();
    cloned.method = parts.method.clone();
    cloned.uri = parts.uri.clone();
    cloned.version = parts.version;
    cloned.headers = parts.headers.clone();
    cloned
}

/// The protocol spoken to upstreams is the pool's, whatever the client spoke: an HTTP/2
/// browser request goes to an HTTP/1.1 engine as HTTP/1.1.
fn upstream_version(http2: bool) -> http::Version {
    if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    }
}

/// The request's path and query, addressed to `member` (absolute form, which hyper-util's
/// client routes by).
fn upstream_uri(uri: &Uri, member: &Member, tls: bool) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(member.authority.clone());
    parts.path_and_query = Some(path_and_query(uri));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// The request's path and query alone (origin form), as an HTTP/1.1 request line carries
/// it. HTTP/2 clients' requests arrive in absolute form.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path_and_query(uri));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

fn path_and_query(uri: &Uri) -> http::uri::PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
}
