//! The real `control-plane` and `data-plane` binaries as child processes, each on ephemeral
//! loopback ports (new ones when another process took those picked first), each ready (its
//! admin port's `/ready` answers 200) before `start` returns.
//! Where the binaries come from is the caller's business: the tests look next to their own
//! executable, the benchmark driver in `--bin-dir`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::process::Command;

use crate::http_client::get_once;
use crate::ports::{loopback, start_on_free_ports};
use crate::proc_stats;
use crate::process::{Process, scratch_file};

/// How long a process may take to become ready (a debug build on a busy machine included).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// `dir/name`, if that file exists.
pub fn binary(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!("{} not found", path.display());
    }
    Ok(path)
}

/// Waits until `process` listens on `address` and `admin` and the admin port's `/ready`
/// answers 200; an error as soon as `process` exits.
async fn wait_ready(process: &mut Process, address: SocketAddr, admin: SocketAddr) -> Result<()> {
    let what = format!("{} to be ready", process.name());
    let ports = [address.port(), admin.port()];
    process
        .wait_ready(&what, &ports, START_DEADLINE, || async move {
            get_once(admin, "/ready")
                .await
                .is_ok_and(|(status, _)| status.is_success())
        })
        .await
}

/// A `control-plane` process.
#[derive(Debug)]
pub struct ControlPlaneProcess {
    pub process: Process,
    pub address: SocketAddr,
    pub admin: SocketAddr,
}

impl ControlPlaneProcess {
    /// Starts `binary` with this configuration (`listen` and `admin_listen` are set on the
    /// command line, the node secret in the environment, with `env` besides: GSSAPI reads
    /// `KRB5_KTNAME` from there only), and waits until it is ready (its store answers).
    pub async fn start(
        binary: &Path,
        config_toml: &str,
        node_secret: &str,
        env: &[(&str, &OsStr)],
    ) -> Result<Self> {
        start_on_free_ports(2, |ports| {
            let (address, admin) = (loopback(ports[0]), loopback(ports[1]));
            Self::start_on(binary, config_toml, node_secret, env, address, admin)
        })
        .await
    }

    /// [`start`](Self::start) with the gRPC port on `address` and the admin port on `admin`.
    pub async fn start_on(
        binary: &Path,
        config_toml: &str,
        node_secret: &str,
        env: &[(&str, &OsStr)],
        address: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Self> {
        let config = scratch_file("control-plane", "toml");
        std::fs::write(&config, config_toml)
            .with_context(|| format!("write {}", config.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(address.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("GATEHOUSE_NODE_SECRET", node_secret)
            .env("GATEHOUSE_LOG", "warn")
            .env_remove("GATEHOUSE_CONFIG");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = Process::spawn("control-plane", &mut command, vec![config])?;
        wait_ready(&mut process, address, admin).await?;
        Ok(Self {
            process,
            address,
            admin,
        })
    }

    /// `http://127.0.0.1:port` of its gRPC and REST port.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// A `data-plane` node process.
#[derive(Debug)]
pub struct DataPlaneProcess {
    pub process: Process,
    pub address: SocketAddr,
    pub admin: SocketAddr,
}

impl DataPlaneProcess {
    /// Starts `binary` as node `name` of the control plane at `control_plane` (an `http://`
    /// endpoint) with `settings` (`section.key=value`, as `--set` takes them), and waits
    /// until it is ready (it holds a configuration snapshot).
    pub async fn start(
        binary: &Path,
        control_plane: &str,
        node_secret: &str,
        name: &str,
        settings: &[impl AsRef<OsStr>],
    ) -> Result<Self> {
        start_on_free_ports(2, |ports| {
            let (address, admin) = (loopback(ports[0]), loopback(ports[1]));
            Self::start_on(
                binary,
                control_plane,
                node_secret,
                name,
                settings,
                address,
                admin,
            )
        })
        .await
    }

    /// [`start`](Self::start) with the proxy port on `address` and the admin port on `admin`.
    pub async fn start_on(
        binary: &Path,
        control_plane: &str,
        node_secret: &str,
        name: &str,
        settings: &[impl AsRef<OsStr>],
        address: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Self> {
        let mut command = Command::new(binary);
        command
            .arg("--listen")
            .arg(address.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--control-plane")
            .arg(control_plane)
            .arg("--node-id")
            .arg(name)
            .env("GATEHOUSE_NODE_SECRET", node_secret)
            // Warnings and errors only: an access-log line per request (and per poll) would
            // be the run's biggest cost.
            .env("GATEHOUSE_LOG", "warn")
            .env_remove("GATEHOUSE_CONFIG");
        for setting in settings {
            command.arg("--set").arg(setting);
        }
        let mut process = Process::spawn(name, &mut command, Vec::new())?;
        wait_ready(&mut process, address, admin).await?;
        Ok(Self {
            process,
            address,
            admin,
        })
    }

    /// A series of the node's `/metrics`, summed over its labels.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        proc_stats::metric(self.admin, name).await
    }
}
