//! The ports without client certificates, as an attacker in the cluster or a web page in an
//! operator's browser would try them: changing the log filter needs the admin token (and is
//! refused outright without one configured), the audit line of a change survives even the
//! filter `off`, Host names that DNS rebinding would send are refused on both admin ports and
//! on the plaintext REST surface, and hostile text reaches the log escaped.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_testkit::Process;

use http::Method;
use serde_json::json;

use crate::browser::fixtures::AppProxy;
use crate::harness::client::{self, HttpResponse, get};
use crate::harness::control_plane::NODE_SECRET;
use crate::harness::processes::{binary, start_binary};
use crate::harness::upstream::EchoUpstream;
use crate::harness::{ControlPlane, DataPlaneNode};

/// The admin token the process tests configure.
const ADMIN_TOKEN: &str = "admin-token-for-tests-only-0123456789abcdef";
/// A well-formed anti-CSRF key for the REST surface.
const XRFKEY: &str = "0123456789abcdEF";
/// Text a hostile client sends hoping to forge a log line and drive the reader's terminal.
const HOSTILE: &str = "module down\r\n2030-01-01T00:00:00Z  WARN forged: all fine\x1b[2J";

async fn put_log_level(admin: SocketAddr, headers: &[(&str, &str)], filter: &str) -> HttpResponse {
    client::request(
        Method::PUT,
        &format!("http://{admin}/log-level"),
        headers,
        filter.to_owned(),
    )
    .await
}

#[tokio::test]
async fn without_a_configured_token_the_log_filter_cannot_be_changed_but_probes_and_metrics_work() {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start(&control).await;
    for admin in [node.admin_address(), control.admin_address()] {
        let refused = put_log_level(admin, &[("authorization", "Bearer anything")], "off").await;
        assert_eq!(refused.status, 403, "{admin}: {}", refused.text());
        assert!(
            refused.text().contains("admin_token_file"),
            "the reason says how to turn changes on: {}",
            refused.text()
        );
        for path in ["/live", "/ready", "/metrics"] {
            let open = get(&format!("http://{admin}{path}"), &[]).await;
            assert_eq!(open.status, 200, "{admin}{path}: {}", open.text());
        }
    }
}

