//! A control plane running inside the test process, on an ephemeral loopback port.

use std::net::SocketAddr;

use gatehouse_control_plane::{BoundServer, Config};
use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use gatehouse_proto::v1::node_service_client::NodeServiceClient;
use gatehouse_proto::v1::personal_service_client::PersonalServiceClient;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The node credential every test control plane is configured with.
pub const NODE_SECRET: &str = "test-node-secret-not-for-production-0123456789";

/// Adds the node credential to every call, as a data-plane node does.
#[derive(Debug, Clone)]
pub struct NodeCredential;

impl tonic::service::Interceptor for NodeCredential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {NODE_SECRET}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// A running control plane; stopped when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    address: SocketAddr,
    admin_address: SocketAddr,
    rest_address: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    channel: Channel,
}

impl ControlPlane {
    /// Starts a control plane with this TOML configuration; `listen` is replaced by
    /// `127.0.0.1:0`, and the node secret is [`NODE_SECRET`] unless the text sets one.
    pub async fn start(config_toml: &str) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), config_toml).await
    }

    /// Starts a control plane from a configuration file it reloads on change (the file must
    /// set the node secret to [`NODE_SECRET`]); `listen` is replaced by `127.0.0.1:0`.
    pub async fn start_reloading(path: &std::path::Path) -> Self {
        let overrides = gatehouse_control_plane::config::Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        };
        let config = Config::load(Some(path), &overrides).expect("test configuration is valid");
        let server = BoundServer::bind(&config)
            .await
            .expect("control plane binds")
            .reload_from(path.to_owned(), overrides);
        Self::serve(server)
    }

    async fn start_at(listen: SocketAddr, config_toml: &str) -> Self {
        let mut text = config_toml.to_owned();
        if !text.contains("[node_api]") {
            text.push_str(&format!(
                "\n[node_api]\nshared_secret = \"{NODE_SECRET}\"\n"
            ));
        }
        let mut config = Config::from_toml_str(&text).expect("test configuration is valid");
        config.listen = listen;
        config.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = BoundServer::bind(&config)
            .await
            .expect("control plane binds");
        Self::serve(server)
    }

    fn serve(server: BoundServer) -> Self {
        let address = server.local_addr().expect("bound address");
        let admin_address = server.admin_addr().expect("bound admin address");
        let rest_address = server.rest_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("valid endpoint")
            .connect_lazy();
        Self {
            address,
            admin_address,
            rest_address,
            stop: Some(stop),
            task: Some(task),
            channel,
        }
    }

    /// As [`start`](Self::start), but listening on `127.0.0.1:port`, so that a control plane
    /// can be stopped and started again where data-plane nodes expect it.
    pub async fn start_on(port: u16, config_toml: &str) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], port)), config_toml).await
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Address of `/live` and `/ready`.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Address of the QPS-compatible REST surface; the configuration must turn it on.
    pub fn rest_address(&self) -> SocketAddr {
        self.rest_address
            .expect("the test configuration sets [rest] listen")
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn authentication(&self) -> AuthenticationServiceClient<Channel> {
        AuthenticationServiceClient::new(self.channel())
    }

    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel())
    }

    pub fn personal(&self) -> PersonalServiceClient<Channel> {
        PersonalServiceClient::new(self.channel())
    }

    /// The node API, with the node credential.
    pub fn node(&self) -> NodeServiceClient<InterceptedService<Channel, NodeCredential>> {
        NodeServiceClient::with_interceptor(self.channel(), NodeCredential)
    }

    /// The node API without any credential.
    pub fn node_without_credential(&self) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.channel())
    }

    /// Stops serving and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
