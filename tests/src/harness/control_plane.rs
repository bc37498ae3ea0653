//! A control plane running inside the test process, on an ephemeral loopback port.

use std::net::SocketAddr;

use gatehouse_control_plane::{BoundServer, Config};
use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use gatehouse_proto::v1::node_service_client::NodeServiceClient;
use gatehouse_proto::v1::personal_service_client::PersonalServiceClient;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running control plane; stopped when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    channel: Channel,
}

impl ControlPlane {
    /// Starts a control plane with this TOML configuration; `listen` is replaced by
    /// `127.0.0.1:0`.
    pub async fn start(config_toml: &str) -> Self {
        let mut config = Config::from_toml_str(config_toml).expect("test configuration is valid");
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = BoundServer::bind(&config).await.expect("control plane binds");
        let address = server.local_addr().expect("bound address");
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
            stop: Some(stop),
            task: Some(task),
            channel,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
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

    pub fn node(&self) -> NodeServiceClient<Channel> {
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
