//! A data-plane node's own configuration: where it listens, where the control plane is and
//! how it proves it is a node, and how it caches. Everything about virtual proxies comes from
//! the control plane. TOML file, then environment, then flags (highest wins).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::flood::FloodConfig;
use crate::tls::CertificateFiles;
use crate::upstream::tls::UpstreamTlsFiles;
use gatehouse_runtime::admin_access::AdminToken;
use gatehouse_runtime::settings;

/// Shortest node secret accepted (the control plane asks the same).
const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where browsers and clients connect.
    pub listen: SocketAddr,
    /// `/live`, `/ready`.
    pub admin_listen: SocketAddr,
    /// Unlocks `PUT /log-level` on the admin port; without one, changes are refused.
    pub admin_token: Option<AdminToken>,
    /// Name of this node in the control plane's logs.
    pub node_id: String,
    /// On SIGTERM: how long in-flight requests may take to finish before the node exits.
    pub shutdown_grace: Duration,
    pub control_plane: ControlPlaneConfig,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    /// The negative cache and the rate limits on unknown tokens and login starts.
    pub flood: FloodConfig,
    /// TLS termination; plain HTTP when absent.
    pub tls: Option<ServerTls>,
    /// CA and client certificate for upstreams that speak TLS; system roots when absent.
    pub upstream_tls: Option<UpstreamTlsFiles>,
    /// Proxies in front (load balancers, ingresses) whose `X-Forwarded-For` and `Forwarded`
    /// are kept, the peer appended; from anyone else those headers are dropped. Empty: none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Forward authentication for ingresses that ask before they forward; off by default.
    pub forward_auth: ForwardAuthConfig,
    /// Serve plain HTTP/1.1 requests to plain HTTP/1.1 upstreams with the node's own engine
    /// (`http1`), handing every other request to hyper.
    pub fast_http1: bool,
}

/// The forward-authentication front ends (FORWARD-AUTH.md): an HTTP listener for nginx
/// `auth_request`, ingress-nginx, Traefik and Caddy, and Envoy's `ext_authz` over gRPC.
#[derive(Debug, Clone, Default)]
pub struct ForwardAuthConfig {
    /// The HTTP endpoint (`/auth`, `/signin`); off when absent.
    pub listen: Option<SocketAddr>,
    /// Envoy `ext_authz` v3 gRPC (`envoy.service.auth.v3.Authorization`); off when absent.
    pub grpc_listen: Option<SocketAddr>,
    /// Serve `listen` over TLS with the node's `[tls]` certificates.
    pub tls: bool,
    /// The ingresses whose description of the original request (`X-Original-*`,
    /// `X-Forwarded-*`, an `ext_authz` check) is believed; anyone else is refused.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Answer plain HTTP/1.1 checks without a body on the node's own parser, handing every
    /// other request to hyper (`forward_auth::fast_http1`).
    pub fast_http1: bool,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The first is served when SNI names none of them.
    pub certificates: Vec<CertificateFiles>,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

/// How the node proves itself to the control plane.
#[derive(Debug, Clone)]
pub enum NodeCredential {
    /// Mutual TLS: the control plane's CA, and this node's certificate and key.
    Certificate {
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// Development only, with a loopback control plane: a shared secret.
    Secret(NodeSecret),
}

#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// gRPC endpoints (`https://host:port`, or `http://` on loopback for development).
    pub endpoints: Vec<String>,
    pub credential: NodeCredential,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// The node credential; never printed.
#[derive(Clone)]
pub struct NodeSecret(String);

impl NodeSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Sessions kept; the least recently validated go first.
    pub max_sessions: usize,
    /// A cached session is trusted this long before it is validated again. Shorter than
    /// `touch_interval`, so a session that expired for inactivity elsewhere is noticed.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// While the control plane cannot be reached, a session validated this recently keeps
    /// working.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Activity is reported to the control plane in batches this often.
    #[serde(with = "humantime_serde")]
    pub touch_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            ttl: Duration::from_secs(20),
            grace: Duration::from_secs(300),
            touch_interval: Duration::from_secs(30),
        }
    }
}

