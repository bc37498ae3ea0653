//! The request path: route to a virtual proxy, find out who is asking, apply access rules,
//! then forward (HTTP) or splice (WebSocket) to an upstream node.

pub mod authority;
pub mod headers;
pub mod hygiene;
pub mod path;
pub mod websocket;
pub mod websocket_relay;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::auth::{self, Authenticated, Origin, cookie, csrf, query};
use crate::body::ProxyBody;
use crate::personal;
use crate::respond;
use crate::state::NodeState;
use crate::upstream::UpstreamError;
use crate::vproxy::VirtualProxy;

/// Serves one request. Never fails: every problem becomes a response with a status and a
/// short reason. Each request is a span, the child of the client's W3C trace context.
pub async fn handle(
    state: Arc<NodeState>,
    request: Request<Incoming>,
    peer: SocketAddr,
    listener_port: u16,
    secure: bool,
) -> Response<ProxyBody> {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span =
        tracing::info_span!("request", method = %request.method(), path = request.uri().path());
    // Neither logged nor exported: skip reading and writing trace context, which takes a
    // global lock per request.
    if span.is_disabled() {
        return handle_in_span(state, request, peer, listener_port, secure, false).await;
    }
    let _ = span.set_parent(crate::logging::extract_context(request.headers()));
    handle_in_span(state, request, peer, listener_port, secure, true)
        .instrument(span)
        .await
}

