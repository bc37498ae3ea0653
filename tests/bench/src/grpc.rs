//! gRPC clients of the control plane, as an authentication module, an admin tool and a
//! data-plane node would hold them.

use anyhow::{Context as _, Result};
use gatehouse_proto::v1::node_service_client::NodeServiceClient;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use gatehouse_proto::v1::{CreateSessionRequest, User};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Adds the node credential to every call, as a data-plane node does.
#[derive(Debug, Clone)]
pub struct NodeCredential(MetadataValue<Ascii>);

impl tonic::service::Interceptor for NodeCredential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type NodeClient = NodeServiceClient<InterceptedService<Channel, NodeCredential>>;

/// A connected HTTP/2 channel to the control plane.
pub async fn channel(endpoint: &str) -> Result<Channel> {
    Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to the control plane at {endpoint}"))
}

pub fn node_client(channel: Channel, secret: &str) -> Result<NodeClient> {
    let credential = NodeCredential(format!("Bearer {secret}").parse()?);
    Ok(NodeServiceClient::with_interceptor(channel, credential))
}

/// Benchmark user number `n`: each login or session gets a user of its own, so the
/// per-user session cap never refuses one.
pub fn user(n: u64) -> User {
    User {
        user_directory: "BENCH".to_owned(),
        user_id: format!("user{n}"),
        attributes: Vec::new(),
    }
}

/// A session for user `n` in the default virtual proxy: its token and handle.
pub async fn create_session(
    client: &mut SessionServiceClient<Channel>,
    n: u64,
) -> Result<(String, String)> {
    let created = client
        .create_session(CreateSessionRequest {
            virtual_proxy: String::new(),
            user: Some(user(n)),
            session_token: None,
        })
        .await
        .context("CreateSession")?
        .into_inner();
    let handle = created
        .session
        .map(|session| session.handle)
        .context("CreateSession answered no session")?;
    Ok((created.session_token, handle))
}

/// The `Cookie` header value for a session of the default virtual proxy.
pub fn cookie(token: &str) -> String {
    format!("X-Qlik-Session={token}")
}
