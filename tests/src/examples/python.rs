//! The Python example (`deploy/examples/python/`) against a real control plane: code generated
//! from `proto/` by grpcio-tools requests a ticket, lists sessions and deletes the example
//! user's, and nobody else's. Skipped, saying so, where python3 or grpcio is missing, except
//! in CI (`CI=true`), where that is a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::harness::ControlPlane;
use crate::harness::auth_module::user;
use gatehouse_proto::v1 as pb;

const CONFIG: &str = r#"
[[virtual_proxies]]
prefix = ""
[[virtual_proxies]]
prefix = "app"
"#;

pub(crate) fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

/// Whether python3 with grpcio and grpcio-tools is here. Missing in CI fails the test; missing
/// elsewhere skips it with a line on stderr.
pub(crate) async fn python_with_grpc(test: &str) -> bool {
    let found = tokio::process::Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .await
        .is_ok_and(|output| output.status.success());
    if found {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: CI needs python3 with grpcio and grpcio-tools (.ci/run installs them)"
    );
    // Straight to the process's stderr: the test harness captures `eprintln!` of a passing
    // test, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: python3 with grpcio and grpcio-tools is missing \
         (python3 -m pip install grpcio==1.85.1 grpcio-tools==1.85.1)"
    );
    false
}

#[tokio::test]
async fn python_example_requests_a_ticket_lists_and_deletes_sessions() {
    if !python_with_grpc("python_example_requests_a_ticket_lists_and_deletes_sessions").await {
        return;
    }
    let control = ControlPlane::start(CONFIG).await;
    let mut sessions = control.sessions();
    let bystander = sessions
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".into(),
            user: Some(user("CORP", "bob")),
            session_token: None,
        })
        .await
        .unwrap()
        .into_inner();

    let output = tokio::process::Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(examples_dir().join("python/sessions_example.py"))
        .args(["--endpoint", &control.address().to_string()])
        .args(["--directory", "CORP", "--user", "alice"])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.starts_with("ticket: "), "{stdout}");
    assert!(stdout.contains("listed 2 sessions"), "{stdout}");
    assert!(stdout.contains("CORP\\bob"), "{stdout}");
    assert_eq!(stdout.matches("deleted session ").count(), 1, "{stdout}");
    assert!(
        stdout.contains("CORP\\alice has 0 sessions left"),
        "{stdout}"
    );

    // What the control plane holds now: bob's session and nothing of alice's.
    let left = sessions
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let handles: Vec<&str> = left.iter().map(|s| s.handle.as_str()).collect();
    assert_eq!(
        handles,
        [bystander.session.as_ref().unwrap().handle.as_str()]
    );

    // A failed call: the gRPC code on stderr and exit code 1.
    let refused = tokio::process::Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(examples_dir().join("python/sessions_example.py"))
        .args(["--endpoint", &control.address().to_string()])
        .args(["--virtual-proxy", "nope"])
        .output()
        .await
        .expect("run python3");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
}
