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
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut client = Client {
        peer,
        listener_port,
        secure,
        traced: false,
    };
    let span =
        tracing::info_span!("request", method = %request.method(), path = request.uri().path());
    // Neither logged nor exported: skip reading and writing trace context, which takes a
    // global lock per request.
    if span.is_disabled() {
        return handle_in_span(&state, request, client).await;
    }
    let _ = span.set_parent(gatehouse_runtime::logging::extract_context(
        request.headers(),
    ));
    client.traced = true;
    handle_in_span(&state, request, client)
        .instrument(span)
        .await
}

async fn handle_in_span(
    state: &NodeState,
    mut request: Request<Incoming>,
    client: Client,
) -> Response<ProxyBody> {
    if let Err(refusal) = limits::admit(&state.limits, &mut request) {
        return refusal.into_response();
    }
    let started = std::time::Instant::now();
    // Copied for the access log only when it is on: the request moves on before the log.
    let logged = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let table = state.table.load_full();
    // Outside every virtual proxy, so upstreams can always fetch it.
    if request.uri().path() == assertion::JWKS_PATH {
        let response = assertion::jwks_response(table.assertion_keys(), request.method());
        if let Some((method, path)) = &logged {
            access_log(method, path, &response, started, None);
        }
        return response;
    }
    let Some(proxy) = table.route(request.uri().path()).cloned() else {
        let response =
            Refusal::NotFound("no virtual proxy serves this path".into()).into_response();
        if let Some((method, path)) = &logged {
            access_log(method, path, &response, started, None);
        }
        return response;
    };
    if let Err(refusal) = path::check_spelling(request.uri().path(), proxy.allowed_spellings) {
        let response = Refusal::bad_request(refusal.to_string()).into_response();
        if let Some((method, path)) = &logged {
            access_log(method, path, &response, started, Some(&proxy.prefix));
        }
        return response;
    }
    let mut response = match RequestCtx::new(&request, client, proxy.clone(), table) {
        Ok(ctx) => serve(state, &ctx, request).await,
        Err(refusal) => refusal.into_response(),
    };
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
    rewrite::response(&mut response, identified.user);
    response
}

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
