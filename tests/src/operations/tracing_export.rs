//! One login is one trace: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, both planes export spans
//! over OTLP, and the W3C trace context a browser request carries reaches the control plane.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_proto::v1 as pb;
use gatehouse_testkit::Process;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::harness::client::get;
use crate::harness::control_plane::NODE_SECRET;
use crate::harness::eventually;
use crate::harness::processes::{binary, start_binary};

/// Trace ids (hex) seen, by service name.
#[derive(Debug, Clone, Default)]
struct Collector(Arc<Mutex<HashMap<String, Vec<String>>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .and_then(|value| match &value.value {
                    Some(Value::StringValue(name)) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let id: String = span
                        .trace_id
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect();
                    seen.entry(service.clone()).or_default().push(id);
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, collector)
}

/// The workspace binary `name` exporting to `otlp`, on the addresses `args` makes of its
/// port and admin port; ready.
async fn start(
    name: &str,
    otlp: SocketAddr,
    args: impl Fn(SocketAddr, SocketAddr) -> Vec<String>,
) -> (Process, SocketAddr) {
    let binary = binary(name);
    let (process, addresses) = start_binary(name, 2, |addresses| {
        let mut command = tokio::process::Command::new(&binary);
        command
            .args(args(addresses[0], addresses[1]))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("GATEHOUSE_NODE_SECRET", NODE_SECRET)
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("GATEHOUSE_CONFIG");
        command
    })
    .await;
    (process, addresses[0])
}

#[tokio::test]
async fn a_login_is_one_trace_across_both_planes() {
    let (otlp, collector) = collector().await;
    let config = std::env::temp_dir().join(format!("gatehouse-trace-{}.toml", std::process::id()));
    std::fs::write(&config, "[[virtual_proxies]]\nprefix = \"app\"\n").unwrap();
    let (mut control, grpc) = start("control-plane", otlp, |listen, admin| {
        vec![
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            listen.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
        ]
    })
    .await;
    let (mut node, listen) = start("data-plane", otlp, |listen, admin| {
        vec![
            "--listen".into(),
            listen.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--control-plane".into(),
            format!("http://{grpc}"),
        ]
    })
    .await;

    let mut tickets = pb::authentication_service_client::AuthenticationServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let ticket = tickets
        .request_ticket(pb::RequestTicketRequest {
            virtual_proxy: "app".into(),
            user: Some(crate::harness::auth_module::user("CORP", "alice")),
            target_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .ticket;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let login = get(
        &format!("http://{listen}/app/hub?qlikTicket={ticket}"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(login.status, 302, "the ticket was redeemed");

    // Ended with SIGTERM: each flushes the spans it has not exported yet.
    let _ = node.terminate(Duration::from_secs(10)).await;
    let _ = control.terminate(Duration::from_secs(10)).await;
    let seen = eventually(
        "spans of the login from both planes",
        Duration::from_secs(10),
        || {
            let seen = collector.0.lock().unwrap().clone();
            async move {
                let has = |service: &str| {
                    seen.get(service)
                        .is_some_and(|ids| ids.iter().any(|id| id == trace_id))
                };
                (has("gatehouse-data-plane") && has("gatehouse-control-plane")).then_some(seen)
            }
        },
    )
    .await;
    assert!(seen.contains_key("gatehouse-data-plane"));
    let _ = std::fs::remove_file(&config);
}
