//! The admin port: `/live` (the process runs), `/ready` (it holds a configuration snapshot,
//! so it can route; it does not flap with Redis or the control plane), `/status`,
//! `/metrics`, and `/log-level` (GET the filter in force, PUT a new one with the admin
//! token). Every request must name a loopback or IP-address host, and a change needs the
//! token: see [`admin_access`](gatehouse_runtime::admin_access).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{self, ProxyBody};
use crate::respond;
use crate::state::NodeState;
use gatehouse_runtime::admin_access::{self, AdminRefusal, AdminToken, HostRule};
use gatehouse_runtime::logging::LogControl;

/// What `/log-level` needs: the process's log control, and the token that unlocks changes.
#[derive(Debug, Clone, Default)]
pub struct LogLevel {
    pub logs: Option<LogControl>,
    pub token: Option<AdminToken>,
}

pub async fn handle(
    state: Arc<NodeState>,
    log_level: LogLevel,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if let Err(refusal) = admin_access::check_host(
        HostRule::LoopbackOrAddress,
        request.uri(),
        request.headers(),
        &[],
    ) {
        return refuse(refusal);
    }
    if request.uri().path() == "/log-level" {
        return log_level_endpoint(log_level, peer, request).await;
    }
    if request.method() != Method::GET {
        return respond::text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    match request.uri().path() {
        "/live" => respond::json(StatusCode::OK, &json!({ "live": true })),
        "/metrics" => {
            let upstreams: Vec<(String, usize, usize)> = state
                .table
                .load()
                .all()
                .iter()
                .map(|proxy| {
                    let (healthy, ejected) = proxy.upstream.health();
                    (proxy.prefix.clone(), healthy, ejected)
                })
                .collect();
            let text = state
                .metrics
                .render(state.cache.len(), state.sockets.count(), &upstreams);
            let mut response = http::Response::new(body::full(text));
            if let Ok(value) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse()
            {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, value);
            }
            response
        }
        "/ready" if state.is_ready() => respond::json(StatusCode::OK, &json!({ "ready": true })),
        "/ready" => respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "reason": "no configuration from the control plane yet" }),
        ),
        "/status" => respond::json(
            StatusCode::OK,
            &json!({
                "ready": state.is_ready(),
                "cached_sessions": state.cache.len(),
                "open_websockets": state.sockets.count(),
                "virtual_proxies": state.table.load().all().iter().map(|p| p.prefix.clone()).collect::<Vec<_>>(),
            }),
        ),
        _ => respond::text(StatusCode::NOT_FOUND, "unknown admin path"),
    }
}

/// The one rendering of an [`AdminRefusal`] on this port.
fn refuse(refusal: AdminRefusal) -> Response<ProxyBody> {
    let mut response = respond::text(refusal.status(), refusal.reason());
    if let Some(challenge) = refusal.challenge() {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    response
}

/// `GET /log-level` shows the filter in force; `PUT /log-level` with `tracing` directives in
/// the body and the admin token replaces it (400 for directives that do not parse).
async fn log_level_endpoint(
    log_level: LogLevel,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    use http_body_util::BodyExt as _;
    if request.method() == Method::PUT
        && let Err(refusal) =
            admin_access::authorize_change(log_level.token.as_ref(), request.headers())
    {
        tracing::warn!(%peer, reason = refusal.reason(), "log filter change refused");
        return refuse(refusal);
    }
    let Some(logs) = log_level.logs else {
        return respond::text(StatusCode::NOT_FOUND, "log control is not installed");
    };
    match *request.method() {
        Method::GET => respond::json(StatusCode::OK, &json!({ "filter": logs.current() })),
        Method::PUT => {
            let Ok(body) = http_body_util::Limited::new(request.into_body(), 4096)
                .collect()
                .await
            else {
                return respond::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "directives are limited to 4 KiB",
                );
            };
            let directives = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            match logs.set(&directives, peer) {
                Ok(()) => respond::json(StatusCode::OK, &json!({ "filter": logs.current() })),
                Err(reason) => respond::text(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid filter: {reason}"),
                ),
            }
        }
        _ => respond::text(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT"),
    }
}
