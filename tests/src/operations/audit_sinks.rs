//! The audit sinks besides the log, with a real control-plane process: every event appended
//! to a Redis stream with the same fields the JSON line has, the stream trimmed to about its
//! cap; every event exported to an OTLP collector the test runs, each field an attribute; and
//! a sink that refuses or never answers, which costs no login or session anything, loses
//! events only by count, and says so in the log once rather than once per event.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Map, Value};

use super::audit_events::{browse_with_ticket, ticket, user};
use crate::browser::fixtures::AppProxy;
use crate::harness::audit::{find, records_in, stream_entries};
use crate::harness::processes::{ControlPlaneProcess, DataPlaneProcess};
use crate::harness::{EchoUpstream, RedisServer, eventually};

const STREAM: &str = "gatehouse:audit";
/// How long a record may take to reach a sink.
const DELIVERED_WITHIN: Duration = Duration::from_secs(15);

/// The control plane's `/metrics` text.
async fn metrics(control_plane: &ControlPlaneProcess) -> String {
    let (status, body) = gatehouse_testkit::http_client::get_once(control_plane.admin, "/metrics")
        .await
        .expect("GET /metrics");
    assert!(status.is_success());
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the one sample `series` (name and labels, exactly as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn create_session(
    control_plane: &ControlPlaneProcess,
    id: &str,
) -> pb::CreateSessionResponse {
    control_plane
        .sessions()
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".into(),
            user: user(id),
            session_token: None,
        })
        .await
        .expect("the session is created whatever the audit sinks do")
        .into_inner()
}

#[tokio::test]
async fn every_audit_event_is_appended_to_the_redis_stream_as_the_log_writes_it() {
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "{}\n[audit]\nredis_stream = \"{STREAM}\"\nredis_stream_max_len = 10\n",
        AppProxy::new([upstream.node()]).on_redis(&redis)
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let node = DataPlaneProcess::start(&control_plane, "audit-stream-node", &[]).await;

    let login_ticket = ticket(&control_plane, "alice", "app").await;
    let cookie = browse_with_ticket(&node, "app", &login_ticket)
        .await
        .expect("the ticket logs the browser in");
    assert!(
        browse_with_ticket(&node, "app", &login_ticket)
            .await
            .is_none()
    );
    let created = create_session(&control_plane, "carol").await;
    let handle = created.session.expect("the session").handle;
    control_plane
        .sessions()
        .delete_session(pb::DeleteSessionRequest {
            session: Some(pb::SessionSelector {
                by: Some(pb::session_selector::By::Handle(handle.clone())),
            }),
        })
        .await
        .expect("the session is deleted");

    let (records, entries) = eventually("the four events in the stream", DELIVERED_WITHIN, || {
        let (control_plane, redis) = (&control_plane, &redis);
        async move {
            let records = records_in(&control_plane.process.output().ok()?);
            let entries = stream_entries(redis, STREAM).await;
            (records.len() == 4 && entries.len() == 4).then_some((records, entries))
        }
    })
    .await;
    // The same events in the same order, each with exactly the fields of its JSON line.
    for (entry, record) in entries.iter().zip(&records) {
        assert_eq!(entry, record, "the stream entry differs from the log line");
    }
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "login_succeeded",
            "login_failed",
            "session_created",
            "session_revoked"
        ]
    );
    let login = find(&entries, "login_succeeded", |_| true).expect("the login");
    assert_eq!(login["method"], "ticket");
    assert_eq!(login["user_id"], "alice");
    assert_eq!(login["client_address"], "127.0.0.1");
    let revoked = find(&entries, "session_revoked", |_| true).expect("the deletion");
    assert_eq!(revoked["session"], handle.as_str());
    assert_eq!(revoked["actor"], "admin:no-tls");
    assert_eq!(revoked["reason"], "deleted");
    let token = cookie.split_once('=').expect("name=value").1;
    for entry in &entries {
        let text = entry.to_string();
        for secret in [token, login_ticket.as_str(), created.session_token.as_str()] {
            assert!(!text.contains(secret), "a token or ticket in {entry:#}");
        }
    }

    // `MAXLEN ~ 10`: Redis trims whole nodes of 100 entries, so the stream stays near its cap
    // instead of growing with every event.
    for index in 0..300 {
        create_session(&control_plane, &format!("user-{index}")).await;
    }
    let written = "gatehouse_control_plane_audit_sink_written_total{sink=\"redis_stream\"}";
    eventually("304 events written", DELIVERED_WITHIN, || {
        let control_plane = &control_plane;
        async move { (sample(&metrics(control_plane).await, written) >= 304.0).then_some(()) }
    })
    .await;
    let mut connection = redis.connection().await;
    let length: u64 = redis::cmd("XLEN")
        .arg(STREAM)
        .query_async(&mut connection)
        .await
        .expect("XLEN");
    assert!((10..=110).contains(&length), "{length} entries kept");
}

