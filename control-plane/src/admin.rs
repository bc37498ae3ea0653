//! The admin port: `/live` (the process runs) and `/ready` (the store answers and the
//! process is not shutting down), for Kubernetes probes that speak HTTP (`grpc.health.v1`
//! says the same over gRPC); `/metrics`; `/log-level` (GET the filter, PUT a new one with
//! the admin token). Every request must name a loopback or IP-address host, and a change
//! needs the token: see [`admin_access`](crate::admin_access); those answers are
//! [`admin_port`]'s, shared with the data plane.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use gatehouse_runtime::admin_port::{self, Screened};
use gatehouse_runtime::http_server::{self, ListenerPolicy, LogLines, PastCapacity, Protocols};

/// What readiness depends on, updated by the store probe and by shutdown.
#[derive(Debug, Default)]
pub struct Readiness {
    store_reachable: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_store_reachable(&self, reachable: bool) {
        self.store_reachable.store(reachable, Ordering::Release);
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.store_reachable.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

pub use gatehouse_runtime::admin_port::LogLevel;

/// Probes and scrapers send small requests: heads within 64 KiB and 10 s, as on the REST
/// surface; no connection or idle limit, as on the node's admin port.
const LISTENER_POLICY: ListenerPolicy = ListenerPolicy {
    protocols: Protocols::Http1AndHttp2,
    header_read_timeout: Duration::from_secs(10),
    max_header_bytes: 64 * 1024,
    idle_timeout: None,
    max_connections: None,
    past_capacity: PastCapacity::Answer,
    accept_backoff: Duration::from_millis(50),
    log_lines: LogLines::PLAIN,
};

/// Serves the admin port until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    metrics: Arc<crate::metrics::Metrics>,
    log_level: LogLevel,
    stop: CancellationToken,
) {
    let serving = http_server::serve(listener, LISTENER_POLICY, move |stream, arrival| {
        let (readiness, metrics, log_level) =
            (readiness.clone(), metrics.clone(), log_level.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            let (readiness, metrics, log_level) =
                (readiness.clone(), metrics.clone(), log_level.clone());
            async move {
                Ok::<_, Infallible>(
                    match admin_port::screen(&log_level, arrival.peer, request).await {
                        Screened::Answered(response) => response,
                        Screened::PassedOn(request) => answer(&readiness, &metrics, &request),
                    },
                )
            }
        });
        std::future::ready(Some((stream, service)))
    });
    stop.cancelled().await;
    let _ = serving.shutdown(Duration::ZERO).await;
}

fn answer(
    readiness: &Readiness,
    metrics: &crate::metrics::Metrics,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
        if let Ok(value) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        return response;
    }
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/live") => (StatusCode::OK, "{\"live\":true}"),
        (&Method::GET, "/ready") if readiness.is_ready() => (StatusCode::OK, "{\"ready\":true}"),
        (&Method::GET, "/ready") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"ready\":false,\"reason\":\"session store unreachable or shutting down\"}",
        ),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "{\"error\":\"unknown admin path\"}"),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"use GET\"}"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    if let Ok(value) = "application/json".parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}
