//! `gatehousectl` as an operator runs it: the real binary against a control plane started here
//! on `127.0.0.1:0`, every public RPC, text and JSON output, and its exit codes (1 for a
//! refused call, with the gRPC code; 64 for bad usage). One run goes over mutual TLS with the
//! certificates `deploy/dev-ca.sh` makes.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gatehouse_control_plane::{BoundServer, Config};
use serde_json::Value;
use tokio::sync::oneshot;

/// A control plane serving until dropped.
struct Server {
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(extra_toml: &str) -> Server {
    gatehouse_control_plane::process::install_crypto_provider();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra_toml}\n\
         [[virtual_proxies]]\nprefix = \"\"\n[[virtual_proxies]]\nprefix = \"app\"\n"
    );
    let config = Config::from_toml_str(&text).expect("test configuration is valid");
    let server = BoundServer::bind(&config)
        .await
        .expect("control plane binds");
    let address = server.local_addr().expect("bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .serve(async {
                let _ = stopped.await;
            })
            .await;
    });
    Server {
        address,
        _stop: stop,
    }
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "gatehousectl failed: {}", self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.stdout))
    }
}

async fn gatehousectl(args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehousectl"))
        .args(args)
        .env_remove("GATEHOUSE_ENDPOINT")
        .env_remove("GATEHOUSE_SESSION_TOKEN")
        .env_remove("GATEHOUSE_OUTPUT")
        .env_remove("GATEHOUSE_CA")
        .env_remove("GATEHOUSE_CERT")
        .env_remove("GATEHOUSE_KEY")
        .output()
        .await
        .expect("run gatehousectl");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `gatehousectl --endpoint <server> <args>`.
async fn ctl(server: &Server, args: &[&str]) -> Run {
    let endpoint = format!("http://{}", server.address);
    let mut all = vec!["--endpoint", &endpoint];
    all.extend_from_slice(args);
    gatehousectl(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_rpc_from_the_command_line() {
    let server = start("").await;

    // RequestTicket, in both renderings.
    let ticket = ctl(
        &server,
        &[
            "request-ticket",
            "-p",
            "app",
            "-d",
            "CORP",
            "-u",
            "alice",
            "-a",
            "group=sales",
        ],
    )
    .await
    .ok();
    assert!(ticket.stdout.starts_with("ticket:"), "{}", ticket.stdout);
    assert!(ticket.stdout.contains("CORP\\alice"), "{}", ticket.stdout);
    let ticket = ctl(
        &server,
        &["-o", "json", "request-ticket", "-d", "CORP", "-u", "alice"],
    )
    .await
    .ok()
    .json();
    assert!(ticket["ticket"].as_str().unwrap().len() >= 22, "{ticket}");
    assert_eq!(ticket["user"]["user_id"], "alice");
    assert!(
        ticket["expires"].as_str().unwrap().ends_with('Z'),
        "{ticket}"
    );

    // CreateSession: two for alice in `app`, one for bob in the default proxy.
    let mut created = Vec::new();
    for (proxy, user) in [("app", "alice"), ("app", "alice"), ("", "bob")] {
        let answer = ctl(
            &server,
            &[
                "--output",
                "json",
                "create-session",
                "--virtual-proxy",
                proxy,
                "--directory",
                "CORP",
                "--user",
                user,
                "--attribute",
                "group=sales",
            ],
        )
        .await
        .ok()
        .json();
        assert_eq!(answer["session"]["virtual_proxy"], proxy);
        assert_eq!(answer["session"]["user"]["attributes"][0]["value"], "sales");
        created.push((
            answer["session_token"].as_str().unwrap().to_owned(),
            answer["session"]["handle"].as_str().unwrap().to_owned(),
        ));
    }
    let (alice_token, alice_handle) = created[0].clone();
    let (bob_token, bob_handle) = created[2].clone();

    // GetSession by handle (text) and by token (JSON).
    let got = ctl(&server, &["get-session", "--handle", &alice_handle])
        .await
        .ok();
    assert!(got.stdout.contains(&alice_handle), "{}", got.stdout);
    assert!(got.stdout.contains("virtual proxy:"), "{}", got.stdout);
    assert!(
        !got.stdout.contains(&alice_token),
        "a session's view never shows its token"
    );
    let got = ctl(
        &server,
        &["-o", "json", "get-session", "--token", &bob_token],
    )
    .await
    .ok()
    .json();
    assert_eq!(got["session"]["handle"], bob_handle.as_str());

    // ListSessions, one page of one then all pages; ListUserSessions.
    let page = ctl(
        &server,
        &[
            "-o",
            "json",
            "list-sessions",
            "--page-size",
            "1",
            "--single-page",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1, "{page}");
    assert!(!page["next_page_token"].as_str().unwrap().is_empty());
    let all = ctl(
        &server,
        &["-o", "json", "list-sessions", "--page-size", "1"],
    )
    .await
    .ok()
    .json();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 3, "{all}");
    let table = ctl(&server, &["list-sessions", "-p", "app"]).await.ok();
    assert!(table.stdout.starts_with("HANDLE"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 3, "{}", table.stdout);
    let alice = ctl(
        &server,
        &[
            "-o",
            "json",
            "list-user-sessions",
            "-d",
            "corp",
            "-u",
            "ALICE",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(alice["sessions"].as_array().unwrap().len(), 2, "{alice}");

    // The Personal API with bob's token: whoami, then logout ends the session.
    let me = ctl(&server, &["whoami", "--token", &bob_token]).await.ok();
    assert!(me.stdout.contains("CORP\\bob"), "{}", me.stdout);
    let out = ctl(&server, &["-o", "json", "logout", "--token", &bob_token])
        .await
        .ok()
        .json();
    assert_eq!(out["session"]["handle"], bob_handle.as_str());
    let gone = ctl(&server, &["whoami", "--token", &bob_token]).await;
    assert_eq!(gone.code, Some(1));
    assert!(gone.stderr.contains("UNAUTHENTICATED"), "{}", gone.stderr);

    // DeleteSession, then the session is unknown: exit 1 with the gRPC code.
    let deleted = ctl(&server, &["delete-session", "--handle", &alice_handle])
        .await
        .ok();
    assert!(deleted.stdout.starts_with("deleted:"), "{}", deleted.stdout);
    let unknown = ctl(&server, &["get-session", "--handle", &alice_handle]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("GetSession failed: NOT_FOUND"),
        "{}",
        unknown.stderr
    );
    assert_eq!(
        unknown.stderr.trim().lines().count(),
        1,
        "{}",
        unknown.stderr
    );

    // DeleteUserSessions takes alice's last session.
    let logged_out = ctl(
        &server,
        &[
            "-o",
            "json",
            "delete-user-sessions",
            "-d",
            "CORP",
            "-u",
            "alice",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        logged_out["sessions"].as_array().unwrap().len(),
        1,
        "{logged_out}"
    );
    let none = ctl(&server, &["list-sessions"]).await.ok();
    assert_eq!(none.stdout, "no sessions\n");
}

/// A session for `user` in `proxy` through `create-session`: (token, handle).
async fn session_for(server: &Server, proxy: &str, user: &str) -> (String, String) {
    let answer = ctl(
        server,
        &[
            "-o",
            "json",
            "create-session",
            "-p",
            proxy,
            "-d",
            "CORP",
            "-u",
            user,
        ],
    )
    .await
    .ok()
    .json();
    (
        answer["session_token"].as_str().unwrap().to_owned(),
        answer["session"]["handle"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lists_and_ends_their_own_sessions_from_the_command_line() {
    let server = start("").await;
    let (laptop, laptop_handle) = session_for(&server, "app", "alice").await;
    let (_, phone_handle) = session_for(&server, "app", "alice").await;
    let (_, bobs_handle) = session_for(&server, "app", "bob").await;
    let (_, elsewhere_handle) = session_for(&server, "", "alice").await;

    // Text: a table, the calling session marked; JSON: both of alice's sessions in `app`.
    let table = ctl(&server, &["my-sessions", "--token", &laptop])
        .await
        .ok();
    assert!(table.stdout.starts_with("  HANDLE"), "{}", table.stdout);
    assert!(
        table.stdout.contains(&format!("* {laptop_handle}")),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains(&laptop), "never the token");
    let listed = ctl(&server, &["-o", "json", "my-sessions", "--token", &laptop])
        .await
        .ok()
        .json();
    let handles: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["handle"].as_str().unwrap())
        .collect();
    assert_eq!(handles.len(), 2, "{listed}");
    assert!(handles.contains(&laptop_handle.as_str()) && handles.contains(&phone_handle.as_str()));
    assert_eq!(listed["current_handle"], laptop_handle.as_str());

    // Another user's handle, or one of another virtual proxy: NOT_FOUND, exit 1.
    for foreign in [&bobs_handle, &elsewhere_handle] {
        let refused = ctl(
            &server,
            &["end-my-session", "--token", &laptop, "--handle", foreign],
        )
        .await;
        assert_eq!(refused.code, Some(1), "{refused:?}");
        assert!(
            refused.stderr.contains("EndMySession failed: NOT_FOUND"),
            "{}",
            refused.stderr
        );
    }
    ctl(&server, &["get-session", "--handle", &bobs_handle])
        .await
        .ok();

    // The phone's session ends; the laptop's stays.
    let ended = ctl(
        &server,
        &[
            "end-my-session",
            "--token",
            &laptop,
            "--handle",
            &phone_handle,
        ],
    )
    .await
    .ok();
    assert!(ended.stdout.starts_with("ended:"), "{}", ended.stdout);
    let left = ctl(&server, &["-o", "json", "my-sessions", "--token", &laptop])
        .await
        .ok()
        .json();
    assert_eq!(left["sessions"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["sessions"][0]["current"], true);
}

#[tokio::test]
async fn bad_usage_exits_64_and_refusals_exit_1() {
    let server = start("").await;
    for args in [
        vec!["get-session"],
        vec!["get-session", "--handle", "h", "--token", "t"],
        vec!["request-ticket", "-d", "CORP"],
        vec![
            "request-ticket",
            "-d",
            "CORP",
            "-u",
            "a",
            "-a",
            "no-equals-sign",
        ],
        vec!["no-such-command"],
        vec!["--output", "yaml", "list-sessions"],
        vec!["--cert", "/tmp/only-a-cert.pem", "list-sessions"],
        vec!["--endpoint", "ftp://127.0.0.1:1", "list-sessions"],
        vec!["--ca", "/nonexistent/ca.pem", "list-sessions"],
    ] {
        let run = gatehousectl(&args).await;
        assert_eq!(run.code, Some(64), "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
    // The server refuses a blank user: INVALID_ARGUMENT, exit 1.
    let refused = ctl(&server, &["create-session", "-d", " ", "-u", "alice"]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("INVALID_ARGUMENT"),
        "{}",
        refused.stderr
    );
    // Nobody listening: UNAVAILABLE, exit 1.
    let closed = gatehousectl(&["--endpoint", "127.0.0.1:1", "list-sessions"]).await;
    assert_eq!(closed.code, Some(1), "{closed:?}");
    assert!(closed.stderr.contains("UNAVAILABLE"), "{}", closed.stderr);
    // --help is not an error.
    assert_eq!(gatehousectl(&["--help"]).await.code, Some(0));
}

/// A fresh dev CA and certificates from the documented script.
fn dev_certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehousectl-tls-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-ca.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run deploy/dev-ca.sh (needs openssl)");
    assert!(status.success(), "deploy/dev-ca.sh failed");
    dir
}

#[tokio::test]
async fn mutual_tls_with_an_admin_certificate() {
    let certs = dev_certificates();
    let dir = certs.display();
    let server = start(&format!(
        "[tls]\ncert_file = \"{dir}/control-plane.pem\"\nkey_file = \"{dir}/control-plane-key.pem\"\n\
         client_ca_file = \"{dir}/ca.pem\"\n[tls.roles]\nadmin = [\"admin.gatehouse\"]\n\
         node = [\"node.gatehouse\"]\n"
    ))
    .await;
    let endpoint = format!("https://127.0.0.1:{}", server.address.port());
    let file = |name: &str| certs.join(name).display().to_string();
    let (ca, admin, admin_key, node, node_key) = (
        file("ca.pem"),
        file("admin.pem"),
        file("admin-key.pem"),
        file("node.pem"),
        file("node-key.pem"),
    );

    let created = gatehousectl(&[
        "-e",
        &endpoint,
        "--ca",
        &ca,
        "--cert",
        &admin,
        "--key",
        &admin_key,
        "-o",
        "json",
        "create-session",
        "-d",
        "CORP",
        "-u",
        "alice",
    ])
    .await
    .ok()
    .json();
    let token = created["session_token"].as_str().unwrap();
    // The Personal API needs no certificate, only the token.
    let me = gatehousectl(&["-e", &endpoint, "--ca", &ca, "whoami", "--token", token])
        .await
        .ok();
    assert!(me.stdout.contains("CORP\\alice"), "{}", me.stdout);

    // Without a certificate, or with a node's, the Session API refuses.
    let anonymous = gatehousectl(&["-e", &endpoint, "--ca", &ca, "list-sessions"]).await;
    assert_eq!(anonymous.code, Some(1));
    assert!(
        anonymous.stderr.contains("UNAUTHENTICATED"),
        "{}",
        anonymous.stderr
    );
    let as_node = gatehousectl(&[
        "-e",
        &endpoint,
        "--ca",
        &ca,
        "--cert",
        &node,
        "--key",
        &node_key,
        "list-sessions",
    ])
    .await;
    assert_eq!(as_node.code, Some(1));
    assert!(
        as_node.stderr.contains("PERMISSION_DENIED"),
        "{}",
        as_node.stderr
    );
    let _ = std::fs::remove_dir_all(&certs);
}
