//! The example authentication module (`deploy/examples/auth-module/`) in the whole browser
//! flow: a data-plane node sends the browser to it, it shows its form or takes `?user=`, gets
//! a ticket from a real control plane and sends the browser back, and the upstream then sees
//! the user. Skipped, saying so, where python3 or grpcio is missing, except in CI.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::browser::fixtures::{qlik_user, resolve, seen_header, with_cookie};
use crate::examples::python::{examples_dir, python_with_grpc};
use crate::harness::client::{get, post, query_param};
use crate::harness::redis_server::free_port;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream};

const COOKIE: &str = "X-Qlik-Session-app";

/// The module as a child process (killed when dropped) and the URL it serves on.
async fn start_module(control_plane_port: u16) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(examples_dir().join("auth-module/auth_module.py"))
        .args(["--endpoint", &format!("127.0.0.1:{control_plane_port}")])
        .args(["--listen", "127.0.0.1:0", "--directory", "DEMO"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the module says where it listens within 20 s")
    .expect("read the module's stdout");
    let url = line
        .trim()
        .strip_prefix("auth module listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, url)
}

/// A browser without a session asks for `url`: the node's 302 to the module.
async fn login_redirect(url: &str, module: &str) -> String {
    let first = get(url, &[]).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let module_url = first.location().expect("Location").to_owned();
    assert!(module_url.starts_with(module), "{module_url}");
    module_url
}

/// The browser follows the module's redirect (with the ticket) and gets its cookie.
async fn redeem(module_answer_location: &str, url: &str) -> String {
    let landed = get(module_answer_location, &[]).await;
    assert_eq!(landed.status, 302, "{}", landed.text());
    assert_eq!(resolve(url, landed.location().expect("Location")), url);
    landed.cookie_pair(COOKIE).expect("the session cookie")
}

#[tokio::test]
async fn example_module_logs_a_browser_in_through_a_node() {
    if !python_with_grpc("example_module_logs_a_browser_in_through_a_node").await {
        return;
    }
    let control_plane_port = free_port();
    let (_module, module) = start_module(control_plane_port).await;
    let upstream = EchoUpstream::start("engine").await;
    let control_plane = ControlPlane::start_on(
        control_plane_port,
        &format!(
            "[[virtual_proxies]]\nprefix = \"app\"\nauthentication_module_uri = \"{module}\"\n\
             [virtual_proxies.upstream]\nnodes = [\"{}\"]\n",
            upstream.node()
        ),
    )
    .await;
    let node = DataPlaneNode::start(&control_plane).await;
    let url = node.url("/app/hub/stream?view=list");

    // To the module, which shows its form to a browser that has not said who it is.
    let module_url = login_redirect(&url, &module).await;
    let form = get(&module_url, &[]).await;
    assert_eq!(form.status, 200);
    assert!(form.text().contains("name=\"user\""), "{}", form.text());
    assert!(form.text().contains("DEMO ONLY"));

    // `?user=`: a ticket for the target, and back there with `qlikTicket`.
    let answer = get(&format!("{module_url}&user=alice"), &[]).await;
    assert_eq!(answer.status, 302, "{}", answer.text());
    let location = answer.location().expect("Location").to_owned();
    assert!(
        location.starts_with(&format!("{url}&qlikTicket=")),
        "{location}"
    );
    assert!(query_param(&location, "qlikTicket").is_some_and(|t| t.len() >= 22));
    let cookie = redeem(&location, &url).await;
    let served = get(&url, &with_cookie(&cookie)).await;
    assert_eq!(served.status, 200, "{}", served.text());
    let seen = upstream
        .requests()
        .last()
        .cloned()
        .expect("a request upstream");
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user("DEMO", "alice").as_str())
    );

    // The form posted: the same, for another user.
    let module_url = login_redirect(&url, &module).await;
    let body = format!(
        "proxyRestUri={}&targetId={}&user=bob",
        crate::harness::client::encode(&query_param(&module_url, "proxyRestUri").unwrap()),
        query_param(&module_url, "targetId").unwrap()
    );
    let answer = post(
        &module,
        &[("content-type", "application/x-www-form-urlencoded")],
        &body,
    )
    .await;
    assert_eq!(answer.status, 302, "{}", answer.text());
    let cookie = redeem(answer.location().expect("Location"), &url).await;
    assert_eq!(get(&url, &with_cookie(&cookie)).await.status, 200);
    let seen = upstream
        .requests()
        .last()
        .cloned()
        .expect("a request upstream");
    assert_eq!(
        seen_header(&seen, "x-qlik-user"),
        Some(qlik_user("DEMO", "bob").as_str())
    );

    // An unknown target: no redirect anywhere, a page saying to start again.
    let stale = get(
        &format!(
            "{module}?proxyRestUri={}&targetId=unknown&user=alice",
            crate::harness::client::encode(&format!("http://{}/qps/app/", node.address()))
        ),
        &[],
    )
    .await;
    assert_eq!(stale.status, 400, "{}", stale.text());
}
