//! The node's client of the control plane: the calls a login or a cache miss needs, and the
//! `Watch` stream that keeps the node's configuration and cache current. Failed calls are
//! decoded here (`errors`) into what they mean for the answer; replicas and failover are in
//! `replicas`.

mod errors;
mod replicas;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use gatehouse_proto::v1 as pb;
use tonic::Status;

pub use self::errors::ControlError;
use self::errors::{is_invalid, is_not_accepted, is_not_found};
pub use self::replicas::Credential;
use self::replicas::{NodeClient, Replica, Replicas};
use crate::config::ControlPlaneConfig;

/// A logged-in session as the control plane hands it over.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub session: pb::Session,
    /// For the seal cookie; empty when the control plane seals nothing.
    pub seal: String,
}

/// A session the control plane vouched for on a cache miss.
#[derive(Debug, Clone)]
pub struct Checked {
    pub session: pb::Session,
    /// A new seal for the browser; empty to keep the one it has.
    pub seal: String,
    /// Served from its seal during a store outage: no longer than this.
    pub outage_until: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct ControlClient {
    replicas: Arc<Replicas>,
    node_id: String,
}

impl ControlClient {
    /// Connects lazily to every endpoint, balancing calls over them.
    pub fn new(config: &ControlPlaneConfig, node_id: &str) -> Result<Self, String> {
        Ok(Self {
            replicas: Arc::new(Replicas::connect(config)?),
            node_id: node_id.to_owned(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Makes `call` on one endpoint after another until one answers. An answer, even a
    /// refusal, ends it; a failure to get one (unreachable, timed out, or the replica cannot
    /// reach its store) moves on to the next endpoint. Every call here may be made again
    /// safely: a retried login or ticket redemption has the outcome the user's own retry of
    /// a 503 would have.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.replicas.call_on(usize::MAX, call).await
    }

    /// As [`call`](Self::call), on one endpoint only: for a call that must not be made
    /// twice. An OpenID callback consumes its login's state, so a retry on another replica
    /// after a timeout could only be refused, and might leave an unused session behind.
    async fn call_once<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.replicas.call_on(1, call).await
    }

    /// A `NodeService` call: `rpc` on a clone of each endpoint's client with a clone of
    /// `request`, until one answers (see [`call`](Self::call)).
    async fn node_call<Q, A, F, Fut>(&self, request: Q, rpc: F) -> Result<A, Status>
    where
        Q: Clone,
        F: Fn(NodeClient, Q) -> Fut,
        Fut: Future<Output = Result<tonic::Response<A>, Status>>,
    {
        self.call(|replica| rpc(replica.node.clone(), request.clone()))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Completes when a call gets an answer from an endpoint that had failed: the control
    /// plane is reachable again.
    pub(crate) async fn reachable_again(&self) {
        self.replicas.reachable_again.notified().await;
    }

    /// Opens the `Watch` stream on the first endpoint that answers.
    pub(crate) async fn watch(&self, request: pb::WatchRequest) -> Result<WatchStream, Status> {
        self.call(|replica| {
            let mut client = replica.node.clone();
            let request = request.clone();
            let timeouts = replica.timeouts.subscribe();
            async move {
                Ok(WatchStream {
                    stream: client.watch(request).await?.into_inner(),
                    timeouts,
                })
            }
        })
        .await
    }

    /// The session of a token, or `None` when the control plane does not know it. `seal`:
    /// the browser's seal cookie (`Some("")` when it has none) on a path that sets a renewed
    /// one; `None` on paths that do not handle seals.
    pub async fn validate(
        &self,
        virtual_proxy: &str,
        token: &str,
        seal: Option<&str>,
    ) -> Result<Option<Checked>, ControlError> {
        let request = pb::ValidateSessionRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            session_token: token.to_owned(),
            seal: seal.unwrap_or_default().to_owned(),
            renew_seal: seal.is_some(),
        };
        // A session served from its seal is second-hand: the other replicas are asked too.
        let answer = self
            .replicas
            .call_settled(
                |replica| {
                    let mut client = replica.node.clone();
                    let request = request.clone();
                    async move { client.validate_session(request).await }
                },
                |answer: &tonic::Response<pb::ValidateSessionResponse>| {
                    answer.get_ref().outage_until.is_some()
                },
            )
            .await
            .map(tonic::Response::into_inner);
        match answer {
            Ok(answer) => Ok(answer.session.map(|session| Checked {
                session,
                seal: answer.seal,
                outage_until: answer
                    .outage_until
                    .and_then(|until| SystemTime::try_from(until).ok()),
            })),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// A session for a ticket, or `None` when the ticket is not (or no longer) valid here.
    pub async fn redeem(
        &self,
        virtual_proxy: &str,
        ticket: &str,
        client: pb::ClientInfo,
    ) -> Result<Option<Login>, ControlError> {
        let request = pb::RedeemTicketRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            ticket: ticket.to_owned(),
            client: Some(client),
        };
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.redeem_ticket(request).await
            })
            .await;
        match answer {
            Ok(answer) => Ok(answer.session.map(|session| Login {
                token: answer.session_token,
                session,
                seal: answer.seal,
            })),
            Err(status) if is_not_found(&status) || is_invalid(&status) => Ok(None),
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
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.create_target(request).await
            })
            .await?;
        Ok(answer.target_id)
    }

