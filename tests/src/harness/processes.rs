//! The real `control-plane` and `data-plane` binaries as child processes, for the tests that
//! measure a process from outside (resident memory, open files) or push it to its limits,
//! where a node inside the test process would share its memory, descriptors and runtime.
//!
//! The processes are the kit's; this module finds the binaries next to the test binary
//! (`target/<profile>/`), sets the tests' node secret, adds gRPC clients, and fails the test
//! where the kit answers an error. `cargo test --workspace` builds the binaries, and
//! `cargo build -p gatehouse-data-plane -p gatehouse-control-plane` does on its own.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use gatehouse_testkit::{Process, loopback};
use tonic::transport::Channel;

use super::control_plane::NODE_SECRET;
use super::proc_stats::{self, ProcStats};

/// `target/<profile>/<name>`, next to the directory of this test binary (`deps/`).
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the test binary lives in target/<profile>/deps");
    gatehouse_testkit::binary(&dir, name).unwrap_or_else(|error| {
        panic!(
            "{error}: build it first (cargo build -p gatehouse-data-plane -p \
             gatehouse-control-plane, with --release for a release test run)"
        )
    })
}

/// The workspace binary `name` (`control-plane` or `data-plane`), as `command` sets it up
/// for its addresses on loopback: `[0]` the port it serves on, `[1]` its admin port, any
/// further ones (`ports` in all) the caller's. Ready when it listens on all of them and the
/// admin port's `/ready` answers 200; started again on new ports if one was taken before it
/// bound it. For the tests that read what a process logs ([`Process::output`]) or see it
/// exit, where the kit's processes set the log filter themselves.
pub async fn start_binary(
    name: &str,
    ports: usize,
    mut command: impl FnMut(&[SocketAddr]) -> tokio::process::Command,
) -> (Process, Vec<SocketAddr>) {
    let started = gatehouse_testkit::ports::start_on_free_ports(ports, |ports| {
        let addresses: Vec<SocketAddr> = ports.iter().map(|port| loopback(*port)).collect();
        let mut command = command(&addresses);
        async move {
            let mut process = Process::spawn(name, &mut command, Vec::new())?;
            let admin = addresses[1];
            process
                .wait_ready(
                    &format!("{name} to be ready"),
                    &ports,
                    Duration::from_secs(30),
                    || async move {
                        gatehouse_testkit::http_client::get_once(admin, "/ready")
                            .await
                            .is_ok_and(|(status, _)| status.is_success())
                    },
                )
                .await?;
            Ok((process, addresses))
        }
    })
    .await;
    started.unwrap_or_else(|error| panic!("start {name}: {error:#}"))
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

/// What a test asks of a child process beyond the kit's answers.
pub trait ProcessUnderTest {
    /// Panics, with what the process wrote to stderr, if it has exited.
    fn assert_running(&mut self);
}

impl ProcessUnderTest for Process {
    fn assert_running(&mut self) {
        if let Err(error) = self.check_running() {
            panic!("{error:#}");
        }
    }
}

/// A `control-plane` process with the node secret [`NODE_SECRET`].
#[derive(Debug)]
pub struct ControlPlaneProcess {
    inner: gatehouse_testkit::ControlPlaneProcess,
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
    pub async fn start_with_env(config_toml: &str, env: &[(&str, &OsStr)]) -> Self {
        let binary = binary("control-plane");
        let inner =
            gatehouse_testkit::ControlPlaneProcess::start(&binary, config_toml, NODE_SECRET, env)
                .await
                .unwrap_or_else(|error| panic!("start the control plane: {error:#}"));
        let channel = Channel::from_shared(inner.endpoint())
            .expect("valid endpoint")
            .connect_lazy();
        Self { inner, channel }
    }

    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.inner.admin
    }

    pub fn authentication(&self) -> AuthenticationServiceClient<Channel> {
        AuthenticationServiceClient::new(self.channel.clone())
    }

    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }
}

impl Deref for ControlPlaneProcess {
    type Target = gatehouse_testkit::ControlPlaneProcess;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for ControlPlaneProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// A `data-plane` node process.
#[derive(Debug)]
pub struct DataPlaneProcess(gatehouse_testkit::DataPlaneProcess);

impl DataPlaneProcess {
    /// Starts a node of `control_plane` with `settings` (`section.key=value`, as `--set`
    /// takes them) and waits until it is ready (it holds a configuration snapshot).
    pub async fn start(control_plane: &ControlPlaneProcess, name: &str, settings: &[&str]) -> Self {
        let node = gatehouse_testkit::DataPlaneProcess::start(
            &binary("data-plane"),
            &control_plane.endpoint(),
            NODE_SECRET,
            name,
            settings,
        )
        .await
        .unwrap_or_else(|error| panic!("start data-plane node {name}: {error:#}"));
        Self(node)
    }

    pub fn address(&self) -> SocketAddr {
        self.0.address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.0.admin
    }

    /// `http://127.0.0.1:port{path}` on the proxy port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.0.address)
    }

    /// `ws://127.0.0.1:port{path}` on the proxy port.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.0.address)
    }

    /// A series of the node's `/metrics`, summed over its labels; `None` when the admin
    /// port does not answer or has no such series.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.0.metric(name).await.ok()
    }

    /// What the node holds now; `upstream` is the address of its upstream node.
    pub async fn sample(&self, upstream: SocketAddr) -> NodeSample {
        let connections = proc_stats::tcp_connections(self.process.pid());
        NodeSample {
            process: self.process.stats().expect("read the node's /proc"),
            clients: connections
                .iter()
                .filter(|(local, _)| *local == self.0.address)
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

impl Deref for DataPlaneProcess {
    type Target = gatehouse_testkit::DataPlaneProcess;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for DataPlaneProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
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
