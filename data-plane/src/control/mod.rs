//! The node's client of the control plane: the calls a login or a cache miss needs, the
//! `Watch` stream that keeps the node's configuration and cache current, and the activity
//! reports that keep sessions alive.

pub mod activity;
pub mod watch;

use std::time::{Duration, SystemTime};

use gatehouse_proto::v1 as pb;
use pb::node_service_client::NodeServiceClient;
use pb::personal_service_client::PersonalServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::config::{ControlPlaneConfig, NodeCredential};

/// Why a call to the control plane did not give an answer to act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// Not reachable, or did not answer in time: a reason for 503, never for 401.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// The control plane answered, and said no.
    #[error("control plane refused: {}", .0.message())]
    Refused(Status),
}

impl From<Status> for ControlError {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted => Self::Unavailable(status.message().to_owned()),
            _ => Self::Refused(status),
        }
    }
}

/// Adds the development shared secret to every call (with mutual TLS the certificate is the
/// credential), and the W3C trace context of the request that makes the call.
#[derive(Debug, Clone)]
pub struct Credential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(secret) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", secret.clone());
        }
        // The call joins the trace of the request that made it.
        let mut headers = http::HeaderMap::new();
        crate::logging::inject_current(&mut headers);
        for (name, value) in &headers {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
                value.to_str().unwrap_or_default().parse(),
            ) {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}

type NodeClient = NodeServiceClient<InterceptedService<Channel, Credential>>;

/// A logged-in session as the control plane hands it over.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub session: pb::Session,
}

#[derive(Debug, Clone)]
pub struct ControlClient {
    node: NodeClient,
    personal: PersonalServiceClient<Channel>,
    node_id: String,
}

impl ControlClient {
    /// Connects lazily to every endpoint, balancing calls over them.
    pub fn new(config: &ControlPlaneConfig, node_id: &str) -> Result<Self, String> {
        let (tls, credential) = match &config.credential {
            NodeCredential::Certificate {
                ca_file,
                cert_file,
                key_file,
            } => {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path)
                        .map_err(|error| format!("cannot read {}: {error}", path.display()))
                };
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca_file)?))
                    .identity(Identity::from_pem(read(cert_file)?, read(key_file)?));
                (Some(tls), Credential(None))
            }
            NodeCredential::Secret(secret) => {
                let value = format!("Bearer {}", secret.expose())
                    .parse()
                    .map_err(|_| "the node secret must be printable ASCII".to_owned())?;
                (None, Credential(Some(value)))
            }
        };
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| {
                Endpoint::from_shared(endpoint.clone())
                    .map(|endpoint| {
                        endpoint
                            .connect_timeout(config.connect_timeout)
                            .timeout(config.request_timeout)
                            .tcp_nodelay(true)
                            .http2_keep_alive_interval(Duration::from_secs(10))
                            .keep_alive_timeout(Duration::from_secs(5))
                            .keep_alive_while_idle(true)
                    })
                    .map_err(|error| format!("bad control-plane endpoint {endpoint:?}: {error}"))
                    .and_then(|endpoint| match &tls {
                        Some(tls) => endpoint.tls_config(tls.clone()).map_err(|error| {
                            format!("TLS setup for a control-plane endpoint failed: {error}")
                        }),
                        None => Ok(endpoint),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = Channel::balance_list(endpoints.into_iter());
        Ok(Self {
            node: NodeServiceClient::with_interceptor(channel.clone(), credential),
            personal: PersonalServiceClient::new(channel),
            node_id: node_id.to_owned(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(crate) fn node_client(&self) -> NodeClient {
        self.node.clone()
    }

    /// The session of a token, or `None` when the control plane does not know it.
    pub async fn validate(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<pb::Session>, ControlError> {
        let request = pb::ValidateSessionRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            session_token: token.to_owned(),
        };
        match self.node.clone().validate_session(request).await {
            Ok(response) => Ok(response.into_inner().session),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// A session for a ticket, or `None` when the ticket is not (or no longer) valid here.
    pub async fn redeem(
        &self,
        virtual_proxy: &str,
        ticket: &str,
    ) -> Result<Option<Login>, ControlError> {
        let request = pb::RedeemTicketRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            ticket: ticket.to_owned(),
        };
        match self.node.clone().redeem_ticket(request).await {
            Ok(response) => {
                let response = response.into_inner();
                Ok(response.session.map(|session| Login {
                    token: response.session_token,
                    session,
                }))
            }
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Ok(None)
            }
            Err(status) => Err(status.into()),
        }
    }

    pub async fn create_target(
        &self,
        virtual_proxy: &str,
        uri: &str,
    ) -> Result<String, ControlError> {
        let request = pb::CreateTargetRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            target_uri: uri.to_owned(),
        };
        Ok(self
            .node
            .clone()
            .create_target(request)
            .await?
            .into_inner()
            .target_id)
    }

    pub async fn header_login(
        &self,
        virtual_proxy: &str,
        user: pb::User,
    ) -> Result<Login, ControlError> {
        let request = pb::HeaderLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            user: Some(user),
        };
        login(self.node.clone().header_login(request).await?.into_inner())
    }

    pub async fn anonymous_login(&self, virtual_proxy: &str) -> Result<Login, ControlError> {
        let request = pb::AnonymousLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
        };
        login(
            self.node
                .clone()
                .anonymous_login(request)
                .await?
                .into_inner(),
        )
    }

    /// Reports activity; returns the handles of sessions that have ended.
    pub async fn touch(
        &self,
        activity: &[(String, SystemTime)],
    ) -> Result<Vec<String>, ControlError> {
        let request = pb::TouchRequest {
            activity: activity
                .iter()
                .map(|(handle, at)| pb::Activity {
                    handle: handle.clone(),
                    last_active: Some((*at).into()),
                })
                .collect(),
        };
        Ok(self.node.clone().touch(request).await?.into_inner().ended)
    }

    /// Ends the session of `token` through the Personal API, as its holder.
    pub async fn logout(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<pb::Session>, ControlError> {
        let mut request = tonic::Request::new(pb::LogoutRequest {
            virtual_proxy: Some(virtual_proxy.to_owned()),
        });
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            ControlError::Refused(Status::invalid_argument("token is not printable"))
        })?;
        request.metadata_mut().insert("authorization", bearer);
        match self.personal.clone().logout(request).await {
            Ok(response) => Ok(response.into_inner().session),
            Err(status) if status.code() == Code::Unauthenticated => Ok(None),
            Err(status) => Err(status.into()),
        }
    }
}

fn login(response: pb::LoginResponse) -> Result<Login, ControlError> {
    match response.session {
        Some(session) => Ok(Login {
            token: response.session_token,
            session,
        }),
        None => Err(ControlError::Unavailable(
            "login answer without a session".to_owned(),
        )),
    }
}
