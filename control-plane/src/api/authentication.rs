//! `gatehouse.v1.AuthenticationService`: one-time login tickets.

use gatehouse_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{user_from_proto, user_to_proto};
use crate::authority::Authority;

#[derive(Debug, Clone)]
pub struct AuthenticationApi {
    authority: Authority,
}

impl AuthenticationApi {
    pub fn new(authority: Authority) -> Self {
        Self { authority }
    }
}

#[tonic::async_trait]
impl pb::authentication_service_server::AuthenticationService for AuthenticationApi {
    async fn request_ticket(
        &self,
        request: Request<pb::RequestTicketRequest>,
    ) -> Result<Response<pb::RequestTicketResponse>, Status> {
        let request = request.into_inner();
        let user = user_from_proto(request.user)?;
        let issued = self
            .authority
            .request_ticket(&request.virtual_proxy, user, request.target_id.as_deref())
            .await?;
        Ok(Response::new(pb::RequestTicketResponse {
            ticket: issued.ticket,
            target_uri: issued.target_uri,
            user: Some(user_to_proto(issued.user)),
            expires: Some(issued.expires.into()),
        }))
    }
}
