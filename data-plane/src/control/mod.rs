//! The node's client of the control plane: the calls a login or a cache miss needs, the
//! `Watch` stream that keeps the node's configuration and cache current, and the activity
//! reports that keep sessions alive.

pub mod activity;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

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

/// Whether a call that ended with `code` got no answer to act on: not reachable, timed out,
/// or the replica cannot reach its store.
fn unanswered(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

impl From<Status> for ControlError {
    fn from(status: Status) -> Self {
        if unanswered(status.code()) {
            Self::Unavailable(status.message().to_owned())
        } else {
            Self::Refused(status)
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

/// How long an endpoint that failed a call is passed over, while another one may answer.
const ENDPOINT_COOLDOWN: Duration = Duration::from_secs(3);

/// One control-plane endpoint, with a connection of its own.
#[derive(Debug)]
struct Replica {
    node: NodeClient,
    personal: PersonalServiceClient<Channel>,
    /// Milliseconds after `Replicas::epoch` until which this endpoint is passed over (0: it
    /// has not failed).
    down_until_ms: AtomicU64,
    /// Counts calls to this endpoint that timed out; a `Watch` stream on it listens.
    timeouts: tokio::sync::watch::Sender<u64>,
}

/// The configured endpoints. Not `Channel::balance_list`: its balancer keeps picking an
/// endpoint whose process is gone (tonic's lazy reconnecting endpoint reports itself ready
/// and then fails the call), so with one of two replicas dead, calls kept failing on it:
/// valid sessions the node had not cached, and new logins, got 503s for as long as the
/// replica stayed dead (measured: 18 of 100 such checks and 16 of 100 logins; and each
/// failure opens the node's one-second breaker, during which every uncached check is a
/// 503; `reliability_control_plane` shows it). Here calls go round-robin over
/// the endpoints that have not just failed, and a call that gets no answer from one endpoint
/// is made again on the next.
#[derive(Debug)]
struct Replicas {
    all: Vec<Replica>,
    next: AtomicUsize,
    epoch: Instant,
    /// Signalled when an endpoint that had failed answers again.
    reachable_again: tokio::sync::Notify,
}

impl Replicas {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The order in which to try the endpoints for one call: round-robin over those not
    /// passed over, then the others (they may have come back, and trying them is better
    /// than giving up).
    fn order(&self) -> Vec<usize> {
        let count = self.all.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let (up, down): (Vec<usize>, Vec<usize>) = (0..count)
            .map(|offset| (start + offset) % count)
            .partition(|&index| self.all[index].down_until_ms.load(Ordering::Relaxed) <= now);
        up.into_iter().chain(down).collect()
    }

    fn failed(&self, index: usize) {
        let until =
            self.now_ms() + u64::try_from(ENDPOINT_COOLDOWN.as_millis()).unwrap_or(u64::MAX);
        self.all[index]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    fn answered(&self, index: usize) {
        if self.all[index].down_until_ms.swap(0, Ordering::Relaxed) != 0 {
            // At most one permit is kept when nobody waits: the Watch follower may then skip
            // one backoff it did not need to skip, which costs one early reconnect.
            self.reachable_again.notify_one();
        }
    }
}

#[derive(Debug, Clone)]
pub struct ControlClient {
    replicas: Arc<Replicas>,
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
        let all = endpoints
            .into_iter()
            .map(|endpoint| {
                let channel = endpoint.connect_lazy();
                Replica {
                    node: NodeServiceClient::with_interceptor(channel.clone(), credential.clone()),
                    personal: PersonalServiceClient::new(channel),
                    down_until_ms: AtomicU64::new(0),
                    timeouts: tokio::sync::watch::Sender::new(0),
                }
            })
            .collect::<Vec<_>>();
        if all.is_empty() {
            return Err("no control-plane endpoint configured".to_owned());
        }
        Ok(Self {
            replicas: Arc::new(Replicas {
                all,
                next: AtomicUsize::new(0),
                epoch: Instant::now(),
                reachable_again: tokio::sync::Notify::new(),
            }),
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
        self.call_on(usize::MAX, call).await
    }

    /// As [`call`](Self::call), on one endpoint only: for a call that must not be made
    /// twice. An OpenID callback consumes its login's state, so a retry on another replica
    /// after a timeout could only be refused, and might leave an unused session behind.
    async fn call_once<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_on(1, call).await
    }

    async fn call_on<T, F, Fut>(&self, endpoints: usize, mut call: F) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut failure = None;
        for index in self.replicas.order().into_iter().take(endpoints) {
            match call(&self.replicas.all[index]).await {
                Err(status) if unanswered(status.code()) => {
                    self.replicas.failed(index);
                    if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) {
                        self.replicas.all[index]
                            .timeouts
                            .send_modify(|count| *count += 1);
                    }
                    failure = Some(status);
                }
                answer => {
                    self.replicas.answered(index);
                    return answer;
                }
            }
        }
        Err(failure.unwrap_or_else(|| Status::unavailable("no control-plane endpoint")))
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
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.validate_session(request).await }
            })
            .await;
        match answer {
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
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.redeem_ticket(request).await }
            })
            .await;
        match answer {
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
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.create_target(request).await }
            })
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
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.header_login(request).await }
            })
            .await?;
        login(answer.into_inner())
    }

    /// Hands a client's SPNEGO token to the control plane, which holds the keytab. Returns
    /// the login and the acceptor's reply token (empty when there is none).
    pub async fn kerberos_login(
        &self,
        virtual_proxy: &str,
        token: Vec<u8>,
    ) -> Result<(Login, Vec<u8>), ControlError> {
        let request = pb::KerberosLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            token,
        };
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.kerberos_login(request).await }
            })
            .await?
            .into_inner();
        let output_token = answer.output_token;
        let login = login(answer.login.unwrap_or_default())?;
        Ok((login, output_token))
    }

    pub async fn jwt_login(&self, virtual_proxy: &str, token: &str) -> Result<Login, ControlError> {
        let request = pb::JwtLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
            token: token.to_owned(),
        };
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.jwt_login(request).await }
            })
            .await?;
        login(answer.into_inner())
    }

    /// Starts an OpenID Connect login; `redirect_uri` is this node's callback URL and
    /// `binding` the browser's binding cookie (empty when it has none).
    pub async fn oidc_begin(
        &self,
        request: pb::OidcBeginRequest,
    ) -> Result<pb::OidcBeginResponse, ControlError> {
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.oidc_begin(request).await }
            })
            .await?;
        Ok(answer.into_inner())
    }

    /// Finishes an OpenID Connect login; returns the session and the path to go to.
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
        let target = answer.target;
        Ok((login(answer.login.unwrap_or_default())?, target))
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
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.oidc_backchannel_logout(request).await }
            })
            .await?;
        Ok(answer.into_inner().sessions_ended)
    }

    /// The provider's end-session URL, if the browser should go there after logging out.
    pub async fn oidc_end_session(
        &self,
        virtual_proxy: &str,
    ) -> Result<Option<String>, ControlError> {
        let request = pb::OidcEndSessionRequest {
            virtual_proxy: virtual_proxy.to_owned(),
        };
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.oidc_end_session(request).await }
            })
            .await?;
        let uri = answer.into_inner().end_session_uri;
        Ok((!uri.is_empty()).then_some(uri))
    }

    pub async fn anonymous_login(&self, virtual_proxy: &str) -> Result<Login, ControlError> {
        let request = pb::AnonymousLoginRequest {
            virtual_proxy: virtual_proxy.to_owned(),
        };
        let answer = self
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.anonymous_login(request).await }
            })
            .await?;
        login(answer.into_inner())
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
            .call(|replica| {
                let mut client = replica.node.clone();
                let request = request.clone();
                async move { client.touch(request).await }
            })
            .await?;
        Ok(answer.into_inner().ended)
    }

    /// Ends the session of `token` through the Personal API, as its holder.
    pub async fn logout(
        &self,
        virtual_proxy: &str,
        token: &str,
    ) -> Result<Option<pb::Session>, ControlError> {
        let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {token}").parse().map_err(|_| {
                ControlError::Refused(Status::invalid_argument("token is not printable"))
            })?;
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
            Err(status) if status.code() == Code::Unauthenticated => Ok(None),
            Err(status) => Err(status.into()),
        }
    }
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
        }),
        None => Err(ControlError::Unavailable(
            "login answer without a session".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints that are never called: only the order of trying them is looked at.
    fn replicas(count: usize) -> Replicas {
        let all = (0..count)
            .map(|port| {
                let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", port + 1))
                    .unwrap()
                    .connect_lazy();
                Replica {
                    node: NodeServiceClient::with_interceptor(channel.clone(), Credential(None)),
                    personal: PersonalServiceClient::new(channel),
                    down_until_ms: AtomicU64::new(0),
                    timeouts: tokio::sync::watch::Sender::new(0),
                }
            })
            .collect();
        Replicas {
            all,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            reachable_again: tokio::sync::Notify::new(),
        }
    }

    #[tokio::test]
    async fn calls_go_round_robin_and_try_an_endpoint_that_just_failed_last() {
        let replicas = replicas(3);
        assert_eq!(replicas.order(), [0, 1, 2]);
        assert_eq!(replicas.order(), [1, 2, 0]);
        replicas.failed(2);
        // Still tried, after the others: it may be back, and it may be the only one left.
        assert_eq!(replicas.order(), [0, 1, 2]);
        assert_eq!(replicas.order(), [0, 1, 2]);
        replicas.answered(2);
        assert_eq!(replicas.order(), [1, 2, 0]);
    }
}
