//! Real ingresses in front of an upstream, asking a node before they forward: nginx with
//! `auth_request` and Caddy with `forward_auth`, each in its own directory on an ephemeral
//! loopback port, configured as deploy/forward-auth/ shows. A missing binary skips the test
//! with a SKIPPED line, and fails it in CI (`CI=true`), as the other tools do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_testkit::{Process, free_port};
use tokio::process::Command;

use super::kdc::tool;

/// The identity headers of the `qlik` preset: what the ingress copies from the answer.
pub const QLIK_IDENTITY: [&str; 4] = [
    "X-Qlik-User",
    "X-Qlik-Security",
    "X-Qlik-ProxyId",
    "X-Qlik-Virtual-Proxy-Prefix",
];

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
        let dir = scratch_dir();
        let port = free_port().expect("a free port");
        let path = dir.path().display().to_string();
        let identity: String = QLIK_IDENTITY
            .iter()
            .map(|name| {
                let variable = variable(name);
                format!(
                    "auth_request_set ${variable} $upstream_http_{variable};\n\
                     proxy_set_header {name} ${variable};\n"
                )
            })
            .collect();
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
"#,
            server = nginx_server(port, authorizer, upstream, &identity),
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config).expect("write nginx.conf");
        let mut command = Command::new(nginx);
        command
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir.path())
            .args(["-g", "daemon off;"]);
        let process = Process::spawn("nginx", &mut command, Vec::new()).expect("start nginx");
        Some(Self::ready(port, process, dir).await)
    }

    /// Caddy on a free port with `forward_auth` to the node's forward-auth listener at
    /// `authorizer` (redirects answered: Caddy passes the authorizer's answer to the
    /// browser), then `reverse_proxy` to `upstream`. `None` when caddy is missing (outside
    /// CI).
    pub async fn caddy(authorizer: SocketAddr, upstream: &str) -> Option<Self> {
        let caddy = binary("caddy", "caddy")?;
        let dir = scratch_dir();
        let port = free_port().expect("a free port");
        let identity = QLIK_IDENTITY.join(" ");
        let strip: String = QLIK_IDENTITY
            .iter()
            .map(|name| format!("        request_header -{name}\n"))
            .collect();
        let config = format!(
            r#"{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    route /app/* {{
        # Client copies of the identity headers go first: copy_headers only replaces those
        # the answer carries.
{strip}        forward_auth {authorizer} {{
            uri /auth?redirect=true
            copy_headers {identity}
        }}
        reverse_proxy {upstream}
    }}
}}
"#
        );
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, config).expect("write Caddyfile");
        let mut command = Command::new(caddy);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path());
        let process = Process::spawn("caddy", &mut command, Vec::new()).expect("start caddy");
        Some(Self::ready(port, process, dir).await)
    }

    async fn ready(port: u16, mut process: Process, dir: tempfile::TempDir) -> Self {
        let address = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Err(error) = process.check_running() {
                panic!("{error}");
            }
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not listen on {address} within 10 s",
                process.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// The nginx server block, as deploy/forward-auth/nginx.conf has it.
fn nginx_server(port: u16, authorizer: SocketAddr, upstream: &str, identity: &str) -> String {
    format!(
        r#"
    server {{
        listen 127.0.0.1:{port};
        location = /_gatehouse {{
            internal;
            proxy_pass http://{authorizer}/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location /app/ {{
            auth_request /_gatehouse;
            auth_request_set $gatehouse_location $upstream_http_x_gatehouse_location;
            auth_request_set $gatehouse_cookie $upstream_http_set_cookie;
            auth_request_set $gatehouse_status $upstream_status;
            error_page 401 = @gatehouse_login;
            error_page 500 = @gatehouse_error;
            add_header Set-Cookie $gatehouse_cookie;
            {identity}
            proxy_set_header Host $http_host;
            proxy_pass http://{upstream};
        }}
        location @gatehouse_login {{
            if ($gatehouse_location = "") {{
                return 401;
            }}
            add_header Set-Cookie $gatehouse_cookie;
            return 302 $gatehouse_location;
        }}
        location @gatehouse_error {{
            if ($gatehouse_status = 503) {{
                add_header Retry-After 1 always;
                return 503;
            }}
            return 500;
        }}
    }}
"#
    )
}

/// nginx's variable for a header: lower case, `-` as `_`.
fn variable(header: &str) -> String {
    header.to_ascii_lowercase().replace('-', "_")
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
