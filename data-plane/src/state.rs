//! What one node holds, shared by every connection: the routing table from the latest
//! snapshot, the session cache, open WebSockets, and the control-plane client. The cache and
//! the breaker that decides when stale entries are served read one clock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use gatehouse_runtime::clock::{Clock, SystemClock};
use tokio::sync::OnceCell;

use crate::cache::{CachedSession, Lookup, SessionCache, TokenKey};
use crate::config::Config;
use crate::control::{ControlClient, ControlError};
use crate::flood::negative::UnknownKey;
use crate::flood::{Flood, Limited};
use crate::refusal::Refusal;
use crate::router::ProxyTable;
use crate::sockets::WebSocketRegistry;
use crate::virtual_proxy::VirtualProxy;

/// After a validation finds the control plane unreachable, how long requests are answered
/// from the cache (or 503) without trying again.
const BREAKER_OPEN: std::time::Duration = std::time::Duration::from_secs(1);

struct ForgetInFlight<'a> {
    validations: &'a Mutex<HashMap<TokenKey, InFlight>>,
    key: TokenKey,
    cell: InFlight,
}

impl Drop for ForgetInFlight<'_> {
    fn drop(&mut self) {
        let mut validations = self
            .validations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if validations
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.cell))
        {
            validations.remove(&self.key);
        }
    }
}

/// The outcome of checking a session token.
#[derive(Debug, Clone)]
pub enum Validation {
    Valid(Arc<CachedSession>),
    /// Unknown, expired, or of another virtual proxy: fail closed.
    Invalid,
    /// Could not be checked and is not known from before: 503.
    Unavailable,
    /// Not known, and the client (or everyone, at this virtual proxy) has had too many
    /// unknown tokens checked lately: 429.
    Limited(Limited),
}

/// Who asks about a token: its client's address is worked out (past the trusted proxies)
/// only when the answer is not in the session cache.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub headers: &'a http::HeaderMap,
    pub peer: SocketAddr,
}

impl Asker<'_> {
    fn address(&self, trusted_proxies: &[ipnet::IpNet]) -> IpAddr {
        crate::auth::client::address(trusted_proxies, self.headers, self.peer.ip())
    }
}

/// A session the control plane vouched for, with the new seal it gave, if any.
#[derive(Debug, Clone)]
struct Vouched {
    session: Arc<CachedSession>,
    seal: Option<Arc<str>>,
}

type InFlight = Arc<OnceCell<Result<Option<Vouched>, ControlError>>>;

#[derive(Debug)]
pub struct NodeState {
    pub table: ArcSwap<ProxyTable>,
    ready: AtomicBool,
    draining: AtomicBool,
    pub cache: SessionCache,
    pub sockets: Arc<WebSocketRegistry>,
    pub control: ControlClient,
    pub limits: crate::config::LimitsConfig,
    /// Networks of proxies in front whose `X-Forwarded-For` and `Forwarded` are kept.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub metrics: crate::metrics::Metrics,
    /// The negative cache and the limits on unknown tokens and login starts.
    pub flood: Flood,
    /// TLS client configuration for upstream pools that speak TLS.
    pub upstream_tls: Arc<rustls::ClientConfig>,
    /// One validation per token at a time: concurrent misses wait for the same answer.
    validations: Mutex<HashMap<TokenKey, InFlight>>,
    /// What the cache's ages and the breaker's deadline are read from.
    pub clock: Arc<dyn Clock>,
    started: std::time::Instant,
    /// Milliseconds after `started` until which the control plane is taken to be down (0: up).
    control_down_until_ms: AtomicU64,
}

impl NodeState {
    pub fn new(
        config: &Config,
        control: ControlClient,
        upstream_tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self {
            table: ArcSwap::from_pointee(ProxyTable::default()),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            cache: SessionCache::new(
                config.cache.max_sessions,
                config.cache.ttl,
                config.cache.grace,
                clock.clone(),
            ),
            sockets: Arc::new(WebSocketRegistry::default()),
            control,
            limits: config.limits,
            trusted_proxies: config.trusted_proxies.clone(),
            metrics: crate::metrics::Metrics::new(),
            flood: Flood::new(&config.flood),
            upstream_tls,
            validations: Mutex::new(HashMap::new()),
            started: clock.instant(),
            clock,
            control_down_until_ms: AtomicU64::new(0),
        }
    }

    /// Ready once a configuration snapshot has arrived; it stays ready through outages, and
    /// stops being ready when the node starts shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// The node is shutting down: load balancers should stop sending it traffic.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ends a session on this node: forget it and close its WebSockets.
    pub fn end_session(&self, handle: &str) -> usize {
        self.cache.revoke(handle);
        self.sockets.close_session(handle)
    }

