//! The control plane's configuration: one typed, validated struct, read from a TOML file,
//! then overridden by environment variables and command-line flags (in that order of
//! precedence, lowest first). Every key and its default is documented in CONFIGURATION.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::admin_access::AdminToken;

mod access_rules;
mod assertion;
mod audit;
mod listeners;
mod login_methods;
mod oidc;
mod outage;
mod public_paths;
mod saml;
use gatehouse_runtime::settings;
mod syntax;
mod upstream;
mod virtual_proxy;

pub use self::assertion::{AssertionConfig, ProxyAssertionConfig};
pub use self::audit::AuditConfig;
use self::listeners::FileRestConfig;
pub use self::listeners::RestConfig;
pub use self::oidc::{
    ClientAuthentication, OidcConfig, is_https_or_loopback, read_ca_file as read_oidc_ca_file,
    read_secret as read_oidc_secret,
};
pub use self::outage::OutageConfig;
pub use self::saml::{SamlConfig, read_idp_metadata};
use self::virtual_proxy::FileVirtualProxy;
pub use self::virtual_proxy::{
    AccessRuleConfig, AnonymousMode, AttributeMatch, BalanceStrategy, HeaderAuthConfig,
    IdentityPreset, JwtConfig, KerberosConfig, PublicPathConfig, RuleAction, SameSite, UnknownHost,
    UpstreamConfig, VirtualProxyConfig, validate_prefix,
};

/// Everything the control plane needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the gRPC server.
    pub listen: SocketAddr,
    /// Address of `/live` and `/ready`.
    pub admin_listen: SocketAddr,
    /// Unlocks `PUT /log-level` on the admin port; without one, changes are refused.
    pub admin_token: Option<AdminToken>,
    /// Plaintext `grpc.health.v1` only, for Kubernetes gRPC probes (which speak no TLS).
    pub health_listen: Option<SocketAddr>,
    /// On SIGTERM: how long in-flight calls may take to finish.
    pub shutdown_grace: Duration,
    pub store: StoreConfig,
    pub tickets: TicketConfig,
    pub outage: OutageConfig,
    /// The signed identity assertion's keys and issuer.
    pub assertion: AssertionConfig,
    pub audit: AuditConfig,
    /// At least one; prefixes and cookie names are unique.
    pub virtual_proxies: Vec<VirtualProxyConfig>,
    /// The credential data-plane nodes present when TLS is off (loopback development only);
    /// without one the node API refuses every call.
    pub node_secret: Option<Secret>,
    /// gRPC over TLS with client certificates. Required unless `listen` is a loopback address.
    pub tls: Option<TlsConfig>,
    /// The QPS-compatible REST surface; off unless `[rest] listen` is set.
    pub rest: Option<RestConfig>,
}

/// TLS for the gRPC server, and which client certificates may call what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA that signs client certificates. A client certificate is optional at the TLS
    /// level (the Personal API needs none) and required by the other services.
    pub client_ca_file: PathBuf,
    #[serde(default)]
    pub roles: RolesConfig,
}

/// Client-certificate names (subject CN or DNS SAN) allowed in each role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// May call the Authentication and Session APIs.
    #[serde(default)]
    pub admin: Vec<String>,
    /// May call the node API (data-plane nodes).
    #[serde(default)]
    pub node: Vec<String>,
}