#[tokio::test]
async fn a_stream_redis_refuses_fails_no_call_and_is_counted_and_logged_once() {
    let redis = RedisServer::start().await;
    // A key of another type where the stream should be: every XADD is refused (WRONGTYPE).
    let mut connection = redis.connection().await;
    let () = redis::cmd("SET")
        .arg(STREAM)
        .arg("not a stream")
        .query_async(&mut connection)
        .await
        .expect("SET");
    let config = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n[audit]\nredis_stream = \"{STREAM}\"\n\
         [[virtual_proxies]]\nprefix = \"app\"\n",
        redis.url()
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let dropped = "gatehouse_control_plane_audit_sink_dropped_total{sink=\"redis_stream\",reason=\"refused\"}";
    for round in 1..=3 {
        create_session(&control_plane, &format!("user-{round}")).await;
        // One write per event: each is refused on its own.
        eventually("the event is dropped", DELIVERED_WITHIN, || {
            let control_plane = &control_plane;
            async move {
                (sample(&metrics(control_plane).await, dropped) >= f64::from(round)).then_some(())
            }
        })
        .await;
    }
    let text = metrics(&control_plane).await;
    assert_eq!(sample(&text, dropped), 3.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "gatehouse_control_plane_audit_sink_errors_total{sink=\"redis_stream\"}"
        ),
        3.0,
        "{text}"
    );
    let output = control_plane.process.output().expect("the output");
    let warnings: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("audit sink failing"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning a minute: {output}");
    assert!(
        warnings[0].contains("redis_stream") && warnings[0].contains("WRONGTYPE"),
        "{}",
        warnings[0]
    );
    // The log line of each event is still written.
    assert_eq!(records_in(&output).len(), 3, "{output}");
}

/// A log record a collector received, with its resource's attributes.
type Received = (Vec<(String, String)>, LogRecord);

/// The log records a collector received; it answers `UNAVAILABLE` to as many exports as
/// `.1` says first.
#[derive(Debug, Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>, Arc<AtomicU32>);

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let refusing = self
            .1
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            });
        if refusing.is_ok() {
            return Err(tonic::Status::unavailable("starting up"));
        }
        let mut received = self.0.lock().unwrap();
        for resource_logs in request.into_inner().resource_logs {
            let resource: Vec<(String, String)> = resource_logs
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .map(|attribute| (attribute.key.clone(), text(attribute.value.as_ref())))
                .collect();
            for scope in resource_logs.scope_logs {
                assert_eq!(scope.scope.expect("a scope").name, "gatehouse.audit");
                for record in scope.log_records {
                    received.push((resource.clone(), record));
                }
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(Any::StringValue(text)) => text.clone(),
        other => panic!("not a string value: {other:?}"),
    }
}

async fn collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, collector)
}

/// A log record's attributes as a JSON object, like a record's JSON line.
fn attributes(record: &LogRecord) -> Value {
    let mut object = Map::new();
    for attribute in &record.attributes {
        let value = text(attribute.value.as_ref());
        assert!(
            object.insert(attribute.key.clone(), value.into()).is_none(),
            "attribute {} twice",
            attribute.key
        );
    }
    Value::Object(object)
}

