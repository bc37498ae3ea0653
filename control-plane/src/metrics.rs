//! The control plane's Prometheus metrics, served on the admin port at `/metrics`: gRPC calls
//! by method and status with their latency, session-store (Redis) latency and errors, audit
//! events by kind, and what each audit sink wrote, failed to write and dropped.
//! The same layer makes each call a trace span.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpcs: Family<Labels, Counter>,
    rpc_seconds: HistogramFamily,
    store_seconds: Histogram,
    store_errors: Family<Labels, Counter>,
    audit_events: Family<Labels, Counter>,
    audit_sink_written: Family<Labels, Counter>,
    audit_sink_errors: Family<Labels, Counter>,
    audit_sink_dropped: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse_control_plane");
        let rpcs = Family::<Labels, Counter>::default();
        registry.register("rpcs", "gRPC calls by method and status code", rpcs.clone());
        let rpc_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "rpc_seconds",
            "gRPC call latency by method (to the response head)",
            rpc_seconds.clone(),
        );
        let store_seconds = latency_histogram();
        registry.register(
            "store_seconds",
            "Latency of one session-store exchange",
            store_seconds.clone(),
        );
        let store_errors = Family::<Labels, Counter>::default();
        registry.register(
            "store_errors",
            "Session-store exchanges that failed, by kind (unavailable, rejected, corrupt)",
            store_errors.clone(),
        );
        let audit_events = Family::<Labels, Counter>::default();
        registry.register(
            "audit_events",
            "Audit events by kind (login_succeeded, login_failed, logout, session_revoked, session_created)",
            audit_events.clone(),
        );
        let audit_sink_written = Family::<Labels, Counter>::default();
        registry.register(
            "audit_sink_written",
            "Audit events an audit sink (redis_stream, otlp) delivered",
            audit_sink_written.clone(),
        );
        let audit_sink_errors = Family::<Labels, Counter>::default();
        registry.register(
            "audit_sink_errors",
            "Writes of an audit sink that failed (each retry counts)",
            audit_sink_errors.clone(),
        );
        let audit_sink_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "audit_sink_dropped",
            "Audit events an audit sink lost, by reason (queue_full, refused)",
            audit_sink_dropped.clone(),
        );
        Self {
            registry,
            rpcs,
            rpc_seconds,
            store_seconds,
            store_errors,
            audit_events,
            audit_sink_written,
            audit_sink_errors,
            audit_sink_dropped,
        }
    }

    pub fn store_exchange(&self, seconds: f64, error: Option<&'static str>) {
        self.store_seconds.observe(seconds);
        if let Some(kind) = error {
            self.store_errors
                .get_or_create(&vec![("kind", kind.to_owned())])
                .inc();
        }
    }

    pub fn audit_event(&self, kind: &'static str) {
        self.audit_events
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    pub fn audit_sink_written(&self, sink: &'static str, events: u64) {
        self.audit_sink_written
            .get_or_create(&vec![("sink", sink.to_owned())])
            .inc_by(events);
    }

    pub fn audit_sink_errors(&self, sink: &'static str, writes: u64) {
        self.audit_sink_errors
            .get_or_create(&vec![("sink", sink.to_owned())])
            .inc_by(writes);
    }

    pub fn audit_sink_dropped(&self, sink: &'static str, reason: &'static str, events: u64) {
        self.audit_sink_dropped
            .get_or_create(&vec![
                ("sink", sink.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc_by(events);
    }

    fn rpc(&self, method: &str, code: &str, seconds: f64) {
        self.rpcs
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("code", code.to_owned()),
            ])
            .inc();
        self.rpc_seconds
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// A tower layer counting every gRPC call. The status is read from the response head
/// (`grpc-status` there means an error answer); a call whose head carries none is counted as
/// OK, its final status arriving in trailers.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let method = request.uri().path().trim_start_matches('/').to_owned();
        // Each call is a span, the child of the caller's W3C trace context (a node's request).
        let span = tracing::info_span!("rpc", rpc.method = %method);
        let _ = span.set_parent(crate::logging::extract_context(request.headers()));
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("0")
                        .to_owned(),
                    Err(_) => "transport".to_owned(),
                };
                metrics.rpc(&method, &code, started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