/// Protection against slow and oversized clients.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time a client has to send its request headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection that moves no byte for this long is closed (QPS keep-alive: 300 s).
    /// Upgraded WebSockets are exempt: they may sit quiet for hours.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// All request headers together, in bytes (QPS: 16384); larger is 431.
    pub max_header_bytes: usize,
    /// One header line, in bytes (QPS: 8192); longer is 431.
    pub max_header_line_bytes: usize,
    /// The request target (path and query), in bytes; longer is 414.
    pub max_uri_bytes: usize,
    /// Client connections served at once; more get 503 and are closed.
    pub max_connections: usize,
    /// WebSockets open through the node at once; the next upgrade is 503.
    pub max_websockets: usize,
    /// WebSockets one session may hold open on this node; the next upgrade is 429.
    pub max_websockets_per_session: usize,
    /// Largest WebSocket frame relayed, in bytes; a bigger one closes the socket (1009).
    /// Frames are relayed in pieces, so this bounds what a peer may send, not node memory.
    pub max_websocket_frame_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_header_bytes: 16 * 1024,
            max_header_line_bytes: 8 * 1024,
            max_uri_bytes: 8 * 1024,
            max_connections: 10_000,
            max_websockets: 10_000,
            max_websockets_per_session: 32,
            // As large as the messages the node used to reassemble, so that no application
            // that worked before meets the limit.
            max_websocket_frame_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    admin_token_file: Option<PathBuf>,
    node_id: Option<String>,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    control_plane: FileControlPlane,
    cache: CacheConfig,
    limits: LimitsConfig,
    flood: FloodConfig,
    tls: Option<FileTls>,
    upstream_tls: Option<UpstreamTlsFiles>,
    trusted_proxies: Vec<String>,
    forward_auth: FileForwardAuth,
    fast_http1: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileForwardAuth {
    listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    tls: bool,
    trusted_networks: Vec<String>,
    #[serde(default = "default_fast_http1")]
    fast_http1: bool,
}

fn default_fast_http1() -> bool {
    true
}

