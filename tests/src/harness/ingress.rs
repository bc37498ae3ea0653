//! Real ingresses in front of an upstream, asking a node before they forward: nginx with
//! `auth_request` and Caddy with `forward_auth`, each in its own directory on an ephemeral
//! loopback port, configured by the very examples of deploy/forward-auth/ (their addresses
//! replaced). A missing binary skips the test
//! with a SKIPPED line, and fails it in CI (`CI=true`), as the other tools do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_testkit::Process;
use gatehouse_testkit::ports::start_on_free_ports;
use tokio::process::Command;

use super::kdc::tool;

/// The ingress binary `name`, or `None` (skipped) outside CI when it is missing.
fn binary(name: &str, package: &str) -> Option<PathBuf> {
    let found = tool(name);
    if found.is_none() {
        let message =
            format!("forward-auth tests need {name} (Debian: apt-get install -y {package})");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED: {message}");
    }
    found
}

/// A running ingress; killed when dropped.
#[derive(Debug)]
pub struct Ingress {
    port: u16,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Ingress {
    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx on a free port with `auth_request` to the node's forward-auth listener at
    /// `authorizer` for everything under `/app/`, then `proxy_pass` to `upstream`. `None`
    /// when nginx is missing (outside CI).
    pub async fn nginx(authorizer: SocketAddr, upstream: &str) -> Option<Self> {
        let nginx = binary("nginx", "nginx")?;
        let ingress = Self::start("nginx", |port, dir| {
            let path = dir.display().to_string();
            let server = example("nginx.conf")
                .replacen("listen 80;", &format!("listen 127.0.0.1:{port};"), 1)
                .replacen(
                    "http://gatehouse-forward-auth:9904",
                    &format!("http://{authorizer}"),
                    1,
                )
                .replacen("http://engine:8080", &format!("http://{upstream}"), 1);
            for placeholder in ["listen 80;", "gatehouse-forward-auth:9904", "engine:8080"] {
                assert!(
                    !server.contains(placeholder),
                    "nginx.conf: {placeholder} left"
                );
            }
            let config = format!(
                r#"
worker_processes 1;
pid {path}/nginx.pid;
error_log {path}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {path}/body;
    proxy_temp_path {path}/proxy;
    fastcgi_temp_path {path}/fastcgi;
    uwsgi_temp_path {path}/uwsgi;
    scgi_temp_path {path}/scgi;
{server}
}}
"#
            );
            let file = dir.join("nginx.conf");
            std::fs::write(&file, config).expect("write nginx.conf");
            let mut command = Command::new(&nginx);
            command
                .arg("-c")
                .arg(&file)
                .arg("-p")
                .arg(dir)
                .args(["-g", "daemon off;"]);
            command
        })
        .await;
        Some(ingress)
    }

    /// Caddy on a free port with `forward_auth` to the node's forward-auth listener at
    /// `authorizer` (redirects answered: Caddy passes the authorizer's answer to the
    /// browser), then `reverse_proxy` to `upstream`. `None` when caddy is missing (outside
    /// CI).
    pub async fn caddy(authorizer: SocketAddr, upstream: &str) -> Option<Self> {
        let caddy = binary("caddy", "caddy")?;
        let ingress = Self::start("caddy", |port, dir| {
            let file = dir.join("Caddyfile");
            std::fs::write(&file, example("Caddyfile")).expect("write Caddyfile");
            let mut command = Command::new(&caddy);
            command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&file)
                .env("SITE_ADDRESS", format!("http://127.0.0.1:{port}"))
                .env("GATEHOUSE_FORWARD_AUTH", authorizer.to_string())
                .env("UPSTREAM", upstream)
                .env("CADDY_ADMIN", "off")
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir)
                .env("XDG_CONFIG_HOME", dir);
            command
        })
        .await;
        Some(ingress)
    }

    /// The ingress `name` that `command` makes for a port and a scratch directory, listening
    /// on a free port: another, in a new directory, if the port picked is taken before the
    /// ingress binds it.
    async fn start(name: &str, mut command: impl FnMut(u16, &Path) -> Command) -> Self {
        let started = start_on_free_ports(1, |ports| {
            let dir = scratch_dir();
            let mut command = command(ports[0], dir.path());
            async move {
                let mut process = Process::spawn(name, &mut command, Vec::new())?;
                process
                    .wait_ready(
                        &format!("{name} to listen"),
                        &ports,
                        Duration::from_secs(10),
                        || async { true },
                    )
                    .await?;
                Ok(Self {
                    port: ports[0],
                    _process: process,
                    _dir: dir,
                })
            }
        })
        .await;
        started.unwrap_or_else(|error| panic!("start {name}: {error:#}"))
    }
}

/// An example of deploy/forward-auth/, which the tests run as it is shipped.
fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/forward-auth")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A directory nginx's workers (which drop root for `nobody`) can read.
fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
    }
    dir
}