    /// Checks a session token: the cache when fresh, else one call to the control plane
    /// (shared by concurrent requests), else a stale entry while the control plane is down.
    pub async fn validate(
        &self,
        proxy: &VirtualProxy,
        token: &str,
        asker: Asker<'_>,
    ) -> Validation {
        self.check(proxy, token, asker, None::<fn() -> Option<&'static str>>)
            .await
            .0
    }

    /// As [`validate`](Self::validate), passing the browser's seal along on a cache miss
    /// (`seal` is only called then: a cache hit reads no second cookie); also returns the
    /// new seal the control plane gave, for the seal cookie. (`check`'s own future, not one
    /// around it: every request with a cookie would copy that once more on its way in.)
    pub fn validate_sealed<'s>(
        &self,
        proxy: &VirtualProxy,
        token: &str,
        asker: Asker<'_>,
        seal: impl FnOnce() -> Option<&'s str>,
    ) -> impl Future<Output = (Validation, Option<Arc<str>>)> {
        self.check(proxy, token, asker, Some(seal))
    }

    /// `seal`: `None` on a path that does not handle seals (the control plane then makes
    /// none); else what reads the browser's seal cookie. Past the session cache, the
    /// negative cache and the limits on unknown tokens (`flood`) come first.
    async fn check<'s>(
        &self,
        proxy: &VirtualProxy,
        token: &str,
        asker: Asker<'_>,
        seal: Option<impl FnOnce() -> Option<&'s str>>,
    ) -> (Validation, Option<Arc<str>>) {
        let key = TokenKey::of(token);
        let stale = match self.cache.get(&key) {
            Lookup::Fresh(session) => {
                self.metrics.cache_lookup(crate::metrics::CacheResult::Hit);
                return (for_proxy(session, proxy), None);
            }
            Lookup::Stale(session) => {
                self.metrics
                    .cache_lookup(crate::metrics::CacheResult::Stale);
                Some(session)
            }
            Lookup::Missing => {
                self.metrics.cache_lookup(crate::metrics::CacheResult::Miss);
                None
            }
        };
        // The rest in a box of its own: its future holds a gRPC call's, kilobytes that the
        // future of every request (moved whole at each step on the way in) would carry
        // otherwise, though a cached session never gets this far. Copying them was 3 % of a
        // forward-auth check.
        Box::pin(self.ask_control_plane(proxy, token, Missed { key, stale }, asker, seal)).await
    }

    /// [`check`](Self::check) past a cache that had no fresh entry for the token.
    async fn ask_control_plane<'s>(
        &self,
        proxy: &VirtualProxy,
        token: &str,
        missed: Missed,
        asker: Asker<'_>,
        seal: Option<impl FnOnce() -> Option<&'s str>>,
    ) -> (Validation, Option<Arc<str>>) {
        let Missed { key, stale } = missed;
        let unknown = UnknownKey::of(&proxy.prefix, token);
        let now = self.clock.instant();
        if stale.is_none() && self.flood.negative.contains(&unknown, now) {
            self.metrics.negative_cache_hit();
            return (Validation::Invalid, None);
        }
        // While the control plane is known to be down, do not make every request wait for a
        // call that will time out.
        if self.control_plane_down() {
            let validation = match stale {
                Some(session) => for_proxy(session, proxy),
                None => Validation::Unavailable,
            };
            return (validation, None);
        }
        // A token the node validated before is a session it knew, not a flood: only tokens
        // it has never seen are limited and, if unknown, counted.
        let address = match stale {
            Some(_) => None,
            None => {
                let address = asker.address(&self.trusted_proxies);
                if let Err(limited) = self.flood.may_look_up(&proxy.prefix, address, now) {
                    self.metrics
                        .limited(limited.kind.label(), limited.scope.label());
                    return (Validation::Limited(limited), None);
                }
                Some(address)
            }
        };
        let seal = seal.map(|read| read().unwrap_or_default());
        let cell = {
            let mut validations = self
                .validations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            validations.entry(key).or_default().clone()
        };
        // Removes the shared call when this request is done with it, even if it is dropped
        // half-way (client gone): otherwise a cancelled call would be remembered forever.
        let _forget = ForgetInFlight {
            validations: &self.validations,
            key,
            cell: cell.clone(),
        };
        let answer = cell
            .get_or_init(|| async {
                let started = std::time::Instant::now();
                let answer = self.control.validate(&proxy.prefix, token, seal).await;
                let outcome = match &answer {
                    Ok(Some(checked)) if checked.outage_until.is_some() => "valid-from-seal",
                    Ok(Some(_)) => "valid",
                    Ok(None) => "invalid",
                    Err(_) => "unavailable",
                };
                self.metrics
                    .validation(outcome, started.elapsed().as_secs_f64());
                match answer {
                    Ok(Some(checked)) => {
                        let session = Arc::new(CachedSession::from_proto(&checked.session));
                        // A revocation that overtook this answer wins.
                        let cached = match checked.outage_until {
                            None => self.cache.insert(key, session.clone()),
                            Some(until) => {
                                self.cache
                                    .insert_served_from_seal(key, session.clone(), until)
                            }
                        };
                        let seal = (!checked.seal.is_empty()).then(|| Arc::from(checked.seal));
                        Ok(cached.then_some(Vouched { session, seal }))
                    }
                    Ok(None) => {
                        self.cache.remove(&key);
                        let now = self.clock.instant();
                        self.flood.negative.insert(unknown, now);
                        if let Some(address) = address {
                            self.flood.unknown_token(&proxy.prefix, address, now);
                        }
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            })
            .await
            .clone();
        let validation = match answer {
            Ok(Some(vouched)) => {
                self.control_plane_up();
                return (for_proxy(vouched.session, proxy), vouched.seal);
            }
            Ok(None) => {
                self.control_plane_up();
                Validation::Invalid
            }
            Err(ControlError::Unavailable(detail)) => {
                self.control_plane_failed();
                match stale {
                    Some(session) => {
                        tracing::debug!(%detail, "control plane unavailable; serving a recently validated session");
                        for_proxy(session, proxy)
                    }
                    None => {
                        tracing::warn!(%detail, "control plane unavailable; cannot validate a session");
                        Validation::Unavailable
                    }
                }
            }
            // The control plane answers but its store does not, and the session had no seal
            // it would vouch for: no breaker, the next session's seal may do.
            Err(ControlError::StoreUnavailable(detail)) => match stale {
                Some(session) => for_proxy(session, proxy),
                None => {
                    tracing::debug!(%detail, "session store unavailable; cannot validate a session");
                    Validation::Unavailable
                }
            },
            // Not a verdict on the session (that is `Ok(None)`) but a fault of the control
            // plane or of this node's standing with it: like an outage, it logs nobody out.
            Err(error) => {
                tracing::warn!(%error, "control plane refused a validation");
                match stale {
                    Some(session) => for_proxy(session, proxy),
                    None => Validation::Unavailable,
                }
            }
        };
        (validation, None)
    }

    /// Milliseconds since the node started, by its clock.
    fn elapsed_ms(&self) -> u64 {
        let elapsed = self.clock.instant().saturating_duration_since(self.started);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    fn control_plane_down(&self) -> bool {
        let until = self.control_down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.elapsed_ms() < until
    }

    fn control_plane_failed(&self) {
        let until = self.elapsed_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(u64::MAX);
        self.control_down_until_ms.store(until, Ordering::Relaxed);
    }

    fn control_plane_up(&self) {
        self.control_down_until_ms.store(0, Ordering::Relaxed);
    }

    /// Caches a session the node has just created (login), so the next request is a hit.
    pub fn remember(
        &self,
        token: &str,
        session: &gatehouse_proto::v1::Session,
    ) -> Arc<CachedSession> {
        let session = Arc::new(CachedSession::from_proto(session));
        // A token a client sent before it was a session (one it chose for a JWT, or a
        // trusted client chose for `CreateSession`) is not unknown any more.
        self.flood
            .negative
            .forget(&UnknownKey::of(&session.virtual_proxy, token));
        self.cache.insert(TokenKey::of(token), session.clone());
        session
    }

    /// A login is about to be started (a login target stored, an OpenID login begun) for
    /// `asker`: counted against the flood limits, or refused with 429. Its caller passes
    /// what became of it to [`login_answered`](Self::login_answered).
    pub fn start_login(&self, proxy: &VirtualProxy, asker: Asker<'_>) -> Result<(), Refusal> {
        let address = asker.address(&self.trusted_proxies);
        self.flood
            .start_login(&proxy.prefix, address, self.clock.instant())
            .map_err(|limited| {
                self.metrics
                    .limited(limited.kind.label(), limited.scope.label());
                limited.refusal()
            })
    }

    /// What a login [`start_login`](Self::start_login) counted was answered. A 503 stored
    /// nothing (the control plane could not answer), so it does not count: polling through
    /// an outage must not use up the bucket.
    pub fn login_answered(&self, proxy: &VirtualProxy, asker: Asker<'_>, answer: &Refusal) {
        if let Refusal::Unavailable(_) = answer {
            let address = asker.address(&self.trusted_proxies);
            self.flood
                .login_not_started(&proxy.prefix, address, self.clock.instant());
        }
    }
}

/// A token the cache had no fresh entry for: its key, and the stale entry if there is one.
struct Missed {
    key: TokenKey,
    stale: Option<Arc<CachedSession>>,
}

fn for_proxy(session: Arc<CachedSession>, proxy: &VirtualProxy) -> Validation {
    if session.virtual_proxy == proxy.prefix {
        Validation::Valid(session)
    } else {
        Validation::Invalid
    }
}
