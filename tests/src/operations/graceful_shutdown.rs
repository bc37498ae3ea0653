//! Shutting a node down without dropping users: on SIGTERM it leaves rotation (`/ready` 503),
//! stops accepting, lets in-flight requests finish, tells WebSockets it is going away (close
//! code 1001) and exits 0 within its grace.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::browser::fixtures::{AppProxy, COOKIE, open_socket};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{expect_close, get};
use crate::harness::processes::start_binary;
use crate::harness::upstream::EchoUpstream;
use crate::harness::{ControlPlane, DataPlaneNode, eventually};

/// The admin token the node binary is started with.
const ADMIN_TOKEN: &str = "lifecycle-admin-token-0123456789abcdef";

async fn ready_status(node_admin: std::net::SocketAddr) -> Option<u16> {
    crate::harness::client::try_request(
        http::Method::GET,
        &format!("http://{node_admin}/ready"),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .ok()
    .map(|response| response.status.as_u16())
}

#[tokio::test]
async fn shutdown_drains_requests_and_says_goodbye_to_websockets() {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let mut node = DataPlaneNode::start_with(&control, "shutdown_grace = \"5s\"").await;
    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    let mut socket = open_socket(&node, &cookie).await;
    assert_eq!(ready_status(node.admin_address()).await, Some(200));

    upstream.set_delay(Duration::from_millis(800));
    let slow = {
        let url = node.url("/app/slow");
        let cookie = cookie.clone();
        tokio::spawn(async move { get(&url, &[("cookie", &cookie)]).await })
    };
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(5),
        || {
            let arrived = upstream
                .requests()
                .iter()
                .any(|seen| seen["path"] == "/slow");
            async move { arrived.then_some(()) }
        },
    )
    .await;

    node.begin_shutdown();
    let admin = node.admin_address();
    eventually(
        "/ready to say the node is leaving",
        Duration::from_secs(5),
        || async move { (ready_status(admin).await == Some(503)).then_some(()) },
    )
    .await;
    let address = node.address();
    eventually(
        "new connections to be refused",
        Duration::from_secs(5),
        || async move { TcpStream::connect(address).await.is_err().then_some(()) },
    )
    .await;
    let frame = expect_close(&mut socket, Duration::from_secs(3))
        .await
        .expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the in-flight request completed"
    );
    assert!(
        node.stopped_within(Duration::from_secs(5)).await,
        "the node finished within its grace"
    );
}

