//! The demo links both planes into one process, so it must install one logger for both: a
//! `PUT /log-level` with the admin token on the node's admin port changes the filter the
//! control plane's admin port reports, is refused without the token, and its audit line is
//! written in the JSON format `GATEHOUSE_LOG_FORMAT=json` asks for.

// Test code: a failed expectation is the test failing, so panicking is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const ADMIN_TOKEN: &str = "demo-admin-token-for-tests-only-0123456789";

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request on its own connection: the status and the body.
async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

#[tokio::test]
async fn the_demo_log_level_changes_with_the_admin_token_for_both_planes_and_is_refused_without_it()
{
    let node_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let control_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut demo = Command::new(env!("CARGO_BIN_EXE_gatehouse-demo"))
        .args(["--port", &free_port().to_string()])
        .args(["--grpc-port", &free_port().to_string()])
        .args(["--login-port", &free_port().to_string()])
        .args(["--upstream-port", &free_port().to_string()])
        .args(["--admin-port", &node_admin.port().to_string()])
        .args(["--control-admin-port", &control_admin.port().to_string()])
        .env("GATEHOUSE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("GATEHOUSE_LOG_FORMAT", "json")
        .env("GATEHOUSE_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap()).lines();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = request(node_admin, "GET", "/live", &[], "").await;
        let control_live = request(control_admin, "GET", "/live", &[], "").await;
        if matches!((&live, &control_live), (Some((200, _)), Some((200, _)))) {
            break;
        }
        assert!(Instant::now() < deadline, "the demo did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, body) = request(node_admin, "PUT", "/log-level", &[], "off")
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = request(
        node_admin,
        "PUT",
        "/log-level",
        &[("authorization", "Bearer wrong")],
        "off",
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{body}");

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = request(
        node_admin,
        "PUT",
        "/log-level",
        &[("authorization", &bearer)],
        "warn,gatehouse=debug",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gatehouse=debug"), "{body}");
    // One logger: the control plane's admin port reports the filter the node's port set.
    let (status, body) = request(control_admin, "GET", "/log-level", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gatehouse=debug"), "{body}");

    let audit = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.contains("log filter changed") {
                return line;
            }
        }
        panic!("the demo's output ended without the audit line");
    })
    .await
    .expect("the audit line of the change");
    assert!(audit.starts_with('{'), "a JSON line: {audit}");
    assert!(audit.contains("gatehouse::audit"), "{audit}");
    let _ = demo.kill().await;
}