/// A credential: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (see `gatehouse_runtime::constant_time_eq`).
    pub fn matches(&self, candidate: &str) -> bool {
        gatehouse_runtime::constant_time_eq(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Shortest node secret accepted.
const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeApiConfig {
    /// The secret itself (prefer `shared_secret_file` or the environment).
    pub shared_secret: Option<String>,
    /// A file holding the secret (e.g. a mounted Kubernetes secret).
    pub shared_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// Sessions in this process only: for a single replica (local runs, development).
    Memory,
    /// Sessions in Redis, shared by every replica.
    Redis,
}

/// How the Redis behind `backend = "redis"` is deployed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisTopology {
    /// One server at `redis_url`.
    #[default]
    Standalone,
    /// A master and its replicas watched by sentinels: the master is asked of `sentinel_urls`
    /// under the name `sentinel_master`, and asked again after a failover.
    Sentinel,
    /// A Redis Cluster, found from the seed nodes `cluster_urls`.
    Cluster,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub topology: RedisTopology,
    /// The server, for the standalone topology.
    pub redis_url: String,
    /// The sentinels (`redis://host:26379`; credentials for the sentinels go in their URLs).
    pub sentinel_urls: Vec<String>,
    /// The master's name as the sentinels know it.
    pub sentinel_master: String,
    /// Seed nodes of the cluster; the rest are discovered.
    pub cluster_urls: Vec<String>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Approximate number of revocation events kept for reconnecting data-plane nodes.
    pub revocation_stream_max_len: u64,
    /// Redis ACL user name (AUTH); the URL may carry one too.
    pub username: Option<String>,
    /// File holding the Redis password (e.g. a mounted Kubernetes secret).
    pub password_file: Option<PathBuf>,
    /// The Redis password: from `password_file` or `GATEHOUSE_REDIS_PASSWORD`, never from the
    /// file itself, never printed.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// CA that signs the Redis server's certificate (`rediss://` URLs); the system roots
    /// otherwise.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key, when Redis requires mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            topology: RedisTopology::Standalone,
            redis_url: "redis://127.0.0.1:6379/".to_owned(),
            sentinel_urls: Vec::new(),
            sentinel_master: "gatehouse".to_owned(),
            cluster_urls: Vec::new(),
            key_prefix: "gatehouse".to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            revocation_stream_max_len: 100_000,
            username: None,
            password_file: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TicketConfig {
    /// How long a ticket can be redeemed.
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// How long a login target (the URL a browser first asked for) is remembered.
    #[serde(with = "humantime_serde")]
    pub target_ttl: Duration,
    /// The longest login target stored, in bytes: what one cookieless page load can make
    /// the store hold for `target_ttl`.
    pub max_target_bytes: usize,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            ticket_ttl: Duration::from_secs(60),
            target_ttl: Duration::from_secs(5 * 60),
            max_target_bytes: gatehouse_proto::MAX_TARGET_URI_LEN,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    admin_token_file: Option<PathBuf>,
    health_listen: Option<SocketAddr>,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    store: StoreConfig,
    tickets: TicketConfig,
    outage: OutageConfig,
    assertion: AssertionConfig,
    audit: AuditConfig,
    node_api: NodeApiConfig,
    tls: Option<TlsConfig>,
    rest: FileRestConfig,
    virtual_proxies: Vec<FileVirtualProxy>,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4243)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9902)),
            admin_token_file: None,
            health_listen: None,
            shutdown_grace: Duration::from_secs(30),
            store: StoreConfig::default(),
            tickets: TicketConfig::default(),
            outage: OutageConfig::default(),
            assertion: AssertionConfig::default(),
            audit: AuditConfig::default(),
            node_api: NodeApiConfig::default(),
            tls: None,
            rest: FileRestConfig::default(),
            virtual_proxies: Vec::new(),
        }
    }
}