#[tokio::test]
async fn audit_events_are_exported_as_otlp_log_records_with_every_field_an_attribute() {
    let (otlp, collector) = collector().await;
    let config = format!(
        "[audit]\notlp_endpoint = \"http://{otlp}\"\n[[virtual_proxies]]\nprefix = \"app\"\n"
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    let created = create_session(&control_plane, "dave").await;
    let handle = created.session.expect("the session").handle;
    control_plane
        .sessions()
        .delete_user_sessions(pb::DeleteUserSessionsRequest {
            user_directory: "CORP".into(),
            user_id: "dave".into(),
            virtual_proxy: None,
        })
        .await
        .expect("the user is logged out");

    let received = eventually("two log records", DELIVERED_WITHIN, || {
        let received = collector.0.lock().unwrap().clone();
        async move { (received.len() == 2).then_some(received) }
    })
    .await;
    let records = records_in(&control_plane.process.output().expect("the output"));
    assert_eq!(records.len(), 2, "{records:#?}");
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    for ((resource, exported), record) in received.iter().zip(&records) {
        assert_eq!(
            &attributes(exported),
            record,
            "the attributes are the log line's fields"
        );
        let kind = record["event"].as_str().expect("an event");
        assert_eq!(exported.event_name, format!("gatehouse.audit.{kind}"));
        assert_eq!(text(exported.body.as_ref()), kind);
        assert_eq!(exported.severity_text, "INFO");
        let age = since_epoch.as_nanos() as i128 - i128::from(exported.time_unix_nano);
        assert!(
            (0..60_000_000_000).contains(&age),
            "time is when it happened: {age} ns ago"
        );
        assert!(
            resource.contains(&(
                "service.name".to_owned(),
                "gatehouse-control-plane".to_owned()
            )),
            "{resource:?}"
        );
    }
    let revoked = &records[1];
    assert_eq!(revoked["event"], "session_revoked");
    assert_eq!(revoked["session"], handle.as_str());
    assert_eq!(revoked["reason"], "user-logged-out");
    assert_eq!(revoked["actor"], "admin:no-tls");
    for (_, exported) in &received {
        assert!(!format!("{exported:?}").contains(&created.session_token));
    }
}

#[tokio::test]
async fn events_still_queued_at_shutdown_are_delivered_before_the_process_exits() {
    let (otlp, collector) = collector().await;
    // The first two exports are refused: the event is still being retried when SIGTERM comes.
    collector.1.store(2, Ordering::Release);
    let config = format!(
        "[audit]\notlp_endpoint = \"http://{otlp}\"\n[[virtual_proxies]]\nprefix = \"app\"\n"
    );
    let mut control_plane = ControlPlaneProcess::start(&config).await;
    let created = create_session(&control_plane, "ivan").await;
    let status = control_plane
        .process
        .terminate(Duration::from_secs(20))
        .await
        .expect("the control plane stops");
    assert!(status.success(), "{status:?}");
    let received = collector.0.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "delivered before the exit: {received:?}");
    let handle = created.session.expect("the session").handle;
    assert_eq!(attributes(&received[0].1)["session"], handle.as_str());
    assert_eq!(
        collector.1.load(Ordering::Acquire),
        0,
        "it was refused twice first"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_holds_up_no_call_and_its_overflow_is_counted() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            holder.lock().unwrap().push(socket);
        }
    });
    let config = format!(
        "[audit]\notlp_endpoint = \"http://{silent}\"\nsink_queue_len = 2\n\
         [[virtual_proxies]]\nprefix = \"app\"\n"
    );
    let control_plane = ControlPlaneProcess::start(&config).await;
    for index in 0..20 {
        let started = Instant::now();
        create_session(&control_plane, &format!("user-{index}")).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "call {index} waited for the sink: {:?}",
            started.elapsed()
        );
    }
    // At most two events in the write that hangs and two in the queue: the rest are dropped.
    let text = metrics(&control_plane).await;
    let dropped = sample(
        &text,
        "gatehouse_control_plane_audit_sink_dropped_total{sink=\"otlp\",reason=\"queue_full\"}",
    );
    assert!(dropped >= 16.0, "{text}");
    assert_eq!(
        records_in(&control_plane.process.output().expect("the output")).len(),
        20,
        "the log has every event"
    );
    eventually("the sink tries the collector", DELIVERED_WITHIN, || {
        let tried = !held.lock().unwrap().is_empty();
        async move { tried.then_some(()) }
    })
    .await;
}
