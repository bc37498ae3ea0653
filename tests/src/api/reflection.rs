//! What generic gRPC tooling sees: server reflection lists and describes every Gatehouse
//! service (as `grpcurl list` / `grpcurl describe` would ask), and `grpc.health.v1` reports
//! SERVING while the session store is reachable and NOT_SERVING while it is not.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::harness::eventually;
use crate::harness::fixtures::{Backend, Env};

const GATEHOUSE_SERVICES: [&str; 4] = [
    "gatehouse.v1.AuthenticationService",
    "gatehouse.v1.SessionService",
    "gatehouse.v1.PersonalService",
    "gatehouse.v1.NodeService",
];

/// One request on the reflection stream, and its answer.
async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    try_reflect(channel, request)
        .await
        .expect("a reflection answer")
}

async fn try_reflect(
    channel: Channel,
    request: MessageRequest,
) -> Result<MessageResponse, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let answer = answers
        .message()
        .await?
        .expect("the stream holds an answer");
    Ok(answer.message_response.expect("the answer has a body"))
}

async fn list_services(channel: Channel) -> Vec<String> {
    match reflect(channel, MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(list) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("ListServices answered {other:?}"),
    }
}

async fn file_containing(channel: Channel, symbol: &str) -> Vec<prost_types::FileDescriptorProto> {
    match reflect(
        channel,
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    )
    .await
    {
        MessageResponse::FileDescriptorResponse(files) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice())
                    .expect("a file descriptor")
            })
            .collect(),
        other => panic!("FileContainingSymbol {symbol} answered {other:?}"),
    }
}

async fn health(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).expect("a known serving status"))
}

/// Waits until `service` reports `wanted`.
async fn health_becomes(env: &Env, service: &str, wanted: ServingStatus, deadline: Duration) {
    eventually(
        &format!("health of {service:?} to be {wanted:?}"),
        deadline,
        || {
            let channel = env.channel();
            async move { (health(channel, service).await.ok() == Some(wanted)).then_some(()) }
        },
    )
    .await;
}

async fn reflection_lists_every_service(backend: Backend) {
    let env = Env::start(backend, "").await;
    let services = list_services(env.channel()).await;
    for expected in GATEHOUSE_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            services.iter().any(|service| service == expected),
            "{expected} is not listed: {services:?}"
        );
    }
}

#[tokio::test]
async fn reflection_lists_every_service_on_memory() {
    reflection_lists_every_service(Backend::Memory).await;
}

#[tokio::test]
async fn reflection_lists_every_service_on_redis() {
    reflection_lists_every_service(Backend::Redis).await;
}

#[tokio::test]
async fn reflection_describes_the_session_service_by_symbol() {
    let env = Env::start(Backend::Memory, "").await;
    let files = file_containing(env.channel(), "gatehouse.v1.SessionService").await;
    let session_file = files
        .iter()
        .find(|file| file.name() == "gatehouse/v1/session.proto")
        .unwrap_or_else(|| {
            panic!(
                "no session.proto among {:?}",
                files.iter().map(|file| file.name()).collect::<Vec<_>>()
            )
        });
    assert_eq!(session_file.package(), "gatehouse.v1");
    let service = session_file
        .service
        .iter()
        .find(|service| service.name() == "SessionService")
        .expect("SessionService is described");
    let methods: Vec<&str> = service.method.iter().map(|method| method.name()).collect();
    assert_eq!(
        methods,
        [
            "CreateSession",
            "GetSession",
            "DeleteSession",
            "ListUserSessions",
            "DeleteUserSessions",
            "ListSessions"
        ]
    );
    let create = &service.method[0];
    assert_eq!(create.input_type(), ".gatehouse.v1.CreateSessionRequest");
    assert_eq!(create.output_type(), ".gatehouse.v1.CreateSessionResponse");
    assert!(
        session_file
            .dependency
            .iter()
            .any(|dependency| dependency == "gatehouse/v1/common.proto"),
        "{:?}",
        session_file.dependency
    );

    // The other services can be described too.
    for symbol in GATEHOUSE_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        let files = file_containing(env.channel(), symbol).await;
        let (package, name) = symbol.rsplit_once('.').expect("qualified name");
        assert!(
            files.iter().any(|file| file.package() == package
                && file.service.iter().any(|service| service.name() == name)),
            "{symbol} is not described"
        );
    }
    // An unknown symbol is NOT_FOUND (tonic-reflection ends the stream with it).
    match try_reflect(
        env.channel(),
        MessageRequest::FileContainingSymbol("gatehouse.v1.Nope".into()),
    )
    .await
    {
        Ok(MessageResponse::ErrorResponse(error)) => {
            assert_eq!(error.error_code, Code::NotFound as i32)
        }
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(other) => panic!("an unknown symbol answered {other:?}"),
    }
}