async fn handle_in_span(
    state: Arc<NodeState>,
    request: Request<Incoming>,
    peer: SocketAddr,
    listener_port: u16,
    secure: bool,
    traced: bool,
) -> Response<ProxyBody> {
    if let Some(refusal) = oversized(&state, &request) {
        return refusal;
    }
    let mut request = request;
    if let Err(refusal) = hygiene::before_routing(&mut request) {
        return respond::error(StatusCode::BAD_REQUEST, &refusal.to_string());
    }
    match canonical_uri(request.uri()) {
        Some(uri) => *request.uri_mut() = uri,
        None => {
            return respond::error(
                StatusCode::BAD_REQUEST,
                "the request path is not acceptable",
            );
        }
    }
    let started = std::time::Instant::now();
    // Copied for the access log only when it is on: the request moves on before the log.
    let logged = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let table = state.table.load_full();
    let Some(proxy) = table.route(request.uri().path()).cloned() else {
        let response = respond::error(StatusCode::NOT_FOUND, "no virtual proxy serves this path");
        if let Some((method, path)) = &logged {
            access_log(method, path, &response, started, None);
        }
        return response;
    };
    if let Err(refusal) = path::check_spelling(request.uri().path(), proxy.allowed_spellings) {
        let response = respond::error(StatusCode::BAD_REQUEST, &refusal.to_string());
        if let Some((method, path)) = &logged {
            access_log(method, path, &response, started, Some(&proxy.prefix));
        }
        return response;
    }
    let mut response = serve(
        &state,
        &proxy,
        request,
        Client {
            peer,
            listener_port,
            secure,
            traced,
        },
        table.cookie_names(),
    )
    .await;
    for (name, value) in &proxy.response_headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    if let Some((method, path)) = &logged {
        access_log(method, path, &response, started, Some(&proxy.prefix));
    }
    state.metrics.request(
        &proxy.metric_label,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Which upstream node answered, carried on the response for the access log.
#[derive(Debug, Clone, Copy)]
struct AnsweredBy(SocketAddr);

/// One line per request. The path is normalised and without its query (which may hold a
/// ticket); no cookie, token or header value is logged. Filter with
/// `GATEHOUSE_LOG=...,gatehouse::access=off`.
fn access_log(
    method: &http::Method,
    path: &str,
    response: &Response<ProxyBody>,
    started: std::time::Instant,
    virtual_proxy: Option<&str>,
) {
    let upstream = response
        .extensions()
        .get::<AnsweredBy>()
        .map(|answered| answered.0);
    tracing::info!(
        target: "gatehouse::access",
        %method,
        path,
        status = response.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        virtual_proxy,
        upstream = upstream.map(tracing::field::display),
    );
}

/// Who sent a request, and how.
#[derive(Debug, Clone, Copy)]
struct Client {
    peer: SocketAddr,
    /// The port of the listener the request arrived on: without configured public
    /// origins, a node serves the loopback names of this port only.
    listener_port: u16,
    /// Over TLS.
    secure: bool,
    /// The request's span is on: trace context goes upstream.
    traced: bool,
}

async fn serve(
    state: &NodeState,
    proxy: &Arc<VirtualProxy>,
    mut request: Request<Incoming>,
    client: Client,
    session_cookies: &[String],
) -> Response<ProxyBody> {
    let Client {
        peer,
        listener_port,
        secure,
        traced,
    } = client;
    // Before anything is built from the Host: only a public origin's name is served.
    let origin = match Origin::resolve(proxy, &request, listener_port, secure) {
        Ok(origin) => origin,
        Err(refusal) => {
            tracing::debug!(
                ?refusal,
                "request for a host this virtual proxy is not served at"
            );
            return refusal.response();
        }
    };
    let relative = relative_path(request.uri().path(), proxy);
    if matches!(&*relative, "/qps/user" | "/qps/csrftoken") {
        let (parts, _) = request.into_parts();
        return personal::handle(state, proxy, &parts, &origin).await;
    }
    if auth::oidc::is_route(proxy, &relative) {
        let relative = relative.into_owned();
        return auth::oidc::route(state, proxy, &relative, request, &origin).await;
    }
    let websocket = websocket::is_upgrade(&request);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    if websocket && !csrf::websocket_origin_allowed(&parts, proxy, &origin) {
        return respond::error(StatusCode::FORBIDDEN, "WebSocket origin is not allowed");
    }

    let ticket = query::param(parts.uri.query(), "qlikTicket");
    if ticket
        .as_deref()
        .is_some_and(|ticket| !is_well_formed_ticket(ticket))
    {
        return respond::error(StatusCode::BAD_REQUEST, "the login ticket is malformed");
    }
    let authenticated = match &ticket {
        Some(ticket) => match auth::redeem(state, proxy, ticket, &origin, &parts).await {
            // The ticket must not stay in the browser's history or reach upstream logs.
            Ok(login) if !websocket => {
                let clean =
                    query::local_redirect(parts.uri.path(), parts.uri.query(), "qlikTicket");
                return respond::redirect(&clean, login.set_cookie);
            }
            Ok(login) => login,
            Err(refusal) => return refusal,
        },
        None => match auth::authenticate(state, proxy, &parts, peer, &origin).await {
            Ok(login) => login,
            Err(refusal) => return refusal,
        },
    };
    let Authenticated {
        session,
        set_cookie,
        www_authenticate,
    } = authenticated;
    // A session this very request created (ticket, header, anonymous) proves intent; an
    // existing cookie alone does not, since a cross-site page can make the browser send it.
    if websocket && proxy.websocket_requires_csrf_token && set_cookie.is_none() {
        let carries = cookie::read(&parts.headers, &proxy.cookie_name)
            .is_some_and(|token| csrf::carries_token(&parts, token));
        if !carries {
            return respond::error(
                StatusCode::FORBIDDEN,
                "WebSocket upgrades here need the qlik-csrf-token",
            );
        }
    }

    if let Some(reason) = auth::rules::denied(
        &proxy.access_rules,
        &relative_path(parts.uri.path(), proxy),
        parts.method.as_str(),
        &session,
    ) {
        return respond::error(StatusCode::FORBIDDEN, reason);
    }
    if ticket.is_some() {
        let clean = query::without_param(parts.uri.path(), parts.uri.query(), "qlikTicket");
        parts.uri = clean.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
    // HTTP/2 clients send :authority instead of Host; HTTP/1.1 upstreams need Host.
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    parts.uri = upstream_path(&parts.uri, proxy);
    if traced {
        crate::logging::inject_current(&mut parts.headers);
    }
    // Upstreams see the origin the browser used: its scheme behind a TLS-terminating load
    // balancer, and its name when an unknown Host was served as the first origin.
    if parts.headers.get(http::header::HOST).is_some_and(|host| {
        !host
            .as_bytes()
            .eq_ignore_ascii_case(origin.host().as_bytes())
    }) {
        parts
            .headers
            .insert(http::header::HOST, origin.authority_header());
    }
    let hop = headers::Hop {
        peer,
        secure: origin.secure,
        trusted_proxy: headers::is_trusted_proxy(&state.trusted_proxies, peer.ip()),
    };
    headers::for_upstream(
        &mut parts.headers,
        proxy,
        &session,
        hop,
        websocket,
        session_cookies,
    );

    let mut response = match client_upgrade {
        Some(client_upgrade) => {
            websocket::splice(
                state,
                proxy,
                &session,
                parts,
                client_upgrade,
                session_cookies,
            )
            .await
        }
        None => {
            let request = Request::from_parts(parts, body.boxed());
            let sent = std::time::Instant::now();
            match proxy.upstream.send(request, Some(&session.handle)).await {
                Ok((response, address)) => {
                    state
                        .metrics
                        .upstream_answered(&proxy.metric_label, sent.elapsed().as_secs_f64());
                    let (mut parts, body) = response.into_parts();
                    headers::from_upstream(&mut parts.headers, session_cookies);
                    parts.extensions.insert(AnsweredBy(address));
                    Response::from_parts(parts, body.boxed())
                }
                Err(error) => {
                    state
                        .metrics
                        .upstream_failure(&proxy.prefix, failure_kind(&error));
                    upstream_failure(&error)
                }
            }
        }
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    if let Some(negotiate) = www_authenticate {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, negotiate);
    }
    response
}

/// The request URI with its path normalised; `None` when the path cannot be made safe.
fn canonical_uri(uri: &Uri) -> Option<Uri> {
    let normalized = path::normalize(uri.path())?;
    if *normalized == *uri.path() {
        return Some(uri.clone());
    }
    let mut parts = uri.clone().into_parts();
    let target = match uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized.into_owned(),
    };
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// 414 for an over-long request target, 431 for an over-long header line. (hyper already
/// answers 431 when all headers together exceed the read buffer.)
fn oversized<B>(state: &NodeState, request: &Request<B>) -> Option<Response<ProxyBody>> {
    let limits = &state.limits;
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(respond::error(
            StatusCode::URI_TOO_LONG,
            "the request URI is too long",
        ));
    }
    let longest_line = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len())
        .max()
        .unwrap_or(0);
    (longest_line > limits.max_header_line_bytes).then(|| {
        respond::error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "a request header line is too long",
        )
    })
}

