//! The processes of a benchmark run, started through the test kit: `redis-server`, a
//! `control-plane` with one default virtual proxy, `data-plane` nodes, and the echo upstream
//! as a process of its own. Each is killed when its guard is dropped (a failed run included).

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use gatehouse_testkit::ports::start_on_free_ports;
use gatehouse_testkit::{ControlPlaneProcess, DataPlaneProcess, EchoUpstream, Process, loopback};
use tokio::process::Command;

/// Where the control plane keeps sessions.
#[derive(Debug, Clone)]
pub enum Store {
    Memory,
    Redis(String),
}

/// A random node secret (loopback only, but still not a constant a reader could reuse).
pub fn node_secret() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// `bin_dir/name`, or an error saying how to get it.
fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    gatehouse_testkit::binary(bin_dir, name)
        .context("build it (cargo build --release --bins) or pass --bin-dir")
}

/// A `control-plane` process with one default virtual proxy (prefix `""`, no login
/// method: a request without a valid session is 401) in front of `upstream`.
pub async fn control_plane(
    bin_dir: &Path,
    store: &Store,
    upstream: SocketAddr,
    secret: &str,
) -> Result<ControlPlaneProcess> {
    let store = match store {
        Store::Memory => "backend = \"memory\"".to_owned(),
        Store::Redis(url) => format!("backend = \"redis\"\nredis_url = \"{url}\""),
    };
    // Each benchmark user logs in once, so the per-user cap never refuses; sessions
    // outlive any run.
    let config = format!(
        r#"[store]
{store}
[[virtual_proxies]]
prefix = ""
[virtual_proxies.upstream]
nodes = ["{upstream}"]
"#
    );
    ControlPlaneProcess::start(&binary(bin_dir, "control-plane")?, &config, secret, &[]).await
}

/// A `data-plane` node of `control_plane`; `settings` are `section.key=value` overrides.
pub async fn data_plane(
    bin_dir: &Path,
    control_plane: &ControlPlaneProcess,
    secret: &str,
    name: &str,
    settings: &[String],
) -> Result<DataPlaneProcess> {
    DataPlaneProcess::start(
        &binary(bin_dir, "data-plane")?,
        &control_plane.endpoint(),
        secret,
        name,
        settings,
    )
    .await
}

/// The echo upstream as a child process (this binary's hidden `upstream` subcommand), so its
/// sockets count against its own open-file limit, not the driver's.
#[derive(Debug)]
pub struct UpstreamProcess {
    /// Killed on drop.
    process: Process,
    pub address: SocketAddr,
}

impl UpstreamProcess {
    /// On a free port (another, if one picked is taken before it binds it).
    pub async fn start() -> Result<Self> {
        let driver = std::env::current_exe().context("find this driver's executable")?;
        start_on_free_ports(1, |ports| {
            let address = loopback(ports[0]);
            let mut command = Command::new(&driver);
            command
                .arg("upstream")
                .arg("--listen")
                .arg(address.to_string());
            async move {
                let mut process = Process::spawn("upstream", &mut command, Vec::new())?;
                process
                    .wait_ready(
                        "the upstream to listen",
                        &ports,
                        Duration::from_secs(30),
                        || async { true },
                    )
                    .await?;
                Ok(Self { process, address })
            }
        })
        .await
    }
}

impl UpstreamProcess {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// The `upstream` subcommand: a plain echo upstream on `address` until stdin ends (the
/// driver that started it is gone).
pub async fn serve_until_stdin_ends(address: SocketAddr) -> Result<()> {
    let upstream = EchoUpstream::plain(address).await?;
    tokio::task::spawn_blocking(|| {
        let mut buffer = [0u8; 64];
        let mut stdin = std::io::stdin();
        while stdin.read(&mut buffer)? > 0 {}
        std::io::Result::Ok(())
    })
    .await??;
    drop(upstream);
    Ok(())
}
