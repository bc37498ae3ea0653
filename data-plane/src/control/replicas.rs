//! The control plane's replicas as a node calls them: one connection each, round-robin over
//! those that have not just failed, and failover to the next when one gives no answer. The
//! credential (a shared secret, or the node's certificate) and the trace context go on
//! every call.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use pb::node_service_client::NodeServiceClient;
use pb::personal_service_client::PersonalServiceClient;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::errors::{is_store_unavailable, timed_out, unanswered};
use crate::config::{ControlPlaneConfig, NodeCredential};

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
        gatehouse_runtime::logging::inject_current(&mut headers);
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

pub(super) type NodeClient = NodeServiceClient<InterceptedService<Channel, Credential>>;

/// How long an endpoint that failed a call is passed over, while another one may answer.
const ENDPOINT_COOLDOWN: Duration = Duration::from_secs(3);

/// One control-plane endpoint, with a connection of its own.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) node: NodeClient,
    pub(super) personal: PersonalServiceClient<Channel>,
    /// Milliseconds after `Replicas::epoch` until which this endpoint is passed over (0: it
    /// has not failed).
    down_until_ms: AtomicU64,
    /// Counts calls to this endpoint that timed out; a `Watch` stream on it listens.
    pub(super) timeouts: tokio::sync::watch::Sender<u64>,
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
pub(super) struct Replicas {
    all: Vec<Replica>,
    next: AtomicUsize,
    epoch: Instant,
    /// Signalled when an endpoint that had failed answers again.
    pub(super) reachable_again: tokio::sync::Notify,
}

impl Replicas {
    /// Connects lazily to every configured endpoint.
    pub(super) fn connect(config: &ControlPlaneConfig) -> Result<Self, String> {
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
            all,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            reachable_again: tokio::sync::Notify::new(),
        })
    }

    /// Makes `call` on up to `endpoints` endpoints, one after another, until one answers.
    pub(super) async fn call_on<T, F, Fut>(&self, endpoints: usize, call: F) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_among(endpoints, call, |_| false).await
    }

    /// As [`call_on`](Self::call_on) over every endpoint, except that an answer `second_hand`
    /// says is not the store's (a session vouched for from its seal while that replica's
    /// store is down) does not end the round: the other endpoints are asked too, and an
    /// answer from one whose store answered (a session, or "no such session") wins. A replica
    /// cut off from its store alone must not speak for a session the others know ended.
    pub(super) async fn call_settled<T, F, Fut>(
        &self,
        call: F,
        second_hand: impl Fn(&T) -> bool,
    ) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_among(usize::MAX, call, second_hand).await
    }

    async fn call_among<T, F, Fut>(
        &self,
        endpoints: usize,
        mut call: F,
        second_hand: impl Fn(&T) -> bool,
    ) -> Result<T, Status>
    where
        F: FnMut(&Replica) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut failure = None;
        let mut vouched = None;
        for index in self.order().into_iter().take(endpoints) {
            match call(&self.all[index]).await {
                Ok(answer) if second_hand(&answer) => {
                    self.answered(index);
                    vouched.get_or_insert(answer);
                }
                // Alive, its store is not: ask the next one, but do not pass this one over.
                // What the caller hears is that the store is down, not that no replica
                // answered.
                Err(status) if is_store_unavailable(&status) => {
                    self.answered(index);
                    failure = Some(status);
                }
                Err(status) if unanswered(status.code()) => {
                    self.failed(index);
                    if timed_out(status.code()) {
                        self.all[index].timeouts.send_modify(|count| *count += 1);
                    }
                    if !failure.as_ref().is_some_and(is_store_unavailable) {
                        failure = Some(status);
                    }
                }
                answer => {
                    self.answered(index);
                    return answer;
                }
            }
        }
        match vouched {
            Some(answer) => Ok(answer),
            None => {
                Err(failure.unwrap_or_else(|| Status::unavailable("no control-plane endpoint")))
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The order in which to try the endpoints for one call: round-robin over those not
    /// passed over, then the others (they may have come back, and trying them is better
    /// than giving up).
    pub(super) fn order(&self) -> Vec<usize> {
        let count = self.all.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let (up, down): (Vec<usize>, Vec<usize>) = (0..count)
            .map(|offset| (start + offset) % count)
            .partition(|&index| self.all[index].down_until_ms.load(Ordering::Relaxed) <= now);
        up.into_iter().chain(down).collect()
    }

    pub(super) fn failed(&self, index: usize) {
        let until =
            self.now_ms() + u64::try_from(ENDPOINT_COOLDOWN.as_millis()).unwrap_or(u64::MAX);
        self.all[index]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    pub(super) fn answered(&self, index: usize) {
        if self.all[index].down_until_ms.swap(0, Ordering::Relaxed) != 0 {
            // At most one permit is kept when nobody waits: the Watch follower may then skip
            // one backoff it did not need to skip, which costs one early reconnect.
            self.reachable_again.notify_one();
        }
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
