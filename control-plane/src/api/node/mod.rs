//! `gatehouse.v1.NodeService`: what data-plane nodes call. Every call must carry the node
//! credential (see [`crate::api::access`]).

mod virtual_proxy;
mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use gatehouse_proto::v1 as pb;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub(crate) use self::watch::WatchSource;
use super::{client_from_proto, session_to_proto, sessions_to_proto, user_from_proto};
use crate::authority::Authority;
use crate::error::{Error, StoreError};
use crate::events::RevocationFeed;

/// Most activity records one `Touch` may carry.
const MAX_TOUCH_BATCH: usize = 10_000;

#[derive(Debug, Clone)]
pub struct NodeApi {
    authority: Authority,
    watch: WatchSource,
}

impl NodeApi {
    /// `stopping` ends every `Watch` stream when cancelled.
    pub fn new(
        authority: Authority,
        feed: Arc<RevocationFeed>,
        stopping: CancellationToken,
    ) -> Self {
        let watch = WatchSource {
            store: authority.store().clone(),
            feed,
            authority: authority.clone(),
            stopping,
        };
        Self { authority, watch }
    }
}

impl NodeApi {
    /// A failed check as a node hears it. With sealing on, a store outage is marked: the
    /// node keeps this replica in rotation and opens no breaker, since the next session's
    /// seal may be vouched for (answered at once while the store fails). With sealing off,
    /// it is a plain `UNAVAILABLE`, and the node's breaker spares the store.
    fn validation_refused(&self, error: Error) -> Status {
        let store_down = matches!(error, Error::Store(StoreError::Unavailable(_)));
        let mut status = Status::from(error);
        if store_down && self.authority.outage_fallback().is_some() {
            status.metadata_mut().insert(
                gatehouse_proto::STORE_UNAVAILABLE_KEY,
                tonic::metadata::MetadataValue::from_static("unavailable"),
            );
        }
        status
    }

