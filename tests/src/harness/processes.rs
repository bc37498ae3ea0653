//! The real `control-plane` and `data-plane` binaries as child processes, for the tests that
//! measure a process from outside (resident memory, open files) or push it to its limits,
//! where a node inside the test process would share its memory, descriptors and runtime.
//!
//! The binaries are looked for next to the test binary (`target/<profile>/`); `cargo test
//! --workspace` builds them, and `cargo build -p gatehouse-data-plane -p
//! gatehouse-control-plane` does on its own. Every child is killed when its guard is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::client;
use super::control_plane::NODE_SECRET;
use super::eventually::eventually;
use super::proc_stats::{self, ProcStats};
use super::redis_server::free_port;

/// How long a process may take to become ready (a debug build on a busy machine included).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// `target/<profile>/<name>`, next to the directory of this test binary (`deps/`).
pub fn binary(name: &str) -> PathBuf {
    let path = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} not found: build it first (cargo build -p gatehouse-data-plane -p \
         gatehouse-control-plane, with --release for a release test run)",
        path.display()
    );
    path
}

/// Takes every open file the hard limit allows, for tests that hold thousands of sockets
/// (children inherit the limit); panics if that is fewer than `needed`.
pub fn raise_open_file_limit(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    assert!(
        limit >= needed,
        "this test needs {needed} open files, the hard limit allows {limit}"
    );
}

/// A child process, killed when dropped. Its stderr goes to a file, shown when it dies early.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    pid: u32,
    stderr: PathBuf,
    files: Vec<PathBuf>,
}

impl Process {
    fn spawn(name: &str, command: &mut Command, files: Vec<PathBuf>) -> Self {
        let stderr = scratch_file(name, "stderr");
        let log = std::fs::File::create(&stderr).expect("create the child's stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start {name}: {error}"));
        let pid = child.id().expect("a child that just started has a pid");
        Self {
            name: name.to_owned(),
            child,
            pid,
            stderr,
            files,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Panics, with what the process wrote to stderr, if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the child") {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            panic!("{} exited ({status}); its stderr:\n{log}", self.name);
        }
    }

    /// Resident memory, open files and threads, from `/proc`.
    pub fn stats(&self) -> ProcStats {
        proc_stats::of(self.pid)
    }

    /// Waits for `admin`'s `/ready` to answer 200; panics if the process exits meanwhile.
    async fn wait_ready(&mut self, admin: SocketAddr) {
        let ready = format!("http://{admin}/ready");
        let name = format!("{} to be ready", self.name);
        eventually(&name, START_DEADLINE, || {
            self.assert_running();
            let ready = ready.clone();
            async move {
                let response = client::try_request(http::Method::GET, &ready, &[], "")
                    .await
                    .ok()?;
                (response.status == 200).then_some(())
            }
        })
        .await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.stderr);
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A file of this test process in the temporary directory, unique per call.
fn scratch_file(name: &str, extension: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "gatehouse-test-{}-{serial}-{name}.{extension}",
        std::process::id()
    ))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `control-plane` process with the node secret [`NODE_SECRET`].
#[derive(Debug)]
pub struct ControlPlaneProcess {
    pub process: Process,
    address: SocketAddr,
    admin: SocketAddr,
    channel: Channel,
}

impl ControlPlaneProcess {
    /// Starts one with this configuration (`listen`, `admin_listen` and the node secret are
    /// set on the command line) and waits until it is ready (its store answers).
    pub async fn start(config_toml: &str) -> Self {
        Self::start_with_env(config_toml, &[]).await
    }

    /// As [`start`](Self::start), with extra environment variables for the process (such as
    /// `KRB5_KTNAME`, which GSSAPI reads from the environment only).
    pub async fn start_with_env(config_toml: &str, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let address = loopback(free_port());
        let admin = loopback(free_port());
        let config = scratch_file("control-plane", "toml");
        std::fs::write(&config, config_toml).expect("write the control plane's configuration");
        let mut command = Command::new(binary("control-plane"));
        command
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(address.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("GATEHOUSE_NODE_SECRET", NODE_SECRET)
            .env("GATEHOUSE_LOG", "warn")
            .env_remove("GATEHOUSE_CONFIG");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = Process::spawn("control-plane", &mut command, vec![config]);
        process.wait_ready(admin).await;
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("valid endpoint")
            .connect_lazy();
        Self {
            process,
            address,
            admin,
            channel,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin
    }

    pub fn authentication(&self) -> AuthenticationServiceClient<Channel> {
        AuthenticationServiceClient::new(self.channel.clone())
    }

    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }
}

/// A `data-plane` node process.
#[derive(Debug)]
pub struct DataPlaneProcess {
    pub process: Process,
    address: SocketAddr,
    admin: SocketAddr,
}

impl DataPlaneProcess {
    /// Starts a node of `control_plane` with `settings` (`section.key=value`, as `--set`
    /// takes them) and waits until it is ready (it holds a configuration snapshot).
    pub async fn start(control_plane: &ControlPlaneProcess, name: &str, settings: &[&str]) -> Self {
        let address = loopback(free_port());
        let admin = loopback(free_port());
        let mut command = Command::new(binary("data-plane"));
        command
            .arg("--listen")
            .arg(address.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--control-plane")
            .arg(format!("http://{}", control_plane.address()))
            .arg("--node-id")
            .arg(name)
            .env("GATEHOUSE_NODE_SECRET", NODE_SECRET)
            // Warnings and errors only: an access-log line per request would be the test's
            // biggest cost.
            .env("GATEHOUSE_LOG", "warn")
            .env_remove("GATEHOUSE_CONFIG");
        for setting in settings {
            command.arg("--set").arg(setting);
        }
        let mut process = Process::spawn(name, &mut command, Vec::new());
        process.wait_ready(admin).await;
        Self {
            process,
            address,
            admin,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin
    }

    /// `http://127.0.0.1:port{path}` on the proxy port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `ws://127.0.0.1:port{path}` on the proxy port.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    /// A series of the node's `/metrics`, summed over its labels; `None` when the admin
    /// port does not answer or has no such series.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        proc_stats::metric(self.admin, name).await
    }

    /// What the node holds now; `upstream` is the address of its upstream node.
    pub async fn sample(&self, upstream: SocketAddr) -> NodeSample {
        let connections = proc_stats::tcp_connections(self.process.pid());
        NodeSample {
            process: self.process.stats(),
            clients: connections
                .iter()
                .filter(|(local, _)| *local == self.address)
                .count(),
            upstream: connections
                .iter()
                .filter(|(_, remote)| *remote == upstream)
                .count(),
            tasks: self.metric("gatehouse_runtime_tasks").await.unwrap_or(-1.0),
            websockets: self
                .metric("gatehouse_open_websockets")
                .await
                .unwrap_or(-1.0),
        }
    }
}

/// A node's resources: from `/proc`, its TCP connections by kind, and its own gauges (-1
/// when the admin port did not answer).
#[derive(Debug, Clone, Copy)]
pub struct NodeSample {
    pub process: ProcStats,
    /// Connections from clients.
    pub clients: usize,
    /// Connections to the upstream (idle ones in the pool, once drained).
    pub upstream: usize,
    pub tasks: f64,
    pub websockets: f64,
}

impl NodeSample {
    /// Open files that are neither client nor upstream connections.
    pub fn other_fds(&self) -> usize {
        self.process
            .fds
            .saturating_sub(self.clients + self.upstream)
    }
}
