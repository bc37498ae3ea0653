//! One login is one trace: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, both planes export spans
//! over OTLP, and the W3C trace context a browser request carries reaches the control plane.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_proto::v1 as pb;
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
use crate::harness::redis_server::free_port;

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

fn binary(name: &str) -> PathBuf {
    let path = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join(name))
        .unwrap();
    assert!(path.is_file(), "{} is built by cargo test", path.display());
    path
}

fn spawn(binary: PathBuf, args: &[String], otlp: SocketAddr) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("GATEHOUSE_NODE_SECRET", NODE_SECRET)
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("GATEHOUSE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn terminate(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[tokio::test]
async fn a_login_is_one_trace_across_both_planes() {
    let (otlp, collector) = collector().await;
    let config = std::env::temp_dir().join(format!("gatehouse-trace-{}.toml", std::process::id()));
    std::fs::write(&config, "[[virtual_proxies]]\nprefix = \"app\"\n").unwrap();
    let (grpc, control_admin, listen, node_admin) =
        (free_port(), free_port(), free_port(), free_port());
    let mut control = spawn(
        binary("control-plane"),
        &[
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{grpc}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{control_admin}"),
        ],
        otlp,
    );
    let mut node = spawn(
        binary("data-plane"),
        &[
            "--listen".into(),
            format!("127.0.0.1:{listen}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{node_admin}"),
            "--control-plane".into(),
            format!("http://127.0.0.1:{grpc}"),
        ],
        otlp,
    );
    eventually(
        "the node to be ready",
        Duration::from_secs(15),
        || async move {
            let ready = crate::harness::client::try_request(
                http::Method::GET,
                &format!("http://127.0.0.1:{node_admin}/ready"),
                &[],
                bytes::Bytes::new(),
            )
            .await;
            ready
                .is_ok_and(|response| response.status == 200)
                .then_some(())
        },
    )
    .await;

    let mut tickets = pb::authentication_service_client::AuthenticationServiceClient::connect(
        format!("http://127.0.0.1:{grpc}"),
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
        &format!("http://127.0.0.1:{listen}/app/hub?qlikTicket={ticket}"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(login.status, 302, "the ticket was redeemed");

    terminate(&mut node).await;
    terminate(&mut control).await;
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
