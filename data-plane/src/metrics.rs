//! The node's Prometheus metrics, served on the admin port at `/metrics` (OpenMetrics text).

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily<L = Labels> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of the per-request metrics: typed, so that recording one allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProxyLabels {
    virtual_proxy: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    virtual_proxy: Arc<str>,
    status: u16,
}

/// Labels of the forward-auth checks: which front end answered, with what status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    front_end: &'static str,
    status: u16,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// What a session cache lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Stale,
    Miss,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    forward_auth_checks: Family<CheckLabels, Counter>,
    /// The series of `forward_auth_checks` nearly every check counts in (allowed over HTTP),
    /// kept once it exists: the family's lock and label hashing are most of a count.
    allowed_http_checks: OnceLock<Counter>,
    public_requests: Family<ProxyLabels, Counter>,
    fast_http1_requests: Counter,
    fast_http1_handovers: Counter,
    request_seconds: HistogramFamily<ProxyLabels>,
    cache_hits: Counter,
    cache_stale: Counter,
    cache_misses: Counter,
    negative_cache_hits: Counter,
    limited_requests: Family<Labels, Counter>,
    validations: Family<Labels, Counter>,
    validation_seconds: Histogram,
    logins: Family<Labels, Counter>,
    revocations: Counter,
    revocation_delay_seconds: Histogram,
    cached_sessions: Gauge<i64, std::sync::atomic::AtomicI64>,
    open_websockets: Gauge<i64, std::sync::atomic::AtomicI64>,
    websockets_refused: Family<Labels, Counter>,
    upstream_failures: Family<Labels, Counter>,
    upstream_nodes: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    upstream_seconds: HistogramFamily<ProxyLabels>,
    active_sessions: Gauge<i64, std::sync::atomic::AtomicI64>,
    runtime_tasks: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by virtual proxy and status",
            requests.clone(),
        );
        let forward_auth_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "forward_auth_checks",
            "Forward-auth checks answered, by front end (http, ext_authz) and the status the \
             ingress is told (200 allowed)",
            forward_auth_checks.clone(),
        );
        let public_requests = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "public_requests",
            "Requests admitted on a public path, without identification (proxied requests and \
             forward-auth checks), by virtual proxy",
            public_requests.clone(),
        );
        let fast_http1_requests = Counter::default();
        registry.register(
            "fast_http1_requests",
            "Requests the proxy listener served with the node's own HTTP/1.1 engine \
             (fast_http1) rather than hyper",
            fast_http1_requests.clone(),
        );
        let fast_http1_handovers = Counter::default();
        registry.register(
            "fast_http1_handovers",
            "Proxy connections the node's own HTTP/1.1 engine handed to hyper, at a request \
             it does not serve (HTTP/2, an upgrade, a chunked body, an endpoint of the node)",
            fast_http1_handovers.clone(),
        );
        let request_seconds =
            HistogramFamily::<ProxyLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "request_seconds",
            "Request latency by virtual proxy",
            request_seconds.clone(),
        );
        let cache_lookups = Family::<Labels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Session cache lookups by result (hit, stale, miss)",
            cache_lookups.clone(),
        );
        // Three fixed results: one handle each, looked up once.
        let cache_result = |result: &str| {
            cache_lookups
                .get_or_create(&vec![("result", result.to_owned())])
                .clone()
        };
        let (cache_hits, cache_stale, cache_misses) = (
            cache_result("hit"),
            cache_result("stale"),
            cache_result("miss"),
        );
        let negative_cache_hits = Counter::default();
        registry.register(
            "negative_cache_hits",
            "Tokens answered unknown from the negative cache, without asking the control plane",
            negative_cache_hits.clone(),
        );
        let limited_requests = Family::<Labels, Counter>::default();
        registry.register(
            "limited_requests",
            "Requests answered 429 by a flood limit, by kind (login_start, unknown_token) and \
             scope (address, virtual_proxy)",
            limited_requests.clone(),
        );
        let validations = Family::<Labels, Counter>::default();
        registry.register(
            "validations",
            "Calls to ValidateSession by outcome (valid, invalid, unavailable)",
            validations.clone(),
        );
        let validation_seconds = latency_histogram();
        registry.register(
            "validation_seconds",
            "Latency of ValidateSession on a cache miss",
            validation_seconds.clone(),
        );
        let logins = Family::<Labels, Counter>::default();
        registry.register(
            "logins",
            "Logins by method (ticket, header, anonymous) and outcome",
            logins.clone(),
        );
        let revocations = Counter::default();
        registry.register(
            "revocations_applied",
            "Revocations applied from the Watch stream",
            revocations.clone(),
        );
        let revocation_delay_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "revocation_delay_seconds",
            "Time from a revocation being recorded to this node applying it",
            revocation_delay_seconds.clone(),
        );
        let cached_sessions = Gauge::default();
        registry.register(
            "cached_sessions",
            "Sessions in the node's cache",
            cached_sessions.clone(),
        );
        let open_websockets = Gauge::default();
        registry.register(
            "open_websockets",
            "WebSockets open through this node",
            open_websockets.clone(),
        );
        let websockets_refused = Family::<Labels, Counter>::default();
        registry.register(
            "websockets_refused",
            "WebSocket upgrades refused by limit (session: limits.max_websockets_per_session, \
             node: limits.max_websockets)",
            websockets_refused.clone(),
        );
        let upstream_failures = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_failures",
            "Upstream requests that failed, by virtual proxy and kind (connect, timeout, other)",
            upstream_failures.clone(),
        );
        let upstream_nodes = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "upstream_nodes",
            "Upstream nodes by virtual proxy and state (healthy, ejected)",
            upstream_nodes.clone(),
        );
        let upstream_seconds =
            HistogramFamily::<ProxyLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_seconds",
            "Time from sending a request upstream to its response head, by virtual proxy",
            upstream_seconds.clone(),
        );
        let active_sessions = Gauge::default();
        registry.register(
            "active_sessions",
            "Sessions used through this node during the last activity-report interval",
            active_sessions.clone(),
        );
        let runtime_tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tasks alive in the node's runtime: connections, WebSockets and background work; \
             one that only grows is a leak",
            runtime_tasks.clone(),
        );
        Self {
            runtime_tasks,
            upstream_seconds,
            active_sessions,
            upstream_nodes,
            registry,
            requests,
            forward_auth_checks,
            allowed_http_checks: OnceLock::new(),
            public_requests,
            fast_http1_requests,
            fast_http1_handovers,
            request_seconds,
            cache_hits,
            cache_stale,
            cache_misses,
            negative_cache_hits,
            limited_requests,
            validations,
            validation_seconds,
            logins,
            revocations,
            revocation_delay_seconds,
            cached_sessions,
            open_websockets,
            websockets_refused,
            upstream_failures,
        }
    }

    /// `virtual_proxy` is the proxy's `metric_label`.
    pub fn request(&self, virtual_proxy: &Arc<str>, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&StatusLabels {
                virtual_proxy: virtual_proxy.clone(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&ProxyLabels {
                virtual_proxy: virtual_proxy.clone(),
            })
            .observe(seconds);
    }

    /// A forward-auth check answered by `front_end` (`http`, `ext_authz`) with `status`.
    pub fn forward_auth_check(&self, front_end: &'static str, status: u16) {
        let labels = CheckLabels { front_end, status };
        if front_end == "http" && status == 200 {
            self.allowed_http_checks
                .get_or_init(|| self.forward_auth_checks.get_or_create(&labels).clone())
                .inc();
            return;
        }
        self.forward_auth_checks.get_or_create(&labels).inc();
    }

    /// A request the node's own HTTP/1.1 engine forwarded or answered.
    pub fn fast_http1_request(&self) {
        self.fast_http1_requests.inc();
    }

    /// A proxy connection the node's own HTTP/1.1 engine handed to hyper.
    pub fn fast_http1_handover(&self) {
        self.fast_http1_handovers.inc();
    }

    /// A request admitted on a public path of the proxy with this `metric_label`.
    pub fn public_request(&self, virtual_proxy: &Arc<str>) {
        self.public_requests
            .get_or_create(&ProxyLabels {
                virtual_proxy: virtual_proxy.clone(),
            })
            .inc();
    }

    pub fn cache_lookup(&self, result: CacheResult) {
        match result {
            CacheResult::Hit => self.cache_hits.inc(),
            CacheResult::Stale => self.cache_stale.inc(),
            CacheResult::Miss => self.cache_misses.inc(),
        };
    }

    pub fn negative_cache_hit(&self) {
        self.negative_cache_hits.inc();
    }

    /// `kind` and `scope` are the labels of `flood::Kind` and `flood::Scope`.
    pub fn limited(&self, kind: &'static str, scope: &'static str) {
        self.limited_requests
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("scope", scope.to_owned()),
            ])
            .inc();
    }

    pub fn validation(&self, outcome: &'static str, seconds: f64) {
        self.validations
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
        self.validation_seconds.observe(seconds);
    }

    pub fn login(&self, method: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    pub fn revocation(&self, delay_seconds: Option<f64>) {
        self.revocations.inc();
        if let Some(delay) = delay_seconds {
            self.revocation_delay_seconds.observe(delay);
        }
    }

    /// `virtual_proxy` is the proxy's `metric_label`.
    pub fn upstream_answered(&self, virtual_proxy: &Arc<str>, seconds: f64) {
        self.upstream_seconds
            .get_or_create(&ProxyLabels {
                virtual_proxy: virtual_proxy.clone(),
            })
            .observe(seconds);
    }

    pub fn active_sessions(&self, count: usize) {
        self.active_sessions
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// `limit` is `session` or `node`.
    pub fn websocket_refused(&self, limit: &'static str) {
        self.websockets_refused
            .get_or_create(&vec![("limit", limit.to_owned())])
            .inc();
    }

    pub fn upstream_failure(&self, virtual_proxy: &str, kind: &'static str) {
        self.upstream_failures
            .get_or_create(&vec![
                ("virtual_proxy", virtual_proxy.to_owned()),
                ("kind", kind.to_owned()),
            ])
            .inc();
    }

    /// The OpenMetrics text, with gauges read now; `upstreams` is each virtual proxy's
    /// (healthy, ejected) node counts.
    pub fn render(
        &self,
        cached_sessions: usize,
        open_websockets: usize,
        upstreams: &[(String, usize, usize)],
    ) -> String {
        self.upstream_nodes.clear();
        for (virtual_proxy, healthy, ejected) in upstreams {
            for (state, count) in [("healthy", healthy), ("ejected", ejected)] {
                self.upstream_nodes
                    .get_or_create(&vec![
                        ("virtual_proxy", virtual_proxy.clone()),
                        ("state", state.to_owned()),
                    ])
                    .set(i64::try_from(*count).unwrap_or(i64::MAX));
            }
        }
        self.cached_sessions
            .set(i64::try_from(cached_sessions).unwrap_or(i64::MAX));
        self.open_websockets
            .set(i64::try_from(open_websockets).unwrap_or(i64::MAX));
        // Read at scrape time from the runtime's own counter: nothing on the request path.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks
                .set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