/// The addresses the chosen topology needs are there and parse as Redis URLs.
fn validate_redis_addresses(store: &StoreConfig) -> Result<(), String> {
    let (key, urls) = match store.topology {
        RedisTopology::Standalone => ("redis_url", std::slice::from_ref(&store.redis_url)),
        RedisTopology::Sentinel => ("sentinel_urls", store.sentinel_urls.as_slice()),
        RedisTopology::Cluster => ("cluster_urls", store.cluster_urls.as_slice()),
    };
    if urls.is_empty() {
        return Err(format!(
            "store.{key} must name at least one server for topology {:?}",
            store.topology
        ));
    }
    for url in urls {
        if let Err(error) = redis::Client::open(url.as_str()) {
            // The URL may hold a password: name the problem, never the URL.
            return Err(format!(
                "store.{key} holds a URL that is not a usable Redis URL ({:?})",
                error.kind()
            ));
        }
    }
    // TLS is chosen by the URL scheme, the same way in every topology; the CA and client
    // certificate only go with it.
    let tls = urls
        .iter()
        .filter(|url| url.starts_with("rediss://"))
        .count();
    if tls != 0 && tls != urls.len() {
        return Err(format!("store.{key} must be all rediss:// or all redis://"));
    }
    let tls_material = store.tls_ca_file.is_some() || store.tls_cert_file.is_some();
    if tls_material && tls == 0 {
        return Err(format!(
            "store.tls_ca_file and store.tls_cert_file need rediss:// URLs in store.{key}"
        ));
    }
    if store.topology == RedisTopology::Sentinel && store.sentinel_master.trim().is_empty() {
        return Err("store.sentinel_master must name the master the sentinels watch".to_owned());
    }
    Ok(())
}

/// Settings given on the command line or in the environment; they win over the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address of the gRPC server [default: 127.0.0.1:4243]
    #[arg(long, env = "GATEHOUSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of /live and /ready [default: 127.0.0.1:9902]
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Where sessions live [default: memory]
    #[arg(long, env = "GATEHOUSE_STORE", value_enum)]
    pub store: Option<StoreBackend>,
    /// Redis URL, for `--store redis` [default: redis://127.0.0.1:6379/]
    #[arg(long, env = "GATEHOUSE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis password (prefer store.password_file)
    #[arg(long, env = "GATEHOUSE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Any setting, as section.key=value (repeatable; wins over GATEHOUSE__SECTION__KEY)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Secret data-plane nodes present (at least 32 characters)
    #[arg(long, env = "GATEHOUSE_NODE_SECRET", hide_env_values = true)]
    pub node_secret: Option<String>,
    /// Token that unlocks PUT /log-level on the admin port (at least 32 characters; prefer
    /// admin_token_file)
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

pub use gatehouse_runtime::settings::ConfigError;

