//! Logs and traces. Logs: plain text, or JSON lines with `GATEHOUSE_LOG_FORMAT=json`; the
//! filter from `GATEHOUSE_LOG` (default `info`), changeable while running through the admin
//! port. Traces: exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (service name
//! from `OTEL_SERVICE_NAME`), with W3C trace context carried between hops.
//!
//! Two guarantees hold whatever a call site writes: in the text format every control
//! character in a field value is escaped (a client's `\r\n` or `ESC[` cannot forge a line or
//! drive a terminal; JSON is escaped by its encoder), and the audit line of a filter change
//! passes any filter, so even `off` leaves a trace of who turned logging off.
//!
//! Audit records (target [`AUDIT_TARGET`] with an `event` field: logins, logouts, ended
//! sessions) are written apart from the rest: always as one flat JSON object per line
//! (`{"event":…,"time":…,…,"target":"gatehouse::audit"}`), whatever the format and the
//! filter, so a collector can pick them out of the stream and parse them as they are.

use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

/// Target of audit lines: written whatever the filter in force says.
pub const AUDIT_TARGET: &str = "gatehouse::audit";

/// Whether an event is an audit record: on [`AUDIT_TARGET`], naming its `event`.
pub fn is_audit_record(metadata: &Metadata<'_>) -> bool {
    metadata.target() == AUDIT_TARGET && metadata.fields().field("event").is_some()
}

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
        let provider = tracer_provider(service);
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let json = std::env::var("GATEHOUSE_LOG_FORMAT")
            .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
        let (subscriber, control) = subscriber(
            filter,
            json,
            std::io::stdout,
            provider.as_ref().map(|provider| provider.tracer(service)),
        );
        subscriber.init();
        (control, TraceExport(provider))
    }

    /// The filter in force, as text.
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }

    /// Puts a new filter (`tracing` directives such as `info,gatehouse::access=off`) in force,
    /// and writes an audit line naming `changed_by`, the old and the new filter.
    pub fn set(&self, directives: &str, changed_by: SocketAddr) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives.trim()).map_err(|error| error.to_string())?;
        let old = self.current();
        self.handle
            .reload(filter)
            .map_err(|error| error.to_string())?;
        tracing::warn!(
            target: AUDIT_TARGET,
            peer = %changed_by,
            old = %old,
            new = %self.current(),
            "log filter changed"
        );
        Ok(())
    }
}

/// The logger: `filter` (reloadable) or the audit target decides what is written, as text
/// with escaped fields or as JSON, to `writer`; and, with `tracer`, what is exported as
/// traces. One filter in front of both, so a span the log leaves out is not exported either.
/// Audit records bypass that filter and are written as flat JSON lines to the same writer.
fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    writer: W,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> (impl Subscriber + Send + Sync + 'static, LogControl)
where
    W: for<'writer> MakeWriter<'writer> + Clone + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter);
    let records = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .without_time()
        .with_level(false)
        .with_writer(writer.clone())
        .with_filter(filter_fn(is_audit_record));
    let audit = Targets::new().with_target(AUDIT_TARGET, LevelFilter::WARN);
    let output = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields::default())
            .with_writer(writer)
            .boxed()
    };
    let otel = tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer));
    let not_a_record = filter_fn(|metadata| !is_audit_record(metadata));
    let subscriber = tracing_subscriber::registry()
        .with(
            output
                .and_then(otel)
                .with_filter(filter.or(audit).and(not_a_record)),
        )
        .with(records);
    (
        subscriber,
        LogControl {
            handle: Arc::new(handle),
        },
    )
}

/// The text format's fields as `tracing-subscriber` writes them, with every control
/// character (C0, DEL, C1) escaped on the way out: `\n`, `\r`, `\t`, `\x1b`, `\u{85}`.
/// Values reach the log from clients (paths, user ids, header values, `/qps/error` bodies, a
/// provider's error text); escaping here means no call site can forget.
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut escaping = EscapeControls(&mut writer);
        self.0.format_fields(Writer::new(&mut escaping), fields)
    }
}

