//! `gatehouse.v1.SessionService`: trusted clients create, inspect and end sessions.

use gatehouse_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::access::AdminName;
use super::{
    selector_from_proto, session_to_proto, sessions_to_proto, user_from_proto, user_key_from_proto,
};
use crate::audit::{AdminCall, Method};
use crate::authority::Authority;

/// Who makes a call, for the audit trail.
fn caller<T>(request: &Request<T>) -> AdminCall {
    AdminCall::new(AdminName::of(request), Method::SessionApi)
}

#[derive(Debug, Clone)]
pub struct SessionApi {
    authority: Authority,
}

impl SessionApi {
    pub fn new(authority: Authority) -> Self {
        Self { authority }
    }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let by = caller(&request);
        let request = request.into_inner();
        let user = user_from_proto(request.user)?;
        let issued = self
            .authority
            .create_session(&request.virtual_proxy, user, request.session_token, &by)
            .await?;
        Ok(Response::new(pb::CreateSessionResponse {
            session_token: issued.token,
            session: Some(session_to_proto(issued.session)),
            evicted: sessions_to_proto(issued.evicted),
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let selector = selector_from_proto(request.into_inner().session)?;
        let session = self.authority.get_session(&selector, None).await?;
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session_to_proto(session)),
        }))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let by = caller(&request);
        let selector = selector_from_proto(request.into_inner().session)?;
        let session = self.authority.delete_session(&selector, None, &by).await?;
        Ok(Response::new(pb::DeleteSessionResponse {
            session: Some(session_to_proto(session)),
        }))
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        let request = request.into_inner();
        let user = user_key_from_proto(&request.user_directory, &request.user_id)?;
        let sessions = self
            .authority
            .list_user_sessions(&user, request.virtual_proxy.as_deref())
            .await?;
        Ok(Response::new(pb::ListUserSessionsResponse {
            sessions: sessions_to_proto(sessions),
        }))
    }

    async fn delete_user_sessions(
        &self,
        request: Request<pb::DeleteUserSessionsRequest>,
    ) -> Result<Response<pb::DeleteUserSessionsResponse>, Status> {
        let by = caller(&request);
        let request = request.into_inner();
        let user = user_key_from_proto(&request.user_directory, &request.user_id)?;
        let sessions = self
            .authority
            .delete_user_sessions(&user, request.virtual_proxy.as_deref(), &by)
            .await?;
        Ok(Response::new(pb::DeleteUserSessionsResponse {
            sessions: sessions_to_proto(sessions),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .authority
            .list_sessions(
                request.virtual_proxy.as_deref(),
                request.page_size,
                &request.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions_to_proto(page.sessions),
            next_page_token: page.next_page_token,
        }))
    }
}