#[tokio::test]
async fn admin_ports_refuse_host_names_dns_rebinding_would_send_and_answer_ip_addresses() {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start(&control).await;
    for admin in [node.admin_address(), control.admin_address()] {
        let port = admin.port();
        for path in ["/metrics", "/live", "/log-level"] {
            let url = format!("http://{admin}{path}");
            let rebound = get(&url, &[("host", &format!("evil.example:{port}"))]).await;
            assert_eq!(rebound.status, 421, "{url}: {}", rebound.text());
            assert!(
                rebound.text().contains("DNS rebinding"),
                "{}",
                rebound.text()
            );
        }
        let url = format!("http://{admin}/live");
        // kubelet probes and Prometheus name the pod by its IP address.
        for host in [
            format!("10.0.0.7:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            let answered = get(&url, &[("host", &host)]).await;
            assert_eq!(answered.status, 200, "Host {host}: {}", answered.text());
        }
        let refused = put_log_level(admin, &[("host", "evil.example")], "off").await;
        assert_eq!(refused.status, 421, "{}", refused.text());
    }
}

#[tokio::test]
async fn the_plaintext_rest_surface_answers_only_loopback_hosts() {
    let config = format!(
        "[rest]\nlisten = \"127.0.0.1:0\"\n{}",
        AppProxy::new(Vec::<String>::new()).toml()
    );
    let control = ControlPlane::start(&config).await;
    let rest = control.rest_address();
    let url = format!("http://{rest}/qps/app/session?xrfkey={XRFKEY}");
    let user = json!({"UserDirectory": "CORP", "UserId": "dave"}).to_string();
    let port = rest.port();
    for host in [format!("evil.example:{port}"), format!("10.0.0.7:{port}")] {
        let rebound = client::request(
            Method::POST,
            &url,
            &[("X-Qlik-Xrfkey", XRFKEY), ("host", &host)],
            user.clone(),
        )
        .await;
        assert_eq!(rebound.status, 421, "Host {host}: {}", rebound.text());
    }
    let local = client::request(
        Method::POST,
        &url,
        &[
            ("X-Qlik-Xrfkey", XRFKEY),
            ("host", &format!("localhost:{port}")),
        ],
        user,
    )
    .await;
    assert_eq!(local.status, 201, "{}", local.text());
}

/// A binary of the workspace, its log in text format with the filter `info`, on `ports`
/// loopback addresses (`[0]` its port, `[1]` its admin port), `args` made of them.
async fn start_logging(
    name: &str,
    ports: usize,
    args: impl Fn(&[SocketAddr]) -> Vec<String>,
) -> (Process, Vec<SocketAddr>) {
    start_binary(name, ports, |addresses| {
        let mut command = tokio::process::Command::new(binary(name));
        command
            .args(args(addresses))
            .env("GATEHOUSE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NO_COLOR", "1")
            .env_remove("GATEHOUSE_LOG")
            .env_remove("GATEHOUSE_LOG_FORMAT")
            .env_remove("GATEHOUSE_CONFIG");
        command
    })
    .await
}

/// Stops `process` with SIGTERM and returns everything it logged.
async fn stop_and_read_log(mut process: Process) -> String {
    process
        .terminate(Duration::from_secs(15))
        .await
        .expect("the process exits within its grace");
    process.output().expect("the process's log")
}

fn audit_line(log: &str) -> &str {
    log.lines()
        .find(|line| line.contains("gatehouse::audit"))
        .unwrap_or_else(|| panic!("an audit line in:\n{log}"))
}

#[tokio::test]
async fn the_node_changes_its_filter_only_for_the_token_and_the_audit_line_survives_off() {
    let control = ControlPlane::start(&AppProxy::new(Vec::<String>::new()).toml()).await;
    let (child, addresses) = start_logging("data-plane", 2, |addresses| {
        vec![
            format!("--listen={}", addresses[0]),
            format!("--admin-listen={}", addresses[1]),
            format!("--control-plane=http://{}", control.address()),
            format!("--node-secret={NODE_SECRET}"),
        ]
    })
    .await;
    let (listen, admin) = (addresses[0], addresses[1]);

    let missing = put_log_level(admin, &[], "off").await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Bearer"))
    );
    let wrong = put_log_level(
        admin,
        &[(
            "authorization",
            "Bearer not-the-admin-token-at-all-0000000000",
        )],
        "off",
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let changed = put_log_level(admin, &[("authorization", &bearer)], "off").await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert!(changed.text().contains("off"), "{}", changed.text());

    // With the filter off, a request leaves no access-log line.
    let _ = get(&format!("http://{listen}/app/after-off"), &[]).await;
    let log = stop_and_read_log(child).await;
    assert!(
        log.contains("log filter change refused"),
        "refusals are logged:\n{log}"
    );
    let audit = audit_line(&log);
    assert!(audit.contains("log filter changed"), "{audit}");
    assert!(audit.contains("peer=127.0.0.1:"), "who changed it: {audit}");
    assert!(
        audit.contains("old=info") && audit.contains("new=off"),
        "{audit}"
    );
    assert!(
        !log.contains("after-off"),
        "the filter off is in force:\n{log}"
    );
    assert!(!log.contains(ADMIN_TOKEN), "the token is never logged");
}

#[tokio::test]
async fn the_control_plane_logs_a_hostile_error_report_escaped_and_audits_filter_changes() {
    let (child, addresses) = start_logging("control-plane", 3, |addresses| {
        vec![
            format!("--listen={}", addresses[0]),
            format!("--admin-listen={}", addresses[1]),
            format!("--set=rest.listen={}", addresses[2]),
        ]
    })
    .await;
    let (admin, rest) = (addresses[1], addresses[2]);

    let report = client::request(
        Method::POST,
        &format!("http://{rest}/qps/error?xrfkey={XRFKEY}"),
        &[("X-Qlik-Xrfkey", XRFKEY)],
        HOSTILE.to_owned(),
    )
    .await;
    assert_eq!(report.status, 204, "{}", report.text());
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let changed = put_log_level(admin, &[("authorization", &bearer)], "warn").await;
    assert_eq!(changed.status, 200, "{}", changed.text());

    let log = stop_and_read_log(child).await;
    let reported = log
        .lines()
        .find(|line| line.contains("error reported by a client"))
        .unwrap_or_else(|| panic!("the report in:\n{log}"));
    assert!(
        reported.contains("module down\\r\\n2030-01-01T00:00:00Z  WARN forged"),
        "{reported}"
    );
    assert!(reported.contains("\\x1b[2J"), "{reported}");
    assert!(
        !log.contains(['\r', '\x1b']),
        "no raw CR or ESC anywhere:\n{log:?}"
    );
    assert!(
        !log.lines().any(|line| line.starts_with("2030-01-01")),
        "no forged line:\n{log}"
    );
    let audit = audit_line(&log);
    assert!(
        audit.contains("old=info") && audit.contains("new=warn"),
        "{audit}"
    );
}