    /// A new session as a node gets it: token, session and seal.
    fn login_response(&self, issued: crate::authority::IssuedSession) -> pb::LoginResponse {
        pb::LoginResponse {
            seal: self.authority.seal_for(&issued),
            session_token: issued.token,
            session: Some(session_to_proto(issued.session)),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeApi {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let request = request.into_inner();
        let receiver = self.watch.open(request.node_id, request.cursor).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn validate_session(
        &self,
        request: Request<pb::ValidateSessionRequest>,
    ) -> Result<Response<pb::ValidateSessionResponse>, Status> {
        let request = request.into_inner();
        let checked = self
            .authority
            .check_session(
                &request.virtual_proxy,
                &request.session_token,
                &request.seal,
                request.renew_seal,
            )
            .await
            .map_err(|error| self.validation_refused(error))?;
        Ok(Response::new(pb::ValidateSessionResponse {
            session: Some(session_to_proto(checked.session)),
            seal: checked.seal.unwrap_or_default(),
            outage_until: checked.outage_until.map(Into::into),
        }))
    }

    async fn redeem_ticket(
        &self,
        request: Request<pb::RedeemTicketRequest>,
    ) -> Result<Response<pb::RedeemTicketResponse>, Status> {
        let request = request.into_inner();
        let issued = self
            .authority
            .redeem_ticket(
                &request.virtual_proxy,
                &request.ticket,
                client_from_proto(request.client),
            )
            .await?;
        Ok(Response::new(pb::RedeemTicketResponse {
            seal: self.authority.seal_for(&issued),
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

    async fn header_login(
        &self,
        request: Request<pb::HeaderLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let request = request.into_inner();
        let user = user_from_proto(request.user)?;
        let issued = self
            .authority
            .header_login(
                &request.virtual_proxy,
                user,
                client_from_proto(request.client),
            )
            .await?;
        Ok(Response::new(self.login_response(issued)))
    }

    async fn kerberos_login(
        &self,
        request: Request<pb::KerberosLoginRequest>,
    ) -> Result<Response<pb::KerberosLoginResponse>, Status> {
        let request = request.into_inner();
        let (issued, output_token) = self
            .authority
            .kerberos_login(
                &request.virtual_proxy,
                request.token,
                client_from_proto(request.client),
            )
            .await?;
        Ok(Response::new(pb::KerberosLoginResponse {
            login: Some(self.login_response(issued)),
            output_token,
        }))
    }

    async fn jwt_login(
        &self,
        request: Request<pb::JwtLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let request = request.into_inner();
        let issued = self
            .authority
            .jwt_login(
                &request.virtual_proxy,
                &request.token,
                client_from_proto(request.client),
            )
            .await?;
        Ok(Response::new(self.login_response(issued)))
    }

    async fn oidc_begin(
        &self,
        request: Request<pb::OidcBeginRequest>,
    ) -> Result<Response<pb::OidcBeginResponse>, Status> {
        let request = request.into_inner();
        let started = self
            .authority
            .oidc_begin(
                &request.virtual_proxy,
                &request.redirect_uri,
                &request.target,
                &request.binding,
            )
            .await?;
        Ok(Response::new(pb::OidcBeginResponse {
            authorization_uri: started.authorization_uri,
            binding: started.binding,
            login_timeout: prost_types::Duration::try_from(started.login_timeout).ok(),
        }))
    }

    async fn oidc_callback(
        &self,
        request: Request<pb::OidcCallbackRequest>,
    ) -> Result<Response<pb::OidcCallbackResponse>, Status> {
        let request = request.into_inner();
        let (issued, target) = self
            .authority
            .oidc_callback(
                &request.virtual_proxy,
                &request.state,
                &request.code,
                &request.binding,
                &request.iss,
                client_from_proto(request.client),
            )
            .await?;
        Ok(Response::new(pb::OidcCallbackResponse {
            login: Some(self.login_response(issued)),
            target,
        }))
    }

    async fn oidc_backchannel_logout(
        &self,
        request: Request<pb::OidcBackchannelLogoutRequest>,
    ) -> Result<Response<pb::OidcBackchannelLogoutResponse>, Status> {
        let request = request.into_inner();
        let sessions_ended = self
            .authority
            .oidc_backchannel_logout(&request.virtual_proxy, &request.logout_token)
            .await?;
        Ok(Response::new(pb::OidcBackchannelLogoutResponse {
            sessions_ended,
        }))
    }

    async fn oidc_end_session(
        &self,
        request: Request<pb::OidcEndSessionRequest>,
    ) -> Result<Response<pb::OidcEndSessionResponse>, Status> {
        let end_session_uri = self
            .authority
            .oidc_end_session(&request.into_inner().virtual_proxy)
            .await?
            .unwrap_or_default();
        Ok(Response::new(pb::OidcEndSessionResponse {
            end_session_uri,
        }))
    }

    async fn saml_begin(
        &self,
        request: Request<pb::SamlBeginRequest>,
    ) -> Result<Response<pb::SamlBeginResponse>, Status> {
        let request = request.into_inner();
        let started = self
            .authority
            .saml_begin(&request.virtual_proxy, &request.target, &request.binding)
            .await?;
        Ok(Response::new(pb::SamlBeginResponse {
            redirect_uri: started.redirect_uri,
            binding: started.binding,
            login_timeout: prost_types::Duration::try_from(started.login_timeout).ok(),
        }))
    }

    async fn saml_acs(
        &self,
        request: Request<pb::SamlAcsRequest>,
    ) -> Result<Response<pb::SamlAcsResponse>, Status> {
        let request = request.into_inner();
        let (issued, target) = self
            .authority
            .saml_acs(
                &request.virtual_proxy,
                &request.saml_response,
                &request.relay_state,
                &request.binding,
                client_from_proto(request.client),
            )
            .await?;
        Ok(Response::new(pb::SamlAcsResponse {
            login: Some(self.login_response(issued)),
            target,
        }))
    }

    async fn saml_metadata(
        &self,
        request: Request<pb::SamlMetadataRequest>,
    ) -> Result<Response<pb::SamlMetadataResponse>, Status> {
        let xml = self
            .authority
            .saml_metadata(&request.into_inner().virtual_proxy)?;
        Ok(Response::new(pb::SamlMetadataResponse { xml }))
    }

    async fn saml_logout_message(
        &self,
        request: Request<pb::SamlLogoutMessageRequest>,
    ) -> Result<Response<pb::SamlLogoutMessageResponse>, Status> {
        let request = request.into_inner();
        let message = if request.form.is_empty() {
            crate::saml::SloMessage::Redirect(request.query)
        } else {
            crate::saml::SloMessage::Post(request.form)
        };
        let outcome = self
            .authority
            .saml_slo(&request.virtual_proxy, message, &request.binding)
            .await?;
        let mut response = pb::SamlLogoutMessageResponse {
            ended_handles: outcome.ended,
            ..pb::SamlLogoutMessageResponse::default()
        };
        let fields = SloFields::of(outcome.answer);
        response.redirect_uri = fields.redirect_uri;
        response.post_action = fields.post_action;
        response.saml_response = fields.saml_message;
        response.relay_state = fields.relay_state;
        Ok(Response::new(response))
    }

    async fn saml_logout_begin(
        &self,
        request: Request<pb::SamlLogoutBeginRequest>,
    ) -> Result<Response<pb::SamlLogoutBeginResponse>, Status> {
        let request = request.into_inner();
        let started = self
            .authority
            .saml_logout_begin(
                &request.virtual_proxy,
                &request.session_handle,
                &request.binding,
            )
            .await?;
        let Some(started) = started else {
            return Ok(Response::new(pb::SamlLogoutBeginResponse::default()));
        };
        let mut response = pb::SamlLogoutBeginResponse {
            binding: started.binding,
            timeout: prost_types::Duration::try_from(started.timeout).ok(),
            ..pb::SamlLogoutBeginResponse::default()
        };
        let fields = SloFields::of(started.to_idp);
        response.redirect_uri = fields.redirect_uri;
        response.post_action = fields.post_action;
        response.saml_request = fields.saml_message;
        response.relay_state = fields.relay_state;
        Ok(Response::new(response))
    }

    async fn anonymous_login(
        &self,
        request: Request<pb::AnonymousLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let request = request.into_inner();
        let issued = self
            .authority
            .anonymous_login(&request.virtual_proxy, client_from_proto(request.client))
            .await?;
        Ok(Response::new(self.login_response(issued)))
    }

    async fn touch(
        &self,
        request: Request<pb::TouchRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        let activity = request.into_inner().activity;
        if activity.len() > MAX_TOUCH_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_TOUCH_BATCH} activity records per call"
            )));
        }
        let activity = activity
            .into_iter()
            .map(|record| {
                let at = record
                    .last_active
                    .and_then(|at| SystemTime::try_from(at).ok())
                    .ok_or_else(|| {
                        Status::invalid_argument("every activity record needs last_active")
                    })?;
                Ok((record.handle, at))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let ended = self.authority.touch_sessions(activity).await?;
        Ok(Response::new(pb::TouchResponse { ended }))
    }
}

/// A SAML logout message on its way to the identity provider, in the fields the node's
/// messages carry it in (empty where the binding has none).
struct SloFields {
    redirect_uri: String,
    post_action: String,
    saml_message: String,
    relay_state: String,
}

impl SloFields {
    fn of(answer: crate::saml::SloAnswer) -> Self {
        match answer {
            crate::saml::SloAnswer::Redirect(redirect_uri) => Self {
                redirect_uri,
                post_action: String::new(),
                saml_message: String::new(),
                relay_state: String::new(),
            },
            crate::saml::SloAnswer::Post {
                action,
                saml_message,
                relay_state,
            } => Self {
                redirect_uri: String::new(),
                post_action: action,
                saml_message,
                relay_state: relay_state.unwrap_or_default(),
            },
        }
    }
}
