//! `gatehouse-demo`: the whole system on one machine, for trying Gatehouse out. It starts the
//! control plane on the in-memory store, one data-plane node, a demo upstream that shows the
//! identity it received, and a demo login page that issues a ticket for any typed user name.
//!
//! DEMO ONLY: the login page believes whatever name is typed.

mod pages;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use gatehouse_control_plane::BoundServer;
use gatehouse_data_plane::BoundNode;
use gatehouse_runtime::admin_access::AdminToken;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse-demo",
    about = "All-in-one local Gatehouse (demo only)"
)]
struct Cli {
    /// Port of the data-plane node: the URL to open.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port of the control plane's gRPC API.
    #[arg(long, default_value_t = 4243)]
    grpc_port: u16,
    /// Port of the demo login page.
    #[arg(long, default_value_t = 8090)]
    login_port: u16,
    /// Port of the demo upstream.
    #[arg(long, default_value_t = 8091)]
    upstream_port: u16,
    /// Port of the data-plane node's admin endpoints.
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Port of the control plane's admin endpoints.
    #[arg(long, default_value_t = 9902)]
    control_admin_port: u16,
    /// Token that unlocks PUT /log-level on both admin ports (at least 32 characters).
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One logger for both planes: `/log-level` on either admin port changes it, and
    // `GATEHOUSE_LOG_FORMAT=json` and OTLP export work as in the separate binaries.
    let (logs, _traces) = gatehouse_runtime::process::start("gatehouse-demo");
    let cli = Cli::parse();
    let admin_token = cli
        .admin_token
        .as_deref()
        .map(AdminToken::new)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--admin-token")?;
    // A fresh secret per run: the node and the control plane live in this process only.
    let secret: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..48)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect()
    };

    let mut control_config = gatehouse_control_plane::Config::from_toml_str(&format!(
        r#"
        listen = "127.0.0.1:{grpc}"
        admin_listen = "127.0.0.1:{control_admin}"
        [store]
        backend = "memory"
        [node_api]
        shared_secret = "{secret}"
        [[virtual_proxies]]
        prefix = ""
        authentication_module_uri = "http://localhost:{login}/login"
        host_allow_list = ["localhost:{port}", "127.0.0.1:{port}"]
        [virtual_proxies.upstream]
        nodes = ["127.0.0.1:{upstream}"]
        "#,
        grpc = cli.grpc_port,
        control_admin = cli.control_admin_port,
        login = cli.login_port,
        port = cli.port,
        upstream = cli.upstream_port,
    ))
    .context("demo control-plane configuration")?;
    control_config.admin_token.clone_from(&admin_token);
    let control = BoundServer::bind(&control_config)
        .await?
        .with_log_control(logs.clone());

    let mut node_config = gatehouse_data_plane::Config::from_toml_str(&format!(
        r#"
        listen = "0.0.0.0:{port}"
        admin_listen = "127.0.0.1:{admin}"
        node_id = "demo"
        [control_plane]
        endpoints = ["http://127.0.0.1:{grpc}"]
        shared_secret = "{secret}"
        "#,
        port = cli.port,
        admin = cli.admin_port,
        grpc = cli.grpc_port,
    ))
    .context("demo data-plane configuration")?;
    node_config.admin_token = admin_token;
    let node = BoundNode::bind(node_config).await?.with_log_control(logs);

    let upstream = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cli.upstream_port)))
        .await
        .with_context(|| format!("cannot listen on port {}", cli.upstream_port))?;
    let login = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cli.login_port)))
        .await
        .with_context(|| format!("cannot listen on port {}", cli.login_port))?;
    let grpc = format!("http://127.0.0.1:{}", cli.grpc_port);

    tokio::spawn(control.serve(std::future::pending()));
    tokio::spawn(node.serve(std::future::pending()));
    tokio::spawn(pages::serve_upstream(upstream));
    tokio::spawn(pages::serve_login(login, grpc));
    tokio::time::sleep(Duration::from_millis(300)).await;

    println!();
    println!("  Gatehouse demo is running (in-memory sessions; DEMO login accepts any name).");
    println!("  Open            http://localhost:{}/", cli.port);
    println!(
        "  gRPC APIs       127.0.0.1:{}  (try: grpcurl -plaintext 127.0.0.1:{} list)",
        cli.grpc_port, cli.grpc_port
    );
    println!(
        "  Node readiness  http://127.0.0.1:{}/ready",
        cli.admin_port
    );
    println!("  Stop with Ctrl-C.");
    println!();
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
