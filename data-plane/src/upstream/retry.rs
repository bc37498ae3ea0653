//! The attempt policy, written once for both clients: a request that could not reach a node
//! (nothing was sent) goes to another untried node, up to `MAX_ATTEMPTS` and no more than the
//! pool has, if the client still holds it whole; each connect failure counts towards the
//! node's ejection. Anything else that failed, or no answer within the response timeout, is
//! the caller's 502 or 504 at once: the request may have been acted on. What differs between
//! the clients is only how one attempt is sent ([`Attempt`], in `clients.rs`).

use std::net::{IpAddr, SocketAddr};

use std::sync::Arc;

use super::member::{InFlight, Member};

use super::settings::{UpstreamError, UpstreamSettings};

/// Most nodes one request is tried on when nodes cannot be reached.
const MAX_ATTEMPTS: usize = 3;
const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Why one attempt got no response head.
#[derive(Debug)]
pub enum AttemptError {
    /// No connection could be made to the node: nothing was sent.
    Connect,
    /// The request was (or may have been) sent, and the exchange failed.
    Failed(String),
}

/// One client's way of sending a request to one node. It holds the request between
/// attempts, and knows whether it can still send it after a connect failure.
// Only the node's own clients implement it, each called with its concrete type, so the
// futures' `Send` is known where it matters.
#[allow(async_fn_in_trait)]
pub trait Attempt {
    /// What a successful attempt gives: a response head, and what its body is read from.
    type Answer;

    /// Whether the request can go to another node (asked only after a connect failure).
    fn can_retry(&self) -> bool;

    /// Sends the request to `member` and waits for the response head.
    async fn send(&mut self, member: &Member) -> Result<Self::Answer, AttemptError>;
}

/// The nodes an attempt can go to: the pool, as the policy sees it.
pub(super) trait Nodes {
    fn settings(&self) -> &UpstreamSettings;
    /// How many nodes there are now.
    fn count(&self) -> usize;
    /// A node not in `tried`, if there is one.
    fn pick(&self, affinity: Option<&str>, tried: &[SocketAddr]) -> Option<Arc<Member>>;
}

/// An attempt's answer, the node that gave it, and that node's count of the request, held
/// until the response's body has been read.
#[derive(Debug)]
pub struct Answered<T> {
    pub answer: T,
    pub address: SocketAddr,
    pub in_flight: InFlight,
}

/// Sends `attempt`'s request to a node of `pool`, and to others while the policy allows.
pub(super) async fn send<A: Attempt>(
    pool: &impl Nodes,
    affinity: Option<&str>,
    attempt: &mut A,
) -> Result<Answered<A::Answer>, UpstreamError> {
    let settings = pool.settings();
    let mut tried = [UNSPECIFIED; MAX_ATTEMPTS];
    for index in 0..MAX_ATTEMPTS {
        let member = pool
            .pick(affinity, &tried[..index])
            .ok_or(UpstreamError::NoNodes)?;
        tried[index] = member.address;
        let in_flight = InFlight::new(member.clone());
        match tokio::time::timeout(settings.response_timeout, attempt.send(&member)).await {
            Ok(Ok(answer)) => {
                member.record_success();
                return Ok(Answered {
                    answer,
                    address: member.address,
                    in_flight,
                });
            }
            Ok(Err(AttemptError::Connect)) => {
                member.record_connect_failure(settings);
                let more = index + 1 < MAX_ATTEMPTS.min(pool.count());
                if !(more && attempt.can_retry()) {
                    return Err(UpstreamError::Connect(member.address));
                }
                tracing::debug!(upstream = %member.address, "connect failed; trying another node");
            }
            Ok(Err(AttemptError::Failed(detail))) => {
                return Err(UpstreamError::Failed {
                    address: member.address,
                    detail,
                });
            }
            Err(_) => return Err(UpstreamError::Timeout(member.address)),
        }
    }
    Err(UpstreamError::NoNodes)
}
