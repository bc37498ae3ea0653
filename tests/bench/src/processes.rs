//! The real processes under test: `redis-server`, `control-plane` and `data-plane`, each on
//! ephemeral loopback ports, each killed when its guard is dropped (a failed run included).

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;
use tokio::process::{Child, ChildStdin, Command};

use crate::client::{get_once, wait_for};

/// How long a process may take to become ready.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A child process that is killed (SIGKILL) when this guard is dropped.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    pid: u32,
    /// Never written: a child that reads its stdin sees it end when this driver dies, however
    /// it dies (the echo upstream exits then).
    _stdin: Option<ChildStdin>,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Self> {
        let mut child = command
            .kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let pid = child.id().with_context(|| format!("{name} has no pid"))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name,
            child,
            pid,
            _stdin: stdin,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// An error if the process has already exited (it crashed or refused its configuration).
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss(&self) -> Result<u64> {
        rss_of(self.pid)
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(self.pid)
    }

    /// Peak resident set size since the process started (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        status_bytes(self.pid, "VmHWM")
    }
}

/// Resident set size of process `pid` now (`VmRSS`), in bytes.
pub fn rss_of(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// CPU time (user + system) process `pid` used so far, in seconds.
pub fn cpu_seconds_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("no CPU times for process {pid}"))
}

/// Clock ticks per second of `/proc/PID/stat` times: 100 on every Linux build that matters
/// here (reading `sysconf(_SC_CLK_TCK)` would need unsafe code).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` from `/proc/PID/stat`, in seconds. The fields are counted after the
/// command name's closing parenthesis, since the name itself may hold spaces.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3 of the line; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SECOND)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    parse_status_field(&status, field).with_context(|| format!("no {field} for process {pid}"))
}

fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|line| line.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A loopback port nobody listens on right now. Another process could take it before the
/// child binds it; the child would then fail to start, and the run fails with that error.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A throwaway directory for configuration files and Redis's working directory.
pub fn work_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("gatehouse-bench-")
        .tempdir()
        .context("create a temporary directory")
}

/// A random node secret (loopback only, but still not a constant a reader could reuse).
pub fn node_secret() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Waits until `admin`'s `/ready` answers 200, or `process` exits.
async fn wait_ready(process: &mut Process, admin: SocketAddr) -> Result<()> {
    let name = process.name;
    wait_for(
        &format!("{name} to be ready"),
        START_DEADLINE,
        Duration::from_millis(50),
        || {
            let running = process.check_running();
            async move {
                running?;
                Ok(get_once(admin, "/ready")
                    .await
                    .ok()
                    .and_then(|(status, _)| status.is_success().then_some(())))
            }
        },
    )
    .await
}

/// A private `redis-server`: ephemeral port, no persistence, its own directory.
#[derive(Debug)]
pub struct Redis {
    pub process: Process,
    pub port: u16,
}

impl Redis {
    pub async fn start(dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let mut process = Process::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(dir),
        )
        .context("redis-server must be installed (apt-get install redis-server)")?;
        let url = format!("redis://127.0.0.1:{port}/");
        wait_for(
            "redis-server to answer PING",
            START_DEADLINE,
            Duration::from_millis(50),
            || {
                let running = process.check_running();
                let url = url.clone();
                async move {
                    running?;
                    let mut connection = redis::Client::open(url)?
                        .get_multiplexed_async_connection()
                        .await?;
                    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
                    Ok(Some(()))
                }
            },
        )
        .await?;
        Ok(Self { process, port })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?)
    }
}

/// Where the control plane keeps sessions.
#[derive(Debug, Clone)]
pub enum Store {
    Memory,
    Redis(String),
}

/// A `control-plane` process with one default virtual proxy (prefix `""`, no login
/// method: a request without a valid session is 401) in front of `upstream`.
#[derive(Debug)]
pub struct ControlPlane {
    pub process: Process,
    pub address: SocketAddr,
}

