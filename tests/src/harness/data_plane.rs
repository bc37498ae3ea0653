//! A data-plane node running inside the test process: its own sockets, cache and `Watch`
//! stream, so two nodes are as independent as two processes would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_data_plane::state::NodeState;
use gatehouse_data_plane::{BoundNode, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client;
use super::control_plane::{ControlPlane, NODE_SECRET};
use super::eventually::eventually;

/// A running node; stopped when dropped.
#[derive(Debug)]
pub struct DataPlaneNode {
    address: SocketAddr,
    admin_address: SocketAddr,
    forward_auth_address: Option<SocketAddr>,
    ext_authz_address: Option<SocketAddr>,
    state: Arc<NodeState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl DataPlaneNode {
    /// Starts a node of `control_plane` with a small cache (ttl 2 s, touch every 3 s, grace
    /// 30 s) and waits until it is ready (it holds a configuration snapshot).
    pub async fn start(control_plane: &ControlPlane) -> Self {
        Self::start_with(control_plane, "").await
    }

    /// As [`start`](Self::start), with `extra_toml` merged over the node's configuration
    /// (table by table, key by key), e.g. `"[cache]\nttl = \"20s\"\ntouch_interval = \"30s\""`.
    pub async fn start_with(control_plane: &ControlPlane, extra_toml: &str) -> Self {
        let base = format!(
            r#"
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            node_id = "test-node"
            [control_plane]
            endpoints = ["http://{}"]
            shared_secret = "{NODE_SECRET}"
            [cache]
            ttl = "2s"
            touch_interval = "3s"
            grace = "30s"
            "#,
            control_plane.address()
        );
        let mut config: toml::Table = base.parse().expect("base node configuration");
        // The suite runs once with the node's own HTTP/1 engine forced off too
        // (`GATEHOUSE_TEST_FAST_HTTP1=off`): every test must pass on both paths.
        if std::env::var("GATEHOUSE_TEST_FAST_HTTP1").is_ok_and(|value| value == "off") {
            config.insert("fast_http1".to_owned(), toml::Value::Boolean(false));
        }
        let extra: toml::Table = extra_toml.parse().expect("extra node configuration");
        merge(&mut config, extra);
        let text = toml::to_string(&config).expect("configuration prints as TOML");
        let config = Config::from_toml_str(&text).expect("node configuration is valid");

        let node = BoundNode::bind(config).await.expect("node binds");
        let address = node.local_addr().expect("bound address");
        let admin_address = node.admin_addr().expect("bound admin address");
        let forward_auth_address = node.forward_auth_addr();
        let ext_authz_address = node.ext_authz_addr();
        let state = node.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.serve(async {
            let _ = stopped.await;
        }));
        let started = Self {
            address,
            admin_address,
            forward_auth_address,
            ext_authz_address,
            state,
            stop: Some(stop),
            task: Some(task),
        };
        let ready = format!("http://{admin_address}/ready");
        eventually("the node to be ready", Duration::from_secs(10), || {
            let ready = ready.clone();
            async move {
                let response = client::try_request(::http::Method::GET, &ready, &[], "")
                    .await
                    .ok()?;
                (response.status == 200).then_some(())
            }
        })
        .await;
        started
    }

    /// `http://127.0.0.1:port{path}` on the proxy port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// `ws://127.0.0.1:port{path}` on the proxy port.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// The `ext_authz` gRPC listener (`forward_auth.grpc_listen` was set).
    pub fn ext_authz_address(&self) -> SocketAddr {
        self.ext_authz_address
            .expect("the node was started with forward_auth.grpc_listen")
    }

    /// The forward-auth listener (`forward_auth.listen` was set).
    pub fn forward_auth_address(&self) -> SocketAddr {
        self.forward_auth_address
            .expect("the node was started with forward_auth.listen")
    }

    pub fn state(&self) -> Arc<NodeState> {
        self.state.clone()
    }

    /// Sends the shutdown signal (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether the node finished shutting down within `wait`.
    pub async fn stopped_within(mut self, wait: Duration) -> bool {
        match self.task.take() {
            Some(task) => tokio::time::timeout(wait, task).await.is_ok(),
            None => true,
        }
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the node to be done.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for DataPlaneNode {
    fn drop(&mut self) {
        // The node's accept loops and its Watch follower are tasks of their own: only the
        // shutdown signal ends them (aborting the serve task would leave them running).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Merges `extra` into `base`: tables recursively, any other value replaced.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(extra)) => merge(base, extra),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
