//! Logs and traces. Logs: plain text, or JSON lines with `GATEHOUSE_LOG_FORMAT=json`; the
//! filter from `GATEHOUSE_LOG` (default `info`), changeable while running through the admin
//! port. Traces: exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (service name
//! from `OTEL_SERVICE_NAME`), with W3C trace context carried between hops.

use std::sync::Arc;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: Arc<reload::Handle<EnvFilter, Registry>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

/// Flushes the traces still buffered when dropped; keep it until the process ends.
#[derive(Debug)]
pub struct TraceExport(Option<SdkTracerProvider>);

impl Drop for TraceExport {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

impl LogControl {
    /// Installs the process's logger (and trace export, when configured); call once, first
    /// thing in `main`, inside the Tokio runtime. `service` names the process in traces
    /// unless `OTEL_SERVICE_NAME` does.
    pub fn install(service: &'static str) -> (Self, TraceExport) {
        let filter =
            EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let (filter, handle) = reload::Layer::new(filter);
        let provider = tracer_provider(service);
        let otel = provider
            .as_ref()
            .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let json = std::env::var("GATEHOUSE_LOG_FORMAT")
            .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
        let registry = tracing_subscriber::registry().with(filter).with(otel);
        if json {
            registry
                .with(tracing_subscriber::fmt::layer().json())
                .init();
        } else {
            registry.with(tracing_subscriber::fmt::layer()).init();
        }
        (
            Self {
                handle: Arc::new(handle),
            },
            TraceExport(provider),
        )
    }

    /// The filter in force, as text.
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }

    /// Puts a new filter (`tracing` directives such as `info,gatehouse::access=off`) in force.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives.trim()).map_err(|error| error.to_string())?;
        self.handle
            .reload(filter)
            .map_err(|error| error.to_string())
    }
}

/// An OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; none otherwise.
fn tracer_provider(service: &'static str) -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| eprintln!("trace export to {endpoint} disabled: {error}"))
        .ok()?;
    let resource = if std::env::var("OTEL_SERVICE_NAME").is_ok() {
        opentelemetry_sdk::Resource::builder().build()
    } else {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build()
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Reads W3C trace context (`traceparent`) from HTTP or gRPC headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into HTTP or gRPC headers.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The trace context of `headers`, to parent a span on.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Puts the current span's trace context into `headers` (replacing any `traceparent`).
pub fn inject_current(headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}
