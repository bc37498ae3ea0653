//! The admin port: `/live` (the process runs) and `/ready` (it holds a configuration
//! snapshot, so it can route; it does not flap with Redis or the control plane).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::proxy::upstream::ProxyBody;
use crate::respond;
use crate::state::NodeState;

pub async fn handle(state: Arc<NodeState>, request: Request<Incoming>) -> Response<ProxyBody> {
    if request.method() != Method::GET {
        return respond::error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    match request.uri().path() {
        "/live" => respond::json(StatusCode::OK, &json!({ "live": true })),
        "/metrics" => {
            let text = state
                .metrics
                .render(state.cache.len(), state.sockets.count());
            let mut response = http::Response::new(respond::body(text));
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
        _ => respond::error(StatusCode::NOT_FOUND, "unknown admin path"),
    }
}
