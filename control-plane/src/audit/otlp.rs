//! Audit records as OTLP log records, exported over gRPC (`LogsService/Export`) to
//! `audit.otlp_endpoint`: one log record per event, its body the event's kind, its
//! `event_name` `gatehouse.audit.<kind>`, and every field of the record an attribute of the
//! same name (so a collector can route them to a store of their own and search by user,
//! session or client address).
//!
//! This is its own exporter rather than the trace SDK's batch processor: the sink needs to
//! know which writes failed and which may be retried, to count them and to keep its bounded
//! queue, and the SDK's processor keeps that to itself.

use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::AuditRecord;
use super::sink::{Sink, SinkError};

/// Longest wait for a connection to the collector.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one export to be answered.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The service name when `OTEL_SERVICE_NAME` does not give one, as for traces.
const SERVICE_NAME: &str = "gatehouse-control-plane";
/// The instrumentation scope of every audit record.
const SCOPE: &str = "gatehouse.audit";

/// Exports audit records to one OTLP/gRPC collector.
#[derive(Debug, Clone)]
pub(super) struct OtlpSink {
    client: LogsServiceClient<Channel>,
    resource: Resource,
}

impl OtlpSink {
    /// A lazy channel to `endpoint` (`http://` or `https://`, checked by the configuration);
    /// TLS trusts `ca_file` when given, the system's roots otherwise.
    pub fn new(endpoint: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let mut channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| format!("not a usable URL ({error})"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT);
        if endpoint.starts_with("https://") {
            let tls = match ca_file {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            channel = channel
                .tls_config(tls)
                .map_err(|error| format!("TLS: {error}"))?;
        }
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| SERVICE_NAME.to_owned());
        Ok(Self {
            client: LogsServiceClient::new(channel.connect_lazy()),
            resource: Resource {
                attributes: vec![attribute("service.name", &service)],
                ..Resource::default()
            },
        })
    }

    fn request(&self, records: &[AuditRecord]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    log_records: records.iter().map(log_record).collect(),
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }
}

impl Sink for OtlpSink {
    const NAME: &'static str = "otlp";

    async fn write(&self, records: &[AuditRecord]) -> Result<u64, SinkError> {
        let mut client = self.client.clone();
        match client.export(self.request(records)).await {
            Ok(answer) => Ok(answer
                .into_inner()
                .partial_success
                .map(|partial| u64::try_from(partial.rejected_log_records).unwrap_or(0))
                .unwrap_or(0)),
            Err(status) => {
                let error = format!("{:?}: {}", status.code(), status.message());
                if retryable(status.code()) {
                    Err(SinkError::Retry(error))
                } else {
                    Err(SinkError::Refused(error))
                }
            }
        }
    }
}

/// The codes after which the OTLP specification says an export may be retried (a collector
/// down, overloaded or slow); any other refusal is final.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn log_record(record: &AuditRecord) -> LogRecord {
    let nanos = record
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
    LogRecord {
        time_unix_nano: nanos,
        observed_time_unix_nano: nanos,
        severity_number: SeverityNumber::Info as i32,
        severity_text: "INFO".to_owned(),
        body: Some(string(record.event)),
        attributes: record
            .fields()
            .into_iter()
            .map(|(name, value)| attribute(name, value))
            .collect(),
        event_name: format!("{SCOPE}.{}", record.event),
        ..LogRecord::default()
    }
}

fn string(text: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(text.to_owned())),
    }
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(string(value)),
        ..KeyValue::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AdminCall, AuditEvent, Method};
    use crate::domain::{ClientInfo, Session, User};

    #[test]
    fn each_field_of_a_record_is_an_attribute_and_the_time_is_the_decision_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let session = Session {
            handle: "h-1".to_owned(),
            virtual_proxy: "app".to_owned(),
            user: User::new("CORP", "alice", Vec::new()).expect("valid user"),
            created: at,
            last_active: at,
            inactivity_timeout: Duration::from_secs(60),
            absolute_expiry: at,
            client: ClientInfo::new("", ""),
        };
        let by = AdminCall::new(Some("ops"), Method::Rest);
        let record = AuditEvent::SessionCreated {
            session: &session,
            by: &by,
        }
        .record(at);
        let exported = log_record(&record);
        assert_eq!(exported.time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(exported.event_name, "gatehouse.audit.session_created");
        let attributes: Vec<(String, String)> = exported
            .attributes
            .iter()
            .map(|attribute| {
                let value = match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(text)) => text.clone(),
                    other => panic!("not a string: {other:?}"),
                };
                (attribute.key.clone(), value)
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("event", "session_created"),
            ("time", "2023-11-14T22:13:20.123Z"),
            ("method", "rest"),
            ("virtual_proxy", "app"),
            ("user_directory", "CORP"),
            ("user_id", "alice"),
            ("session", "h-1"),
            ("actor", "admin:ops"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        assert_eq!(attributes, expected, "no client address: none was known");
        assert!(retryable(Code::Unavailable) && !retryable(Code::InvalidArgument));
    }
}
