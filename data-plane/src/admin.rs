//! The admin port: `/live` (the process runs), `/ready` (it holds a configuration snapshot,
//! so it can route; it does not flap with Redis or the control plane), `/status`,
//! `/metrics`, and `/log-level` (GET the filter in force, PUT a new one with the admin
//! token). Every request must name a loopback or IP-address host, and a change needs the
//! token: see [`admin_access`](gatehouse_runtime::admin_access); those answers are
//! [`admin_port`]'s, shared with the control plane.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{self, ProxyBody};
use crate::respond;
use crate::state::NodeState;
use gatehouse_runtime::admin_port::{self, Screened};

pub use gatehouse_runtime::admin_port::LogLevel;

pub async fn handle(
    state: Arc<NodeState>,
    log_level: LogLevel,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let request = match admin_port::screen(&log_level, peer, request).await {
        Screened::Answered(response) => {
            return response.map(|answer| answer.map_err(|never| match never {}).boxed());
        }
        Screened::PassedOn(request) => request,
    };
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