impl Default for FileForwardAuth {
    fn default() -> Self {
        Self {
            listen: None,
            grpc_listen: None,
            tls: false,
            trusted_networks: Vec::new(),
            fast_http1: default_fast_http1(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    certificates: Vec<CertificateFiles>,
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin_token_file: None,
            node_id: None,
            shutdown_grace: Duration::from_secs(30),
            control_plane: FileControlPlane::default(),
            cache: CacheConfig::default(),
            limits: LimitsConfig::default(),
            flood: FloodConfig::default(),
            tls: None,
            upstream_tls: None,
            trusted_proxies: Vec::new(),
            forward_auth: FileForwardAuth::default(),
            fast_http1: default_fast_http1(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileControlPlane {
    endpoints: Vec<String>,
    shared_secret: Option<String>,
    shared_secret_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
}

impl Default for FileControlPlane {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:4243".to_owned()],
            shared_secret: None,
            shared_secret_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Settings from the command line or the environment; they win over the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address for browsers and clients [default: 127.0.0.1:8080]
    #[arg(long, env = "GATEHOUSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of /live and /ready [default: 127.0.0.1:9901]
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Control-plane gRPC endpoints, comma-separated [default: http://127.0.0.1:4243]
    #[arg(long, env = "GATEHOUSE_CONTROL_PLANE", value_delimiter = ',')]
    pub control_plane: Option<Vec<String>>,
    /// Secret this node presents to the control plane (at least 32 characters)
    #[arg(long, env = "GATEHOUSE_NODE_SECRET", hide_env_values = true)]
    pub node_secret: Option<String>,
    /// Any setting, as section.key=value (repeatable; wins over GATEHOUSE__SECTION__KEY)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Name of this node [default: the host name]
    #[arg(long, env = "GATEHOUSE_NODE_ID")]
    pub node_id: Option<String>,
    /// Token that unlocks PUT /log-level on the admin port (at least 32 characters; prefer
    /// admin_token_file)
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

pub use gatehouse_runtime::settings::ConfigError;

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::with_overrides(settings::load(file, &overrides.set)?, overrides)
    }

    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, &Overrides::default())
    }

    fn from_toml_with(text: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::with_overrides(settings::from_toml(text, &overrides.set)?, overrides)
    }

    /// Applies the named flags, which win over the file and every setting.
    fn with_overrides(mut file: FileConfig, overrides: &Overrides) -> Result<Self, ConfigError> {
        if let Some(listen) = overrides.listen {
            file.listen = listen;
        }
        if let Some(admin) = overrides.admin_listen {
            file.admin_listen = admin;
        }
        if let Some(endpoints) = &overrides.control_plane {
            file.control_plane.endpoints.clone_from(endpoints);
        }
        if let Some(secret) = &overrides.node_secret {
            file.control_plane.shared_secret = Some(secret.clone());
            file.control_plane.shared_secret_file = None;
        }
        if let Some(node_id) = &overrides.node_id {
            file.node_id = Some(node_id.clone());
        }
        let admin_token = settings::admin_token(
            overrides.admin_token.as_deref(),
            file.admin_token_file.as_deref(),
        )?;
        Self::validate(file, admin_token)
    }

    fn validate(file: FileConfig, admin_token: Option<AdminToken>) -> Result<Self, ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        let control = file.control_plane;
        if control.endpoints.is_empty() {
            return invalid("control_plane.endpoints must name at least one endpoint");
        }
        if let Some(endpoint) = control
            .endpoints
            .iter()
            .find(|endpoint| tonic::transport::Endpoint::from_shared((*endpoint).clone()).is_err())
        {
            return Err(ConfigError::Invalid(format!(
                "control_plane endpoint {endpoint:?} is not a URL such as http://control-plane:4243"
            )));
        }
        let tls_endpoints = control
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        let credential = if tls_endpoints == control.endpoints.len() {
            match (control.ca_file, control.cert_file, control.key_file) {
                (Some(ca_file), Some(cert_file), Some(key_file)) => {
                    for path in [&ca_file, &cert_file, &key_file] {
                        if !path.is_file() {
                            return Err(ConfigError::Invalid(format!(
                                "control_plane: {} is not a readable file",
                                path.display()
                            )));
                        }
                    }
                    NodeCredential::Certificate {
                        ca_file,
                        cert_file,
                        key_file,
                    }
                }
                _ => {
                    return invalid(
                        "control_plane: https endpoints need ca_file, cert_file and key_file (this node's client certificate)",
                    );
                }
            }
        } else if tls_endpoints == 0 {
            // The shared secret is a development convenience: it never crosses a network.
            if let Some(endpoint) = control
                .endpoints
                .iter()
                .find(|endpoint| !is_loopback_url(endpoint))
            {
                return Err(ConfigError::Invalid(format!(
                    "control_plane endpoint {endpoint:?} is plain http on a non-loopback host: use https with a client certificate"
                )));
            }
            NodeCredential::Secret(NodeSecret(read_secret(
                control.shared_secret,
                control.shared_secret_file,
            )?))
        } else {
            return invalid("control_plane endpoints must be all https or all http");
        };
        let cache = file.cache;
        if cache.max_sessions == 0 {
            return invalid("cache.max_sessions must be at least 1");
        }
        if cache.ttl.is_zero() || cache.ttl >= cache.touch_interval {
            return invalid(
                "cache.ttl must be greater than zero and shorter than cache.touch_interval",
            );
        }
        if cache.grace < cache.ttl {
            return invalid("cache.grace must be at least cache.ttl");
        }
        let limits = file.limits;
        // hyper needs a read buffer of at least 8 KiB.
        if limits.max_header_bytes < 8192
            || limits.header_read_timeout.is_zero()
            || limits.idle_timeout.is_zero()
        {
            return invalid(
                "limits: max_header_bytes must be at least 8192 and timeouts greater than zero",
            );
        }
        if limits.max_header_line_bytes < 256
            || limits.max_uri_bytes < 256
            || limits.max_connections == 0
        {
            return invalid(
                "limits: header line and URI limits must be at least 256 bytes, max_connections at least 1",
            );
        }
        if limits.max_websockets == 0
            || limits.max_websockets_per_session == 0
            || limits.max_websocket_frame_bytes < 1024
        {
            return invalid(
                "limits: max_websockets and max_websockets_per_session must be at least 1, max_websocket_frame_bytes at least 1024",
            );
        }
        if let Some(problem) = file.flood.problem() {
            return Err(ConfigError::Invalid(problem));
        }
        let trusted_proxies = file
            .trusted_proxies
            .iter()
            .map(|network| parse_network("trusted_proxies", network))
            .collect::<Result<Vec<_>, _>>()?;
        let forward_auth = forward_auth(file.forward_auth, file.tls.is_some())?;
        let node_id = file
            .node_id
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| "data-plane".to_owned());
        Ok(Self {
            listen: file.listen,
            admin_listen: file.admin_listen,
            admin_token,
            node_id,
            shutdown_grace: file.shutdown_grace,
            control_plane: ControlPlaneConfig {
                endpoints: control.endpoints,
                credential,
                connect_timeout: control.connect_timeout,
                request_timeout: control.request_timeout,
            },
            cache,
            limits,
            flood: file.flood,
            upstream_tls: file.upstream_tls,
            trusted_proxies,
            forward_auth,
            fast_http1: file.fast_http1,
            tls: match file.tls {
                Some(tls) if tls.certificates.is_empty() => {
                    return invalid("tls.certificates must name at least one certificate");
                }
                Some(tls) => Some(ServerTls {
                    certificates: tls.certificates,
                    reload_interval: tls.reload_interval.max(Duration::from_millis(100)),
                }),
                None => None,
            },
        })
    }
}

/// `[forward_auth]`, checked: a listener that trusts no ingress could only refuse.
fn forward_auth(file: FileForwardAuth, has_tls: bool) -> Result<ForwardAuthConfig, ConfigError> {
    let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
    let trusted_networks = file
        .trusted_networks
        .iter()
        .map(|network| parse_network("forward_auth.trusted_networks", network))
        .collect::<Result<Vec<_>, _>>()?;
    let enabled = file.listen.is_some() || file.grpc_listen.is_some();
    if enabled && trusted_networks.is_empty() {
        return invalid(
            "forward_auth.trusted_networks must name the ingresses' networks (such as 10.0.0.0/8) when forward_auth.listen or grpc_listen is set",
        );
    }
    if file.tls && !has_tls {
        return invalid("forward_auth.tls needs the node's [tls] certificates");
    }
    if file.tls && file.listen.is_none() {
        return invalid("forward_auth.tls is set but forward_auth.listen is not");
    }
    Ok(ForwardAuthConfig {
        listen: file.listen,
        grpc_listen: file.grpc_listen,
        tls: file.tls,
        trusted_networks,
        fast_http1: file.fast_http1,
    })
}

/// A CIDR network (`10.0.0.0/8`, `2001:db8::/32`), or one address standing for itself.
fn parse_network(key: &str, text: &str) -> Result<ipnet::IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "{key} entry {text:?} is not a network such as 10.0.0.0/8 or an address"
            ))
        })
}