/// Tickets are URL-safe text; anything else was tampered with or mangled.
fn is_well_formed_ticket(ticket: &str) -> bool {
    (1..=256).contains(&ticket.len())
        && ticket
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~'))
}

fn failure_kind(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::NoNodes => "no-nodes",
        UpstreamError::Connect(_) => "connect",
        UpstreamError::Timeout(_) => "timeout",
        UpstreamError::Failed { .. } => "other",
    }
}

/// The status for an upstream failure; the detail goes to the log only.
pub fn upstream_failure(error: &UpstreamError) -> Response<ProxyBody> {
    tracing::warn!(%error, "upstream request failed");
    match error {
        UpstreamError::NoNodes => {
            respond::error(StatusCode::SERVICE_UNAVAILABLE, "no upstream is available")
        }
        UpstreamError::Timeout(_) => respond::error(
            StatusCode::GATEWAY_TIMEOUT,
            "the upstream did not answer in time",
        ),
        UpstreamError::Connect(_) | UpstreamError::Failed { .. } => {
            respond::error(StatusCode::BAD_GATEWAY, "the upstream could not be reached")
        }
    }
}

/// The path below the virtual proxy's prefix, starting with `/`.
fn relative_path<'a>(path: &'a str, proxy: &VirtualProxy) -> std::borrow::Cow<'a, str> {
    let rest = if proxy.prefix.is_empty() {
        path
    } else {
        path.strip_prefix('/')
            .and_then(|path| path.strip_prefix(proxy.prefix.as_str()))
            .unwrap_or(path)
    };
    if rest.starts_with('/') {
        rest.into()
    } else {
        format!("/{rest}").into()
    }
}

/// The URI the upstream sees: the prefix removed if the proxy says so.
fn upstream_path(uri: &Uri, proxy: &VirtualProxy) -> Uri {
    if !proxy.strip_prefix || proxy.prefix.is_empty() {
        return uri.clone();
    }
    let path = relative_path(uri.path(), proxy);
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    path_and_query.parse().unwrap_or_else(|_| uri.clone())
}