impl Config {
    /// Reads `file` (when given), applies `overrides` and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::with_overrides(settings::load(file, &overrides.set)?, overrides)
    }

    /// Parses and validates a configuration given as TOML text, with no overrides.
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
        if let Some(backend) = overrides.store {
            file.store.backend = backend;
        }
        if let Some(url) = &overrides.redis_url {
            file.store.redis_url.clone_from(url);
        }
        if let Some(password) = &overrides.redis_password {
            file.store.password = Some(Secret::new(password.clone()));
        }
        if let Some(secret) = &overrides.node_secret {
            file.node_api = NodeApiConfig {
                shared_secret: Some(secret.clone()),
                shared_secret_file: None,
            };
        }
        let admin_token = settings::admin_token(
            overrides.admin_token.as_deref(),
            file.admin_token_file.as_deref(),
        )?;
        Self::validate(file, admin_token)
    }

    fn validate(
        mut file: FileConfig,
        admin_token: Option<AdminToken>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if file.store.backend == StoreBackend::Redis {
            validate_redis_addresses(&file.store).map_err(ConfigError::Invalid)?;
        }
        if file.store.key_prefix.is_empty()
            || !file
                .store
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return invalid(
                "store.key_prefix must be non-empty letters, digits, '-', '_', '.' or ':'"
                    .to_owned(),
            );
        }
        if file.store.password.is_none()
            && let Some(path) = &file.store.password_file
        {
            let password = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            file.store.password = Some(Secret::new(
                password.trim_end_matches(['\r', '\n']).to_owned(),
            ));
        }
        if file.store.tls_cert_file.is_some() != file.store.tls_key_file.is_some() {
            return invalid("store: tls_cert_file and tls_key_file go together".to_owned());
        }
        for path in [
            &file.store.tls_ca_file,
            &file.store.tls_cert_file,
            &file.store.tls_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_file() {
                return invalid(format!("store: {} is not a readable file", path.display()));
            }
        }
        if file.store.connect_timeout.is_zero() || file.store.response_timeout.is_zero() {
            return invalid("store timeouts must be greater than zero".to_owned());
        }
        if file.tickets.ticket_ttl.is_zero() || file.tickets.target_ttl.is_zero() {
            return invalid(
                "tickets.ticket_ttl and tickets.target_ttl must be greater than zero".to_owned(),
            );
        }
        if !(256..=gatehouse_proto::MAX_TARGET_URI_LEN).contains(&file.tickets.max_target_bytes) {
            return invalid(format!(
                "tickets.max_target_bytes must be 256 to {} (what nodes send at most)",
                gatehouse_proto::MAX_TARGET_URI_LEN
            ));
        }

        file.outage.validate().map_err(ConfigError::Invalid)?;
        file.audit
            .validate(&file.store)
            .map_err(ConfigError::Invalid)?;
        let virtual_proxies =
            virtual_proxy::validate_all(file.virtual_proxies).map_err(ConfigError::Invalid)?;
        let longest_inactivity = virtual_proxies
            .iter()
            .map(|proxy| proxy.inactivity_timeout)
            .max()
            .unwrap_or_default();
        file.outage
            .validate_keys_outlive(longest_inactivity)
            .map_err(ConfigError::Invalid)?;
        let longest_assertion = virtual_proxies
            .iter()
            .filter_map(|proxy| proxy.assertion.as_ref())
            .map(|assertion| assertion.lifetime)
            .max()
            .unwrap_or_default();
        file.assertion
            .validate(longest_assertion)
            .map_err(ConfigError::Invalid)?;
        let node_secret = node_secret(&file.node_api)?;
        match &file.tls {
            None if !file.listen.ip().is_loopback() => {
                return Err(ConfigError::Invalid(format!(
                    "TLS is required to listen on {} (configure [tls], or listen on a loopback address for development)",
                    file.listen
                )));
            }
            Some(tls) => {
                for path in [&tls.cert_file, &tls.key_file, &tls.client_ca_file] {
                    if !path.is_file() {
                        return Err(ConfigError::Invalid(format!(
                            "tls: {} is not a readable file",
                            path.display()
                        )));
                    }
                }
                if tls.roles.admin.is_empty() && tls.roles.node.is_empty() {
                    return Err(ConfigError::Invalid(
                        "tls.roles: name at least one admin or node certificate, or no client can call anything".to_owned(),
                    ));
                }
            }
            None => {}
        }
        let rest = listeners::validate_rest(&file.rest, file.tls.is_some())?;
        let mut bound = vec![("listen", file.listen), ("admin_listen", file.admin_listen)];
        bound.extend(file.health_listen.map(|address| ("health_listen", address)));
        bound.extend(rest.as_ref().map(|rest| ("rest.listen", rest.listen)));
        listeners::distinct_ports(&bound)?;
        Ok(Self {
            listen: file.listen,
            admin_listen: file.admin_listen,
            admin_token,
            health_listen: file.health_listen,
            shutdown_grace: file.shutdown_grace,
            store: file.store,
            tickets: file.tickets,
            outage: file.outage,
            assertion: file.assertion,
            audit: file.audit,
            virtual_proxies,
            node_secret,
            tls: file.tls,
            rest,
        })
    }
}