fn read_secret(secret: Option<String>, file: Option<PathBuf>) -> Result<String, ConfigError> {
    let secret = match (secret, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(
                "control_plane: give shared_secret or shared_secret_file, not both".to_owned(),
            ));
        }
        (Some(secret), None) => secret.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path, source })?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(ConfigError::Invalid(
                "a node secret is required with an http control plane: control_plane.shared_secret_file or GATEHOUSE_NODE_SECRET".to_owned(),
            ));
        }
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::Invalid(
            "the node secret must be at least 32 characters".to_owned(),
        ));
    }
    Ok(secret)
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "[control_plane]\nshared_secret = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn defaults_need_only_a_secret() {
        let config = Config::from_toml_str(SECRET).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(
            config.control_plane.endpoints,
            vec!["http://127.0.0.1:4243"]
        );
        assert!(config.cache.ttl < config.cache.touch_interval);
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        assert!(
            config.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        let trusting =
            format!("trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]\n{SECRET}");
        let trusted = Config::from_toml_str(&trusting).unwrap().trusted_proxies;
        assert_eq!(
            trusted.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]
        );
        assert!(
            config.forward_auth.listen.is_none() && config.forward_auth.grpc_listen.is_none(),
            "forward authentication is off by default"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(
            Config::from_toml_str("")
                .unwrap_err()
                .to_string()
                .contains("node secret")
        );
        let short = "[control_plane]\nshared_secret = \"short\"";
        assert!(
            Config::from_toml_str(short)
                .unwrap_err()
                .to_string()
                .contains("32")
        );
        let slow_cache = format!("{SECRET}[cache]\nttl = \"60s\"\ntouch_interval = \"30s\"");
        assert!(
            Config::from_toml_str(&slow_cache)
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        let no_websockets = format!("{SECRET}[limits]\nmax_websockets_per_session = 0");
        assert!(
            Config::from_toml_str(&no_websockets)
                .unwrap_err()
                .to_string()
                .contains("max_websockets_per_session")
        );
        let proxies = format!("trusted_proxies = [\"10.0.0.0/33\"]\n{SECRET}");
        assert!(
            Config::from_toml_str(&proxies)
                .unwrap_err()
                .to_string()
                .contains("is not a network")
        );
        let untrusting = format!("{SECRET}[forward_auth]\nlisten = \"127.0.0.1:9904\"");
        assert!(
            Config::from_toml_str(&untrusting)
                .unwrap_err()
                .to_string()
                .contains("forward_auth.trusted_networks")
        );
        let plain = format!(
            "{SECRET}[forward_auth]\nlisten = \"127.0.0.1:9904\"\ntrusted_networks = [\"10.0.0.0/8\"]\ntls = true"
        );
        assert!(
            Config::from_toml_str(&plain)
                .unwrap_err()
                .to_string()
                .contains("[tls]")
        );
        let no_burst = format!("{SECRET}[flood.login_starts]\naddress_burst = 0");
        assert!(
            Config::from_toml_str(&no_burst)
                .unwrap_err()
                .to_string()
                .contains("flood.login_starts.address_burst")
        );
        let flood = format!(
            "{SECRET}[flood]\nnegative_ttl = \"5s\"\n[flood.unknown_tokens]\naddress_per_second = 0"
        );
        let flood = Config::from_toml_str(&flood).unwrap().flood;
        assert_eq!(flood.negative_ttl, Duration::from_secs(5));
        assert_eq!(
            flood.unknown_tokens.address_burst, 200,
            "the rest keep their defaults"
        );
        let typo = format!("{SECRET}lisen = \"x\"");
        assert!(
            Config::from_toml_str(&typo)
                .unwrap_err()
                .to_string()
                .contains("lisen")
        );
    }
}
