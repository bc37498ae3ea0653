//! The proxy, the node's front end: a request passes the phases in order, and the first that
//! refuses it answers.
//!
//! limits (`request::limits`) → route to a virtual proxy → context (`request::context`) →
//! the node's own endpoints (`endpoints`) → identify (`auth::identify`; skipped on a public
//! path, `request::public`) → admit (`request::admit`) → rewrite for the upstream
//! (`rewrite`) → forward (`forward` for HTTP, `websocket` for upgrades) → rewrite the
//! response. The access log and the metrics are written once, around them.

pub mod forward;
pub mod headers;
pub mod rewrite;
pub mod websocket;
pub mod websocket_relay;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use self::forward::AnsweredBy;
use crate::assertion;
use crate::auth::identify::TicketLanding;
use crate::body::ProxyBody;
use crate::endpoints;
use crate::refusal::Refusal;
use crate::request::admit::{self, Admitted};
use crate::request::context::{Client, RequestCtx};
use crate::request::{limits, path};
use crate::state::NodeState;

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
    let mut client = Client {
        peer,
        listener_port,
        secure,
        traced: false,
    };
    match request_span(&request, &mut client) {
        Some(span) => {
            handle_in_span(&state, request, client)
                .instrument(span)
                .await
        }
        None => handle_in_span(&state, request, client).await,
    }
}

/// The request's span, the child of the client's W3C trace context; `None` when it is
/// neither logged nor exported, which skips reading and writing trace context (a global
/// lock per request). Marks `client` as traced when there is one.
pub fn request_span<B>(request: &Request<B>, client: &mut Client) -> Option<tracing::Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span =
        tracing::info_span!("request", method = %request.method(), path = request.uri().path());
    if span.is_disabled() {
        return None;
    }
    let _ = span.set_parent(gatehouse_runtime::logging::extract_context(
        request.headers(),
    ));
    client.traced = true;
    Some(span)
}

async fn handle_in_span(
    state: &NodeState,
    mut request: Request<Incoming>,
    client: Client,
) -> Response<ProxyBody> {
    let Routed { ctx, finish } = match route(state, &mut request, client) {
        Route::Answered(response) => return response,
        Route::Proxied(routed) => routed,
    };
    let mut response = match ctx {
        Ok(ctx) => serve(state, &ctx, request).await,
        Err(refusal) => refusal.into_response(),
    };
    let upstream = response
        .extensions()
        .get::<AnsweredBy>()
        .map(|answered| answered.0);
    let status = response.status();
    finish.apply(state, status, response.headers_mut(), upstream);
    response
}

/// What the phases before identification made of a request.
#[derive(Debug)]
pub enum Route {
    /// Answered (and logged) already: over a limit, the JWKS, no virtual proxy, a path
    /// spelled in a way the proxy refuses.
    Answered(Response<ProxyBody>),
    /// Routed to a virtual proxy.
    Proxied(Routed),
}

/// A request routed to a virtual proxy: its context (or why it has none), and the last
/// phase, run once it is answered.
#[derive(Debug)]
pub struct Routed {
    pub ctx: Result<RequestCtx, Refusal>,
    pub finish: Finish,
}

/// What the last phase needs: the virtual proxy, and what the access log and the metrics
/// measure from.
#[derive(Debug)]
pub struct Finish {
    proxy: Arc<crate::virtual_proxy::VirtualProxy>,
    started: std::time::Instant,
    /// Copied for the access log only when it is on: the request moves on before the log.
    logged: Option<(http::Method, String)>,
}