impl ControlPlane {
    pub async fn start(
        bin_dir: &Path,
        dir: &Path,
        store: &Store,
        upstream: SocketAddr,
        secret: &str,
    ) -> Result<Self> {
        let address = loopback(free_port()?);
        let admin = loopback(free_port()?);
        let store = match store {
            Store::Memory => "backend = \"memory\"".to_owned(),
            Store::Redis(url) => format!("backend = \"redis\"\nredis_url = \"{url}\""),
        };
        // Each benchmark user logs in once, so the per-user cap never refuses; sessions
        // outlive any run.
        let config = format!(
            r#"listen = "{address}"
admin_listen = "{admin}"
[store]
{store}
[node_api]
shared_secret = "{secret}"
[[virtual_proxies]]
prefix = ""
[virtual_proxies.upstream]
nodes = ["{upstream}"]
"#
        );
        let path = dir.join("control-plane.toml");
        std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
        let mut process = Process::spawn(
            "control-plane",
            Command::new(binary(bin_dir, "control-plane")?)
                .arg("--config")
                .arg(&path)
                .env("GATEHOUSE_LOG", "warn"),
        )?;
        wait_ready(&mut process, admin).await?;
        Ok(Self { process, address })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// A `data-plane` node process.
#[derive(Debug)]
pub struct DataPlane {
    pub process: Process,
    pub address: SocketAddr,
    pub admin: SocketAddr,
}

impl DataPlane {
    /// Starts a node of `control_plane`; `settings` are `section.key=value` overrides.
    pub async fn start(
        bin_dir: &Path,
        control_plane: &ControlPlane,
        secret: &str,
        name: &str,
        settings: &[String],
    ) -> Result<Self> {
        let address = loopback(free_port()?);
        let admin = loopback(free_port()?);
        let mut command = Command::new(binary(bin_dir, "data-plane")?);
        command
            .arg("--listen")
            .arg(address.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--control-plane")
            .arg(control_plane.endpoint())
            .arg("--node-id")
            .arg(name)
            // The access log would cost a line per poll and per cached session.
            .env("GATEHOUSE_LOG", "warn")
            .env("GATEHOUSE_NODE_SECRET", secret);
        for setting in settings {
            command.arg("--set").arg(setting);
        }
        let mut process = Process::spawn("data-plane", &mut command)?;
        wait_ready(&mut process, admin).await?;
        Ok(Self {
            process,
            address,
            admin,
        })
    }

    /// A gauge or counter from the node's `/metrics` (the sum over its label sets).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let (status, body) = get_once(self.admin, "/metrics").await?;
        if !status.is_success() {
            bail!("{}/metrics answered {status}", self.admin);
        }
        let text = String::from_utf8_lossy(&body);
        parse_metric(&text, name).with_context(|| format!("no metric {name} at {}", self.admin))
    }
}

/// Sum of the samples of `name` (with or without labels) in Prometheus text.
fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// The echo upstream as a child process (this binary's hidden `upstream` subcommand).
#[derive(Debug)]
pub struct UpstreamProcess {
    /// Held only to be killed on drop.
    _process: Process,
    pub address: SocketAddr,
}

impl UpstreamProcess {
    pub async fn start() -> Result<Self> {
        let address = loopback(free_port()?);
        let mut process = Process::spawn(
            "upstream",
            Command::new(std::env::current_exe().context("find this driver's executable")?)
                .arg("upstream")
                .arg("--listen")
                .arg(address.to_string()),
        )?;
        wait_for(
            "the upstream to listen",
            START_DEADLINE,
            Duration::from_millis(20),
            || {
                let running = process.check_running();
                async move {
                    running?;
                    Ok(tokio::net::TcpStream::connect(address).await.ok().map(drop))
                }
            },
        )
        .await?;
        Ok(Self {
            _process: process,
            address,
        })
    }
}

fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    let path = bin_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it (cargo build --release --bins) or pass --bin-dir",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_in_bytes() {
        let status = "Name:\tdata-plane\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_field(status, "VmRSS"), Some(10 * 1024 * 1024));
        assert_eq!(parse_status_field(status, "VmHWM"), Some(20 * 1024 * 1024));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_times_after_the_command_name() {
        let stat = "42 (data plane) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn metrics_are_summed_over_labels_and_exact_by_name() {
        let text = "# TYPE gatehouse_cached_sessions gauge\n\
                    gatehouse_cached_sessions 1000\n\
                    gatehouse_cached_sessions_other 5\n\
                    gatehouse_requests_total{status=\"200\"} 3\n\
                    gatehouse_requests_total{status=\"401\"} 4\n";
        assert_eq!(
            parse_metric(text, "gatehouse_cached_sessions"),
            Some(1000.0)
        );
        assert_eq!(parse_metric(text, "gatehouse_requests_total"), Some(7.0));
        assert_eq!(parse_metric(text, "gatehouse_open_websockets"), None);
    }
}