#[tokio::test]
async fn health_is_serving_on_the_memory_store() {
    let env = Env::start(Backend::Memory, "").await;
    assert_eq!(
        health(env.channel(), "").await.expect("Check \"\""),
        ServingStatus::Serving
    );
    for service in GATEHOUSE_SERVICES {
        health_becomes(
            &env,
            service,
            ServingStatus::Serving,
            Duration::from_secs(2),
        )
        .await;
    }
    let unknown = health(env.channel(), "gatehouse.v1.NoSuchService").await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_redis_reachability() {
    let mut env = Env::start(Backend::Redis, "").await;
    health_becomes(&env, "", ServingStatus::Serving, Duration::from_secs(2)).await;
    health_becomes(
        &env,
        "gatehouse.v1.SessionService",
        ServingStatus::Serving,
        Duration::from_secs(2),
    )
    .await;

    // The store is probed every 2 s.
    env.redis_server_mut().kill().await;
    health_becomes(&env, "", ServingStatus::NotServing, Duration::from_secs(6)).await;
    for service in GATEHOUSE_SERVICES {
        // Set right after "": at most a moment later.
        health_becomes(
            &env,
            service,
            ServingStatus::NotServing,
            Duration::from_secs(1),
        )
        .await;
    }
    // The server itself keeps answering: only the store is gone.
    assert!(!list_services(env.channel()).await.is_empty());

    env.redis_server_mut().restart().await;
    health_becomes(&env, "", ServingStatus::Serving, Duration::from_secs(6)).await;
    for service in GATEHOUSE_SERVICES {
        // Set right after "": at most a moment later.
        health_becomes(
            &env,
            service,
            ServingStatus::Serving,
            Duration::from_secs(1),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_for_nodes_holds_through_a_store_outage_until_the_outage_grace() {
    let mut env = Env::start(Backend::Redis, "[outage]\ngrace = \"10s\"\n").await;
    health_becomes(
        &env,
        "gatehouse.nodes",
        ServingStatus::Serving,
        Duration::from_secs(4),
    )
    .await;
    env.redis_server_mut().kill().await;
    let went = std::time::Instant::now();
    // The outage is seen within 6 s (a probe under a loaded machine may take that long),
    // leaving at least 4 s of the 10 s grace in which the replica must still vouch.
    health_becomes(&env, "", ServingStatus::NotServing, Duration::from_secs(6)).await;
    assert_eq!(
        health(env.channel(), "gatehouse.nodes")
            .await
            .expect("Check"),
        ServingStatus::Serving,
        "a replica that can vouch for sealed sessions stays ready for nodes"
    );
    health_becomes(
        &env,
        "gatehouse.nodes",
        ServingStatus::NotServing,
        Duration::from_secs(16),
    )
    .await;
    assert!(
        went.elapsed() >= Duration::from_secs(9),
        "not ready for nodes {:?} after the store went, before the outage grace",
        went.elapsed()
    );
}

#[tokio::test]
async fn a_replica_that_never_reached_its_store_is_not_ready_for_nodes() {
    let closed = gatehouse_testkit::free_port().expect("a free port");
    let plane = crate::harness::ControlPlane::start(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{closed}/\"\n"
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for service in ["", "gatehouse.nodes"] {
        assert_eq!(
            health(plane.channel(), service).await.expect("Check"),
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
}