#[tokio::test]
async fn the_binary_exits_0_on_sigterm() {
    // cargo test builds every binary of the workspace next to this test binary.
    let binary = crate::harness::processes::binary("data-plane");
    let control = ControlPlane::start(&AppProxy::new(Vec::<String>::new()).toml()).await;
    let (mut node, addresses) = start_binary("data-plane", 2, |addresses| {
        let mut command = tokio::process::Command::new(&binary);
        command
            .args(["--listen", &addresses[0].to_string()])
            .args(["--admin-listen", &addresses[1].to_string()])
            .args(["--control-plane", &format!("http://{}", control.address())])
            .env(
                "GATEHOUSE_NODE_SECRET",
                crate::harness::control_plane::NODE_SECRET,
            )
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .env("GATEHOUSE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("GATEHOUSE_LOG")
            .env_remove("GATEHOUSE_CONFIG");
        command
    })
    .await;
    let (listen, admin_address) = (addresses[0], addresses[1]);
    // The log filter changes at run time through the admin port, with the admin token.
    let log_level = format!("http://{admin_address}/log-level");
    let current = get(&log_level, &[]).await;
    assert_eq!(current.status, 200);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let credential = [("authorization", bearer.as_str())];
    let refused = crate::harness::client::request(
        http::Method::PUT,
        &log_level,
        &credential,
        "no=such=level",
    )
    .await;
    assert_eq!(refused.status, 400);
    let changed =
        crate::harness::client::request(http::Method::PUT, &log_level, &credential, "info,h2=warn")
            .await;
    assert_eq!(changed.status, 200);
    assert!(get(&log_level, &[]).await.text().contains("h2=warn"));

    // A request carrying secrets, to look for in the log afterwards.
    let secret_url = format!("http://{listen}/app/hub?qlikTicket=ticket-secret-value");
    let _ = get(
        &secret_url,
        &[("cookie", "X-Qlik-Session-app=cookie-secret-value")],
    )
    .await;
    let exit = node
        .terminate(Duration::from_secs(10))
        .await
        .expect("the node exits within its grace");
    assert_eq!(exit.code(), Some(0));

    let log = node.output().unwrap();
    let access = log
        .lines()
        .find(|line| line.contains("gatehouse::access"))
        .unwrap_or_else(|| panic!("an access-log line in {log}"));
    assert!(access.contains("\"path\":\"/app/hub\""), "{access}");
    assert!(access.contains("\"status\":"), "{access}");
    assert!(
        !log.contains("secret-value"),
        "no ticket or cookie in the log: {log}"
    );
}

async fn control_plane_ready(control: &ControlPlane) -> Option<u16> {
    ready_status(control.admin_address()).await
}

#[tokio::test]
async fn the_control_plane_is_ready_while_its_store_answers() {
    let mut redis = crate::harness::RedisServer::start().await;
    let control = ControlPlane::start(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    ))
    .await;
    let live =
        crate::harness::client::get(&format!("http://{}/live", control.admin_address()), &[]).await;
    assert_eq!(live.status, 200);
    eventually("ready with Redis up", Duration::from_secs(10), || async {
        (control_plane_ready(&control).await == Some(200)).then_some(())
    })
    .await;
    redis.kill().await;
    eventually(
        "not ready with Redis down",
        Duration::from_secs(10),
        || async { (control_plane_ready(&control).await == Some(503)).then_some(()) },
    )
    .await;
    redis.restart().await;
    eventually("ready again", Duration::from_secs(10), || async {
        (control_plane_ready(&control).await == Some(200)).then_some(())
    })
    .await;
    control.stop().await;
}

#[tokio::test]
async fn kubernetes_grpc_probes_have_a_plaintext_health_port() {
    let config = gatehouse_control_plane::Config::from_toml_str(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nhealth_listen = \"127.0.0.1:0\"",
    )
    .unwrap();
    let server = gatehouse_control_plane::BoundServer::bind(&config)
        .await
        .unwrap();
    let health = server.health_addr().expect("a health port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{health}"))
        .unwrap()
        .connect_lazy();
    let client = tonic_health::pb::health_client::HealthClient::new(channel);
    eventually(
        "the health port to say SERVING",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                let answer = client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?;
                (answer.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                    .then_some(())
            }
        },
    )
    .await;
    // Only health lives there.
    let mut sessions = gatehouse_proto::v1::session_service_client::SessionServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{health}"))
            .unwrap()
            .connect_lazy(),
    );
    let refused = sessions
        .list_sessions(gatehouse_proto::v1::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::test]
async fn a_node_is_not_ready_before_its_first_snapshot() {
    let nowhere = crate::harness::redis_server::free_port();
    let config = gatehouse_data_plane::Config::from_toml_str(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[control_plane]\nendpoints = [\"http://127.0.0.1:{nowhere}\"]\nshared_secret = \"{}\"",
        crate::harness::control_plane::NODE_SECRET
    ))
    .unwrap();
    let node = gatehouse_data_plane::BoundNode::bind(config).await.unwrap();
    let admin = node.admin_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(node.serve(async {
        let _ = stopped.await;
    }));
    let live = get(&format!("http://{admin}/live"), &[]).await;
    assert_eq!(live.status, 200);
    // No control plane, no snapshot: alive but not ready, and it stays so.
    for _ in 0..3 {
        assert_eq!(ready_status(admin).await, Some(503));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = task.await;
}