fn node_secret(config: &NodeApiConfig) -> Result<Option<Secret>, ConfigError> {
    let secret = match (&config.shared_secret, &config.shared_secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(
                "node_api: give shared_secret or shared_secret_file, not both".to_owned(),
            ));
        }
        (Some(secret), None) => secret.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::Invalid(format!(
            "node_api secret must be at least {MIN_SECRET_LEN} characters"
        )));
    }
    Ok(Some(Secret::new(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CapPolicy;

    #[test]
    fn empty_file_gives_one_default_proxy_on_memory() {
        let config = Config::from_toml_str("").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.store.backend, StoreBackend::Memory);
        assert_eq!(config.virtual_proxies.len(), 1);
        let proxy = &config.virtual_proxies[0];
        assert_eq!(proxy.prefix, "");
        assert_eq!(proxy.cookie_name, "X-Qlik-Session");
        assert_eq!(proxy.inactivity_timeout, Duration::from_secs(1800));
        assert_eq!(proxy.max_sessions_per_user, 5);
        assert_eq!(proxy.session_cap_policy, CapPolicy::Refuse);
        assert_eq!(config.tickets.ticket_ttl, Duration::from_secs(60));
    }

    #[test]
    fn named_proxy_gets_conventional_cookie_name_and_parsed_durations() {
        let config = Config::from_toml_str(
            r#"
            [[virtual_proxies]]
            prefix = "sales"
            inactivity_timeout = "10m"
            session_cap_policy = "evict-oldest"
            "#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let proxy = &config.virtual_proxies[0];
        assert_eq!(proxy.cookie_name, "X-Qlik-Session-sales");
        assert_eq!(proxy.inactivity_timeout, Duration::from_secs(600));
        assert_eq!(proxy.session_cap_policy, CapPolicy::EvictOldest);
    }

    fn rejected(text: &str) -> String {
        match Config::from_toml_str(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_default_target_must_be_where_targets_may_be() {
        let proxy = |line: &str| {
            format!(
                "[[virtual_proxies]]\nprefix = \"app\"\npublic_origins = [\"https://sense.example.com\"]\nhost_allow_list = [\"portal.example.com\"]\n{line}\n"
            )
        };
        for good in [
            "https://sense.example.com/app/hub",
            "https://portal.example.com/welcome",
        ] {
            let config =
                Config::from_toml_str(&proxy(&format!("default_target_uri = \"{good}\""))).unwrap();
            assert_eq!(
                config.virtual_proxies[0].default_target_uri.as_deref(),
                Some(good)
            );
        }
        for bad in [
            "https://evil.example.net/",
            "/app/hub",
            "javascript:alert(1)",
        ] {
            let message = rejected(&proxy(&format!("default_target_uri = \"{bad}\"")));
            assert!(message.contains("default_target_uri"), "{bad}: {message}");
        }
    }

    #[test]
    fn outage_settings_are_bounded() {
        let config = Config::from_toml_str("").unwrap();
        assert!(config.outage.enabled());
        assert!(
            !Config::from_toml_str("[outage]\ngrace = \"0s\"\n")
                .unwrap()
                .outage
                .enabled()
        );
        for (text, reason) in [
            ("[outage]\nseal_refresh = \"0s\"\n", "seal_refresh"),
            (
                "[outage]\nkey_rotation = \"30m\"\n",
                "key_rotation must be at least 1h",
            ),
            (
                "[outage]\ngrace = \"2h\"\nkey_rotation = \"1h\"\n",
                "at least outage.grace",
            ),
            ("[outage]\ngrace = \"40days\"\n", "at most 30 days"),
            (
                "[outage]\nkey_rotation = \"1000years\"\n",
                "at most 365 days",
            ),
            ("[outage]\nmax_revocations = 0\n", "max_revocations"),
        ] {
            let message = rejected(text);
            assert!(message.contains(reason), "{text}: {message}");
        }
    }

    #[test]
    fn bad_prefixes_and_duplicates_are_rejected() {
        assert!(rejected("[[virtual_proxies]]\nprefix = \"Sales\"").contains("lowercase"));
        assert!(rejected("[[virtual_proxies]]\nprefix = \"a/b\"").contains("lowercase"));
        assert!(
            rejected("[[virtual_proxies]]\nprefix = \"a\"\n[[virtual_proxies]]\nprefix = \"a\"")
                .contains("defined twice")
        );
    }

    /// The first TOML example of a documentation page, with `replacements` applied.
    fn documented_example(page: &str, replacements: &[(&str, &str)]) -> String {
        let start = page.find("```toml\n").expect("a TOML example") + "```toml\n".len();
        let end = start + page[start..].find("```").expect("the example's end");
        replacements
            .iter()
            .fold(page[start..end].to_owned(), |text, (from, to)| {
                text.replace(from, to)
            })
    }

    #[test]
    fn the_documented_authentication_examples_load() {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-doc-examples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("sales-secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let oidc = documented_example(
            include_str!("../../../AUTH-OIDC.md"),
            &[("/etc/gatehouse/oidc/sales-secret", secret.to_str().unwrap())],
        );
        let config = Config::from_toml_str(&oidc).unwrap_or_else(|error| panic!("{error}\n{oidc}"));
        let sales = &config.virtual_proxies[0];
        assert_eq!(sales.prefix, "sales");
        assert!(sales.oidc.is_some());
        let kerberos = documented_example(include_str!("../../../AUTH-KERBEROS.md"), &[]);
        let config =
            Config::from_toml_str(&kerberos).unwrap_or_else(|error| panic!("{error}\n{kerberos}"));
        assert!(
            config
                .virtual_proxies
                .iter()
                .any(|proxy| proxy.kerberos.is_some())
        );
        let metadata = dir.join("idp-metadata.xml");
        std::fs::write(&metadata, saml::tests::good_metadata()).unwrap();
        let saml = documented_example(
            include_str!("../../../AUTH-SAML.md"),
            &[(
                "/etc/gatehouse/saml/idp-metadata.xml",
                metadata.to_str().unwrap(),
            )],
        );
        let config = Config::from_toml_str(&saml).unwrap_or_else(|error| panic!("{error}\n{saml}"));
        let sales = &config.virtual_proxies[0];
        assert_eq!(
            sales.saml.as_ref().map(SamlConfig::acs_url),
            Some("https://gatehouse.example.com/sales/saml/acs")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn assertion_audiences_must_be_unique() {
        let shared = "[[virtual_proxies]]\nprefix = \"a\"\n[virtual_proxies.assertion]\n\
                      audience = \"app\"\n[[virtual_proxies]]\nprefix = \"b\"\n\
                      [virtual_proxies.assertion]\naudience = \"app\"";
        assert!(rejected(shared).contains("used by two virtual proxies"));
        let own = "[[virtual_proxies]]\nprefix = \"a\"\n[virtual_proxies.assertion]\n\
                   [[virtual_proxies]]\nprefix = \"b\"\n[virtual_proxies.assertion]";
        assert!(Config::from_toml_str(own).is_ok());
    }

    #[test]
    fn cookie_names_must_be_unique_and_tokens() {
        let clash = "[[virtual_proxies]]\nprefix = \"a\"\ncookie_name = \"S\"\n\
                     [[virtual_proxies]]\nprefix = \"b\"\ncookie_name = \"s\"";
        assert!(rejected(clash).contains("used by two"));
        assert!(
            rejected("[[virtual_proxies]]\nprefix = \"a\"\ncookie_name = \"a b\"")
                .contains("may only hold")
        );
        // An OpenID proxy's login-binding cookie is `{cookie}-oidc`.
        let binding_clash = "[[virtual_proxies]]\nprefix = \"a\"\ncookie_name = \"S\"\n\
                             [virtual_proxies.oidc]\nissuer = \"https://idp.example.com\"\n\
                             client_id = \"c\"\nuser_directory = \"IDP\"\n\
                             [[virtual_proxies]]\nprefix = \"b\"\ncookie_name = \"S-oidc\"";
        assert!(rejected(binding_clash).contains("S-oidc"));
    }

    #[test]
    fn a_proxy_logs_browsers_in_with_oidc_or_saml_not_both() {
        let both = "[[virtual_proxies]]\nprefix = \"a\"\n\
                    [virtual_proxies.oidc]\nissuer = \"https://idp.example.com\"\n\
                    client_id = \"c\"\nclient_authentication = \"none\"\nuser_directory = \"IDP\"\n\
                    [virtual_proxies.saml]\nidp_metadata_file = \"/nonexistent\"\n\
                    entity_id = \"urn:sp\"\nuser_directory = \"IDP\"";
        assert!(rejected(both).contains("oidc and saml"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_in_one_line() {
        let message = rejected("lisen = \"127.0.0.1:1\"");
        assert!(message.contains("lisen"), "{message}");
        assert!(!message.contains('\n'));
        assert!(
            rejected("[[virtual_proxies]]\nprefix = \"\"\nmax_sessions_per_user = 0")
                .contains("at least 1")
        );
        assert!(
            rejected("[store]\nbackend = \"redis\"\nredis_url = \"http://x\"")
                .contains("redis_url")
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
            admin_listen: None,
            store: Some(StoreBackend::Redis),
            redis_url: Some("redis://127.0.0.1:1/".to_owned()),
            redis_password: Some("hunter2".to_owned()),
            set: vec!["tickets.ticket_ttl=5s".to_owned()],
            node_secret: Some("s".repeat(40)),
            admin_token: Some("a".repeat(40)),
        };
        let config = Config::from_toml_with("listen = \"127.0.0.1:8\"", &overrides)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.listen.port(), 9);
        assert_eq!(config.tickets.ticket_ttl, Duration::from_secs(5));
        assert_eq!(config.store.backend, StoreBackend::Redis);
        assert_eq!(config.store.redis_url, "redis://127.0.0.1:1/");
        assert!(
            config
                .node_secret
                .is_some_and(|secret| secret.matches(&"s".repeat(40)))
        );
        assert_eq!(
            config.admin_token,
            Some(AdminToken::new(&"a".repeat(40)).unwrap())
        );
    }

    #[test]
    fn the_admin_token_comes_from_its_file_and_must_be_long() {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, format!("{}\n", "k".repeat(40))).unwrap();
        let config = Config::from_toml_str(&format!(
            "admin_token_file = {:?}",
            file.display().to_string()
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            config.admin_token,
            Some(AdminToken::new(&"k".repeat(40)).unwrap())
        );
        assert!(
            !format!("{config:?}").contains(&"k".repeat(40)),
            "never printed"
        );
        std::fs::write(&file, "short").unwrap();
        let message = rejected(&format!(
            "admin_token_file = {:?}",
            file.display().to_string()
        ));
        assert!(message.contains("at least 32"), "{message}");
        let message = rejected("admin_token_file = \"/nonexistent/admin-token\"");
        assert!(message.contains("/nonexistent/admin-token"), "{message}");
        assert!(
            Config::from_toml_str("").unwrap().admin_token.is_none(),
            "off by default"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_rest_surface_is_off_by_default_and_follows_the_loopback_rule() {
        assert!(Config::from_toml_str("").unwrap().rest.is_none());
        let rest = Config::from_toml_str(
            "[rest]\nlisten = \"127.0.0.1:4244\"\npublic_url = \"https://cp.example.com:4244/\"",
        )
        .unwrap()
        .rest
        .unwrap();
        assert_eq!(rest.listen.port(), 4244);
        assert_eq!(
            rest.public_url.as_deref(),
            Some("https://cp.example.com:4244/")
        );
        assert!(rejected("[rest]\nlisten = \"0.0.0.0:4244\"").contains("TLS is required"));
        assert!(rejected("[rest]\npublic_url = \"https://h/\"").contains("rest.listen"));
        for bad in ["ftp://h/", "/relative", "https://h/?x=1"] {
            let text = format!("[rest]\nlisten = \"127.0.0.1:1\"\npublic_url = \"{bad}\"");
            assert!(rejected(&text).contains("public_url"), "{bad}");
        }
    }

    #[test]
    fn rest_on_4243_needs_grpc_moved_off_it() {
        // gRPC's default is 127.0.0.1:4243.
        let on_4243 = "[rest]\nlisten = \"127.0.0.1:4243\"";
        let message = rejected(on_4243);
        assert!(
            message.contains("listen (127.0.0.1:4243) and rest.listen (127.0.0.1:4243)")
                && message.contains("move gRPC"),
            "{message}"
        );
        let moved = format!("listen = \"127.0.0.1:4250\"\n{on_4243}");
        let config = Config::from_toml_str(&moved).unwrap();
        assert_eq!(config.rest.unwrap().listen.port(), 4243);
        // The same with gRPC moved by a flag, which wins over the file.
        let overrides = Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 4250))),
            ..Overrides::default()
        };
        assert!(Config::from_toml_with(on_4243, &overrides).is_ok());
        assert!(rejected("health_listen = \"127.0.0.1:9902\"").contains("admin_listen"));
    }

    #[test]
    fn non_loopback_addresses_need_tls() {
        assert!(rejected("listen = \"0.0.0.0:4243\"").contains("TLS is required"));
        assert!(Config::from_toml_str("listen = \"[::1]:4243\"").is_ok());
        let missing = "listen = \"0.0.0.0:1\"\n[tls]\ncert_file = \"/nonexistent\"\nkey_file = \"/x\"\nclient_ca_file = \"/y\"";
        assert!(rejected(missing).contains("not a readable file"));
    }

    #[test]
    fn node_secrets_are_long_and_never_printed() {
        assert!(rejected("[node_api]\nshared_secret = \"short\"").contains("at least 32"));
        let config = Config::from_toml_str(&format!(
            "[node_api]\nshared_secret = \"{}\"",
            "k".repeat(32)
        ))
        .unwrap();
        let secret = config.node_secret.clone().unwrap();
        assert!(secret.matches(&"k".repeat(32)));
        assert!(!secret.matches(&"k".repeat(31)));
        assert!(!format!("{config:?}").contains(&"k".repeat(32)));
    }

    #[test]
    fn each_redis_topology_needs_its_addresses() {
        let redis = "[store]\nbackend = \"redis\"\n";
        assert!(
            rejected(&format!("{redis}topology = \"sentinel\"")).contains("store.sentinel_urls")
        );
        assert!(rejected(&format!("{redis}topology = \"cluster\"")).contains("store.cluster_urls"));
        assert!(
            rejected(&format!(
                "{redis}topology = \"cluster\"\ncluster_urls = [\"http://x:1\"]"
            ))
            .contains("not a usable Redis URL")
        );
        assert!(
            rejected(&format!(
                "{redis}topology = \"sentinel\"\nsentinel_urls = [\"redis://s:26379\"]\nsentinel_master = \" \""
            ))
            .contains("store.sentinel_master")
        );
        assert!(rejected(&format!("{redis}topology = \"ring\"")).contains("unknown variant"));
        assert!(
            rejected(&format!(
                "{redis}topology = \"cluster\"\ncluster_urls = [\"rediss://a:1\", \"redis://b:1\"]"
            ))
            .contains("all rediss:// or all redis://")
        );
        assert!(
            rejected(&format!("{redis}tls_ca_file = \"Cargo.toml\"")).contains("need rediss://")
        );
        let sentinel = Config::from_toml_str(&format!(
            "{redis}topology = \"sentinel\"\nsentinel_urls = [\"redis://s1:26379\", \"redis://s2:26379\"]"
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(sentinel.store.topology, RedisTopology::Sentinel);
        assert_eq!(sentinel.store.sentinel_master, "gatehouse");
        // The memory store ignores the Redis settings.
        assert!(Config::from_toml_str("[store]\ntopology = \"cluster\"").is_ok());
    }
}