/// The phases before identification, the same for every front end: the limits, the JWKS,
/// routing, the path's spelling, the request's context.
pub fn route<B>(state: &NodeState, request: &mut Request<B>, client: Client) -> Route {
    if let Err(refusal) = limits::admit(&state.limits, request) {
        return Route::Answered(refusal.into_response());
    }
    let started = std::time::Instant::now();
    let logged = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let log = |response: &Response<ProxyBody>, prefix: Option<&str>| {
        if let Some((method, path)) = &logged {
            access_log(method, path, response.status(), started, (prefix, None));
        }
    };
    let table = state.table.load_full();
    // Outside every virtual proxy, so upstreams can always fetch it.
    if request.uri().path() == assertion::JWKS_PATH {
        let response = assertion::jwks_response(table.assertion_keys(), request.method());
        log(&response, None);
        return Route::Answered(response);
    }
    let Some(proxy) = table.route(request.uri().path()).cloned() else {
        let response =
            Refusal::NotFound("no virtual proxy serves this path".into()).into_response();
        log(&response, None);
        return Route::Answered(response);
    };
    if let Err(refusal) = path::check_spelling(request.uri().path(), proxy.allowed_spellings) {
        let response = Refusal::bad_request(refusal.to_string()).into_response();
        log(&response, Some(&proxy.prefix));
        return Route::Answered(response);
    }
    let ctx = RequestCtx::new(request, client, proxy.clone(), table);
    Route::Proxied(Routed {
        ctx,
        finish: Finish {
            proxy,
            started,
            logged,
        },
    })
}

impl Finish {
    /// The last phase, once the response head is known: the virtual proxy's response
    /// headers, the access log line, the request metrics.
    pub fn apply(
        &self,
        state: &NodeState,
        status: http::StatusCode,
        headers: &mut http::HeaderMap,
        upstream: Option<SocketAddr>,
    ) {
        for (name, value) in &self.proxy.response_headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some((method, path)) = &self.logged {
            let prefix = Some(self.proxy.prefix.as_str());
            access_log(method, path, status, self.started, (prefix, upstream));
        }
        state.metrics.request(
            &self.proxy.metric_label,
            status.as_u16(),
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// The phases after routing.
async fn serve(
    state: &NodeState,
    ctx: &RequestCtx,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    if let Some(endpoint) = endpoints::find(ctx) {
        return endpoints::serve(state, ctx, endpoint, request)
            .await
            .unwrap_or_else(Refusal::into_response);
    }
    let client_upgrade = ctx.websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let identified =
        match admit::identify_and_admit(state, ctx, &parts, TicketLanding::Redirect).await {
            Ok(Admitted::User(identified)) => identified,
            Ok(Admitted::Public) => {
                // Never a WebSocket (admission makes upgrades log in), so no upgrade is waiting.
                rewrite::for_upstream(state, ctx, &mut parts, None);
                return forward::http(state, ctx, None, Request::from_parts(parts, body))
                    .await
                    .unwrap_or_else(Refusal::into_response);
            }
            Err(refusal) => return refusal.into_response(),
        };
    rewrite::for_upstream(state, ctx, &mut parts, Some(&identified));
    let session = &identified.user.session;
    let forwarded = match client_upgrade {
        Some(client_upgrade) => websocket::splice(state, ctx, session, parts, client_upgrade).await,
        None => forward::http(state, ctx, Some(session), Request::from_parts(parts, body)).await,
    };
    let mut response = forwarded.unwrap_or_else(Refusal::into_response);
    rewrite::response(response.headers_mut(), identified.user);
    response
}

/// One line per request. The path is normalised and without its query (which may hold a
/// ticket); no cookie, token or header value is logged. Filter with
/// `GATEHOUSE_LOG=...,gatehouse::access=off`. `answered`: the virtual proxy and the
/// upstream node, when there were any.
fn access_log(
    method: &http::Method,
    path: &str,
    status: http::StatusCode,
    started: std::time::Instant,
    answered: (Option<&str>, Option<SocketAddr>),
) {
    let (virtual_proxy, upstream) = answered;
    tracing::info!(
        target: "gatehouse::access",
        %method,
        path,
        status = status.as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        virtual_proxy,
        upstream = upstream.map(tracing::field::display),
    );
}