    pub async fn header_login(
        &self,
        virtual_proxy: &str,
        user: pb::User,
        client: pb::ClientInfo,
    ) -> Result<Login, ControlError> {
        let request = pb::HeaderLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            user: Some(user),
            client: Some(client),
        };
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.header_login(request).await
            })
            .await?;
        login(answer)
    }

    /// Hands a client's SPNEGO token to the control plane, which holds the keytab. Returns
    /// the login and the acceptor's reply token (empty when there is none).
    pub async fn kerberos_login(
        &self,
        virtual_proxy: &str,
        token: Vec<u8>,
        client: pb::ClientInfo,
    ) -> Result<(Login, Vec<u8>), ControlError> {
        let request = pb::KerberosLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            token,
            client: Some(client),
        };
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.kerberos_login(request).await
            })
            .await?;
        let login = login(answer.login.unwrap_or_default())?;
        Ok((login, answer.output_token))
    }

    pub async fn jwt_login(
        &self,
        virtual_proxy: &str,
        token: &str,
        client: pb::ClientInfo,
    ) -> Result<Login, ControlError> {
        let request = pb::JwtLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            token: token.to_owned(),
            client: Some(client),
        };
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.jwt_login(request).await
            })
            .await?;
        login(answer)
    }

    /// Starts an OpenID Connect login; `redirect_uri` is this node's callback URL and
    /// `binding` the browser's binding cookie (empty when it has none).
    pub async fn oidc_begin(
        &self,
        request: pb::OidcBeginRequest,
    ) -> Result<pb::OidcBeginResponse, ControlError> {
        Ok(self
            .node_call(request, |mut client, request| async move {
                client.oidc_begin(request).await
            })
            .await?)
    }

    /// Finishes an OpenID Connect login; returns the session and the path to go to. Made
    /// on one endpoint only (see [`call_once`](Self::call_once)).
    pub async fn oidc_callback(
        &self,
        request: pb::OidcCallbackRequest,
    ) -> Result<(Login, String), ControlError> {
        let answer = self
            .call_once(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.oidc_callback(request).await }
            })
            .await?
            .into_inner();
        Ok((login(answer.login.unwrap_or_default())?, answer.target))
    }

    /// Hands the control plane a back-channel logout token; returns how many sessions ended.
    pub async fn oidc_backchannel_logout(
        &self,
        virtual_proxy: &str,
        logout_token: &str,
    ) -> Result<u32, ControlError> {
        let request = pb::OidcBackchannelLogoutRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            logout_token: logout_token.to_owned(),
        };
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.oidc_backchannel_logout(request).await
            })
            .await?;
        Ok(answer.sessions_ended)
    }

    /// The provider's end-session URL, if the browser should go there after logging out.
    pub async fn oidc_end_session(
        &self,
        virtual_proxy: &str,
    ) -> Result<Option<String>, ControlError> {
        let request = pb::OidcEndSessionRequest {
            virtual_proxy: virtual_proxy.to_owned(),
        };
        let uri = self
            .node_call(request, |mut client, request| async move {
                client.oidc_end_session(request).await
            })
            .await?
            .end_session_uri;
        Ok((!uri.is_empty()).then_some(uri))
    }

    /// Starts a SAML login; `binding` in the request is the browser's binding cookie
    /// (empty when it has none).
    pub async fn saml_begin(
        &self,
        request: pb::SamlBeginRequest,
    ) -> Result<pb::SamlBeginResponse, ControlError> {
        Ok(self
            .node_call(request, |mut client, request| async move {
                client.saml_begin(request).await
            })
            .await?)
    }

    /// Hands a posted SAML Response to the control plane; returns the session and the path
    /// to go to. Made on one endpoint only (see [`call_once`](Self::call_once)): the login
    /// and the assertion are spent by the first attempt.
    pub async fn saml_acs(
        &self,
        request: pb::SamlAcsRequest,
    ) -> Result<(Login, String), ControlError> {
        let answer = self
            .call_once(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.saml_acs(request).await }
            })
            .await?
            .into_inner();
        Ok((login(answer.login.unwrap_or_default())?, answer.target))
    }

    /// Hands a SAML logout message the browser brought to `/saml/slo` to the control plane.
    /// Made on one endpoint only: a LogoutRequest works once.
    pub async fn saml_logout_message(
        &self,
        request: pb::SamlLogoutMessageRequest,
    ) -> Result<pb::SamlLogoutMessageResponse, ControlError> {
        Ok(self
            .call_once(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.saml_logout_message(request).await }
            })
            .await?
            .into_inner())
    }

    /// After a SAML session ended here: the identity provider's logout URL, if any.
    pub async fn saml_logout_begin(
        &self,
        request: pb::SamlLogoutBeginRequest,
    ) -> Result<pb::SamlLogoutBeginResponse, ControlError> {
        self.node_call(request, |mut client, request| async move {
            client.saml_logout_begin(request).await
        })
        .await
        .map_err(Into::into)
    }

    /// The virtual proxy's SP metadata (XML).
    pub async fn saml_metadata(&self, virtual_proxy: &str) -> Result<String, ControlError> {
        let request = pb::SamlMetadataRequest {
            virtual_proxy: virtual_proxy.to_owned(),
        };
        Ok(self
            .node_call(request, |mut client, request| async move {
                client.saml_metadata(request).await
            })
            .await?
            .xml)
    }

    pub async fn anonymous_login(
        &self,
        virtual_proxy: &str,
        client: pb::ClientInfo,
    ) -> Result<Login, ControlError> {
        let request = pb::AnonymousLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            client: Some(client),
        };
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.anonymous_login(request).await
            })
            .await?;
        login(answer)
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
        let answer = self
            .node_call(request, |mut client, request| async move {
                client.touch(request).await
            })
            .await?;
        Ok(answer.ended)
    }

    /// Ends the session of `token` through the Personal API, as its holder; `None` when the
    /// control plane does not know the token.
    pub async fn logout(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<pb::Session>, ControlError> {
        let bearer = bearer(token)?;
        let answer = self
            .call(|replica| {
                let mut client = replica.personal.clone();
                let mut request = tonic::Request::new(pb::LogoutRequest {
                    virtual_proxy: Some(virtual_proxy.to_owned()),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                async move { client.logout(request).await }
            })
            .await;
        match answer {
            Ok(response) => Ok(response.into_inner().session),
            Err(status) if is_not_accepted(&status) => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// The sessions of the user whose session `token` is, in `virtual_proxy`, and which one
    /// that is, through the Personal API; `None` when the control plane does not know the
    /// token.
    pub async fn own_sessions(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<pb::ListMySessionsResponse>, ControlError> {
        let bearer = bearer(token)?;
        let answer = self
            .call(|replica| {
                let mut client = replica.personal.clone();
                let mut request = tonic::Request::new(pb::ListMySessionsRequest {
                    virtual_proxy: Some(virtual_proxy.to_owned()),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                async move { client.list_my_sessions(request).await }
            })
            .await;
        match answer {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if is_not_accepted(&status) => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Ends the session `handle` of the user whose session `token` is, through the Personal
    /// API; `None` when that user has no such session in `virtual_proxy`, which is also the
    /// answer for another user's. [`ControlError::NotAccepted`] when the token is unknown.
    pub async fn end_own_session(
        &self,
        virtual_proxy: &str,
        token: &str,
        handle: &str,
    ) -> Result<Option<pb::Session>, ControlError> {
        let bearer = bearer(token)?;
        let answer = self
            .call(|replica| {
                let mut client = replica.personal.clone();
                let mut request = tonic::Request::new(pb::EndMySessionRequest {
                    virtual_proxy: Some(virtual_proxy.to_owned()),
                    handle: handle.to_owned(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                async move { client.end_my_session(request).await }
            })
            .await;
        match answer {
            Ok(response) => Ok(response.into_inner().session),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(status.into()),
        }
    }
}

/// A session token as the Personal API's credential.
fn bearer(
    token: &str,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, ControlError> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| ControlError::Invalid("token is not printable".to_owned()))
}

/// A `Watch` stream, with word of calls to the same endpoint timing out.
pub(crate) struct WatchStream {
    stream: tonic::Streaming<pb::WatchEvent>,
    timeouts: tokio::sync::watch::Receiver<u64>,
}

impl WatchStream {
    /// The next event, or `Err` when the stream broke or a call to its endpoint timed out.
    /// Those calls share the stream's connection, so a timeout means the replica has most
    /// likely gone without closing it (power loss, partition): HTTP/2 keep-alive alone would
    /// notice only after up to 15 s, and revocations would wait as long.
    pub(crate) async fn message(&mut self) -> Result<Option<pb::WatchEvent>, Status> {
        tokio::select! {
            message = self.stream.message() => message,
            _ = self.timeouts.changed() => Err(Status::unavailable(
                "calls to this control-plane endpoint time out",
            )),
        }
    }
}

fn login(response: pb::LoginResponse) -> Result<Login, ControlError> {
    match response.session {
        Some(session) => Ok(Login {
            token: response.session_token,
            session,
            seal: response.seal,
        }),
        None => Err(ControlError::Unavailable(
            "login answer without a session".to_owned(),
        )),
    }
}