/// Writes through to `.0`, escaping control characters.
struct EscapeControls<'a, W>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for EscapeControls<'_, W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        // Almost every value has no control character: one byte scan, one write. C1
        // characters (U+0080..U+009F) all start with the byte 0xC2 in UTF-8.
        if !text
            .bytes()
            .any(|byte| byte < 0x20 || byte == 0x7f || byte == 0xc2)
        {
            return self.0.write_str(text);
        }
        for character in text.chars() {
            match character {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if c.is_ascii_control() => write!(self.0, "\\x{:02x}", u32::from(c))?,
                c if c.is_control() => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Everything the logger wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn logger(json: bool) -> (impl Subscriber + Send + Sync, LogControl, Captured) {
        let captured = Captured::default();
        let writer = captured.clone();
        let (subscriber, control) =
            subscriber(EnvFilter::new("info"), json, move || writer.clone(), None);
        (subscriber, control, captured)
    }

    const HOSTILE: &str =
        "oops\r\n2030-01-01T00:00:00Z  INFO forged: admin logged in\x1b[2J\x07\u{85}\x7f";

    #[test]
    fn control_characters_in_text_fields_are_escaped() {
        let (subscriber, _, captured) = logger(false);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", path = %HOSTILE);
            let _entered = span.enter();
            tracing::warn!(body = %HOSTILE, debug = ?HOSTILE, "{HOSTILE}");
        });
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "one line, not two: {text}");
        // The formatter's own colours are ESC sequences too; the client's is not among them.
        assert!(!text.contains("\x1b[2J"), "{text:?}");
        assert!(!text.contains(['\r', '\x07', '\u{85}', '\x7f']), "{text:?}");
        assert!(text.contains("oops\\r\\n2030-01-01"), "{text}");
        assert!(text.contains("\\x1b[2J"), "{text}");
        assert!(text.contains("\\u{85}"), "{text}");
        assert!(text.contains("path=oops\\r\\n"), "span fields too: {text}");
    }

    #[test]
    fn json_lines_stay_one_line_each() {
        let (subscriber, _, captured) = logger(true);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(body = %HOSTILE, "reported");
        });
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains(['\r', '\x1b']), "{text:?}");
    }

    #[test]
    fn the_audit_line_of_a_change_passes_even_the_filter_off() {
        let (subscriber, control, captured) = logger(false);
        let peer = SocketAddr::from(([10, 1, 2, 3], 40000));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before the change");
            assert!(control.set("no=such=level", peer).is_err());
            control.set("off", peer).unwrap();
            tracing::error!("after the change");
        });
        let text = captured.text();
        assert!(text.contains("before the change"), "{text}");
        assert!(
            !text.contains("after the change"),
            "the new filter is in force: {text}"
        );
        let audit = text
            .lines()
            .find(|line| line.contains(AUDIT_TARGET))
            .unwrap_or_else(|| panic!("an audit line in {text}"));
        assert!(audit.contains("log filter changed"), "{audit}");
        assert!(audit.contains("peer=10.1.2.3:40000"), "{audit}");
        assert!(audit.contains("old=info"), "{audit}");
        assert!(audit.contains("new=off"), "{audit}");
    }

    #[test]
    fn audit_records_are_flat_json_lines_whatever_the_format_and_filter() {
        for json in [false, true] {
            let (subscriber, control, captured) = logger(json);
            let peer = SocketAddr::from(([10, 1, 2, 3], 40000));
            tracing::subscriber::with_default(subscriber, || {
                control.set("off", peer).unwrap();
                tracing::info!(
                    target: AUDIT_TARGET,
                    event = "logout",
                    user_id = "alice\r\nforged",
                    reason = Option::<&str>::None,
                );
            });
            let text = captured.text();
            let records: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .filter(|line: &serde_json::Value| line["event"].is_string())
                .collect();
            assert_eq!(records.len(), 1, "exactly one record, json={json}: {text}");
            let record = &records[0];
            assert_eq!(record["event"], "logout");
            assert_eq!(record["user_id"], "alice\r\nforged");
            assert_eq!(record["target"], AUDIT_TARGET);
            assert!(record.get("reason").is_none(), "absent fields are left out");
            assert!(record.get("level").is_none() && record.get("fields").is_none());
        }
    }
}
