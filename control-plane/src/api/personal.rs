//! `gatehouse.v1.PersonalService`: a user sees and ends their own sessions, authorised by the
//! calling session's token and nothing else.

use gatehouse_proto::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{session_to_proto, sessions_to_proto};
use crate::authority::{Authority, NO_SESSION};
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct PersonalApi {
    authority: Authority,
}

impl PersonalApi {
    pub fn new(authority: Authority) -> Self {
        Self { authority }
    }

    /// The caller's token, and the virtual proxy its session must belong to: a bearer token
    /// (of the named proxy, or of any when none is named), else the named proxy's cookie (the
    /// default proxy's when none is named), whose session must be of that proxy.
    fn caller_token(
        &self,
        metadata: &MetadataMap,
        virtual_proxy: Option<&str>,
    ) -> Result<(String, Option<String>), Error> {
        if let Some(token) = bearer_token(metadata) {
            return Ok((token, virtual_proxy.map(str::to_owned)));
        }
        let prefix = virtual_proxy.unwrap_or_default();
        let proxies = self.authority.virtual_proxies();
        let proxy = proxies
            .get(prefix)
            .map_err(|_| Error::Unauthenticated(NO_SESSION))?;
        let token =
            cookie_value(metadata, &proxy.cookie_name).ok_or(Error::Unauthenticated(NO_SESSION))?;
        Ok((token, Some(prefix.to_owned())))
    }
}

#[tonic::async_trait]
impl pb::personal_service_server::PersonalService for PersonalApi {
    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let requested = request.get_ref().virtual_proxy.clone();
        let (token, virtual_proxy) = self.caller_token(request.metadata(), requested.as_deref())?;
        let session = self
            .authority
            .current_session(&token, virtual_proxy.as_deref())
            .await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            session: Some(session_to_proto(session)),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let requested = request.get_ref().virtual_proxy.clone();
        let (token, virtual_proxy) = self.caller_token(request.metadata(), requested.as_deref())?;
        let session = self
            .authority
            .logout(&token, virtual_proxy.as_deref())
            .await?;
        Ok(Response::new(pb::LogoutResponse {
            session: Some(session_to_proto(session)),
        }))
    }

    async fn list_my_sessions(
        &self,
        request: Request<pb::ListMySessionsRequest>,
    ) -> Result<Response<pb::ListMySessionsResponse>, Status> {
        let requested = request.get_ref().virtual_proxy.clone();
        let (token, virtual_proxy) = self.caller_token(request.metadata(), requested.as_deref())?;
        let own = self
            .authority
            .own_sessions(&token, virtual_proxy.as_deref())
            .await?;
        Ok(Response::new(pb::ListMySessionsResponse {
            sessions: sessions_to_proto(own.sessions),
            current_handle: own.current_handle,
        }))
    }

    async fn end_my_session(
        &self,
        request: Request<pb::EndMySessionRequest>,
    ) -> Result<Response<pb::EndMySessionResponse>, Status> {
        let (token, virtual_proxy) = self.caller_token(
            request.metadata(),
            request.get_ref().virtual_proxy.as_deref(),
        )?;
        let session = self
            .authority
            .end_own_session(&token, virtual_proxy.as_deref(), &request.get_ref().handle)
            .await?;
        Ok(Response::new(pb::EndMySessionResponse {
            session: Some(session_to_proto(session)),
        }))
    }
}

fn bearer_token(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// The value of cookie `name` in any `cookie` header (RFC 6265 `name=value; name=value`).
fn cookie_value(metadata: &MetadataMap, name: &str) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (name, value) in pairs {
            metadata.append(*name, value.parse().unwrap_or_else(|_| panic!("{value}")));
        }
        metadata
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(
            bearer_token(&metadata(&[("authorization", "bearer abc")])),
            Some("abc".into())
        );
        assert_eq!(
            bearer_token(&metadata(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            bearer_token(&metadata(&[("authorization", "Bearer ")])),
            None
        );
    }

    #[test]
    fn the_named_cookie_is_found_among_others() {
        let headers = metadata(&[
            ("cookie", "a=1; X-Qlik-Session=tok; b=2"),
            ("cookie", "X-Qlik-Session-hr=\"hr\""),
        ]);
        assert_eq!(cookie_value(&headers, "X-Qlik-Session"), Some("tok".into()));
        assert_eq!(
            cookie_value(&headers, "X-Qlik-Session-hr"),
            Some("hr".into())
        );
        assert_eq!(cookie_value(&headers, "X-Qlik-Session-x"), None);
    }
}
