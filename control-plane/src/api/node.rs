//! `gatehouse.v1.NodeService`: what data-plane nodes call during login.

use gatehouse_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{session_to_proto, sessions_to_proto};
use crate::authority::Authority;

#[derive(Debug, Clone)]
pub struct NodeApi {
    authority: Authority,
}

impl NodeApi {
    pub fn new(authority: Authority) -> Self {
        Self { authority }
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeApi {
    async fn redeem_ticket(
        &self,
        request: Request<pb::RedeemTicketRequest>,
    ) -> Result<Response<pb::RedeemTicketResponse>, Status> {
        let request = request.into_inner();
        let issued = self
            .authority
            .redeem_ticket(&request.virtual_proxy, &request.ticket)
            .await?;
        Ok(Response::new(pb::RedeemTicketResponse {
            session_token: issued.token,
            session: Some(session_to_proto(issued.session)),
            evicted: sessions_to_proto(issued.evicted),
        }))
    }

    async fn create_target(
        &self,
        request: Request<pb::CreateTargetRequest>,
    ) -> Result<Response<pb::CreateTargetResponse>, Status> {
        let request = request.into_inner();
        let (target_id, expires) = self
            .authority
            .create_target(&request.virtual_proxy, &request.target_uri)
            .await?;
        Ok(Response::new(pb::CreateTargetResponse {
            target_id,
            expires: Some(expires.into()),
        }))
    }
}
