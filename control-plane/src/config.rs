//! The control plane's configuration: one typed, validated struct, read from a TOML file,
//! then overridden by environment variables and command-line flags (in that order of
//! precedence, lowest first). Every key and its default is documented in the README.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::CapPolicy;

/// Everything the control plane needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the gRPC server.
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub tickets: TicketConfig,
    /// At least one; prefixes and cookie names are unique.
    pub virtual_proxies: Vec<VirtualProxyConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// Sessions in this process only: for a single replica (local runs, development).
    Memory,
    /// Sessions in Redis, shared by every replica.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub redis_url: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Approximate number of revocation events kept for reconnecting data-plane nodes.
    pub revocation_stream_max_len: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/".to_owned(),
            key_prefix: "gatehouse".to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            revocation_stream_max_len: 100_000,
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
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            ticket_ttl: Duration::from_secs(60),
            target_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// One virtual proxy, as the control plane enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualProxyConfig {
    /// Lowercase path prefix; "" is the default proxy.
    pub prefix: String,
    /// Name of the session cookie, unique among virtual proxies.
    pub cookie_name: String,
    /// A session ends after this long without activity.
    pub inactivity_timeout: Duration,
    /// A session ends this long after it was created, whatever its activity.
    pub max_lifetime: Duration,
    /// Parallel sessions one user may hold in this virtual proxy.
    pub max_sessions_per_user: u32,
    /// What happens to a new session beyond `max_sessions_per_user`.
    pub session_cap_policy: CapPolicy,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: SocketAddr,
    store: StoreConfig,
    tickets: TicketConfig,
    virtual_proxies: Vec<FileVirtualProxy>,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4243)),
            store: StoreConfig::default(),
            tickets: TicketConfig::default(),
            virtual_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVirtualProxy {
    prefix: String,
    cookie_name: Option<String>,
    #[serde(default = "default_inactivity_timeout", with = "humantime_serde")]
    inactivity_timeout: Duration,
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    max_lifetime: Duration,
    #[serde(default = "default_max_sessions_per_user")]
    max_sessions_per_user: u32,
    #[serde(default)]
    session_cap_policy: CapPolicy,
}

fn default_inactivity_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(12 * 60 * 60)
}

fn default_max_sessions_per_user() -> u32 {
    5
}

/// Settings given on the command line or in the environment; they win over the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address of the gRPC server [default: 127.0.0.1:4243]
    #[arg(long, env = "GATEHOUSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where sessions live [default: memory]
    #[arg(long, env = "GATEHOUSE_STORE", value_enum)]
    pub store: Option<StoreBackend>,
    /// Redis URL, for `--store redis` [default: redis://127.0.0.1:6379/]
    #[arg(long, env = "GATEHOUSE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// Why the configuration cannot be used; the message is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration is not valid TOML: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `file` (when given), applies `overrides` and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_with(&text, overrides)
    }

    /// Parses and validates a configuration given as TOML text, with no overrides.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, &Overrides::default())
    }

    fn from_toml_with(text: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut file: FileConfig =
            toml::from_str(text).map_err(|error| parse_error(text, &error))?;
        if let Some(listen) = overrides.listen {
            file.listen = listen;
        }
        if let Some(backend) = overrides.store {
            file.store.backend = backend;
        }
        if let Some(url) = &overrides.redis_url {
            file.store.redis_url.clone_from(url);
        }
        Self::validate(file)
    }

    fn validate(file: FileConfig) -> Result<Self, ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if file.store.backend == StoreBackend::Redis
            && let Err(error) = redis::Client::open(file.store.redis_url.as_str())
        {
            // The URL may hold a password: name the problem, never the URL.
            return invalid(format!(
                "store.redis_url is not a usable Redis URL ({:?})",
                error.kind()
            ));
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
        if file.store.connect_timeout.is_zero() || file.store.response_timeout.is_zero() {
            return invalid("store timeouts must be greater than zero".to_owned());
        }
        if file.tickets.ticket_ttl.is_zero() || file.tickets.target_ttl.is_zero() {
            return invalid(
                "tickets.ticket_ttl and tickets.target_ttl must be greater than zero".to_owned(),
            );
        }

        let file_proxies = if file.virtual_proxies.is_empty() {
            vec![FileVirtualProxy {
                prefix: String::new(),
                cookie_name: None,
                inactivity_timeout: default_inactivity_timeout(),
                max_lifetime: default_max_lifetime(),
                max_sessions_per_user: default_max_sessions_per_user(),
                session_cap_policy: CapPolicy::default(),
            }]
        } else {
            file.virtual_proxies
        };
        let mut prefixes = HashSet::new();
        let mut cookie_names = HashSet::new();
        let mut virtual_proxies = Vec::with_capacity(file_proxies.len());
        for proxy in file_proxies {
            let prefix = proxy.prefix;
            if let Err(reason) = validate_prefix(&prefix) {
                return invalid(format!("virtual proxy prefix {prefix:?} {reason}"));
            }
            if !prefixes.insert(prefix.clone()) {
                return invalid(format!("virtual proxy prefix {prefix:?} is defined twice"));
            }
            let cookie_name = proxy
                .cookie_name
                .unwrap_or_else(|| default_cookie_name(&prefix));
            if let Err(reason) = validate_cookie_name(&cookie_name) {
                return invalid(format!(
                    "cookie name {cookie_name:?} of virtual proxy {prefix:?} {reason}"
                ));
            }
            // Browsers treat cookie names case-sensitively, but intermediaries do not always:
            // two names differing only in case would be one cookie to some of them.
            if !cookie_names.insert(cookie_name.to_ascii_lowercase()) {
                return invalid(format!(
                    "cookie name {cookie_name:?} is used by two virtual proxies"
                ));
            }
            if proxy.inactivity_timeout < Duration::from_secs(1)
                || proxy.max_lifetime < Duration::from_secs(1)
            {
                return invalid(format!(
                    "virtual proxy {prefix:?}: inactivity_timeout and max_lifetime must be at least 1s"
                ));
            }
            if proxy.max_sessions_per_user == 0 {
                return invalid(format!(
                    "virtual proxy {prefix:?}: max_sessions_per_user must be at least 1"
                ));
            }
            virtual_proxies.push(VirtualProxyConfig {
                prefix,
                cookie_name,
                inactivity_timeout: proxy.inactivity_timeout,
                max_lifetime: proxy.max_lifetime,
                max_sessions_per_user: proxy.max_sessions_per_user,
                session_cap_policy: proxy.session_cap_policy,
            });
        }
        Ok(Self {
            listen: file.listen,
            store: file.store,
            tickets: file.tickets,
            virtual_proxies,
        })
    }
}

/// QPS's convention, so existing clients that set the cookie themselves keep working.
fn default_cookie_name(prefix: &str) -> String {
    if prefix.is_empty() {
        "X-Qlik-Session".to_owned()
    } else {
        format!("X-Qlik-Session-{prefix}")
    }
}

/// Prefix rules as in QPS: lowercase `a-z 0-9 - . _ ~`, no slashes.
pub fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.len() > 64 {
        return Err("is longer than 64 characters");
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~".contains(c))
    {
        return Err("may only hold lowercase letters, digits, '-', '.', '_' and '~'");
    }
    Ok(())
}

/// A cookie name is an HTTP token (RFC 6265 / RFC 9110 `tchar`).
fn validate_cookie_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1 to 128 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    {
        return Err("may only hold letters, digits and !#$%&'*+-.^_`|~");
    }
    Ok(())
}

/// toml's messages span several lines with a source excerpt; the operator gets one line.
fn parse_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            ConfigError::Parse(format!("line {line}: {}", message.trim()))
        }
        None => ConfigError::Parse(message.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bad_prefixes_and_duplicates_are_rejected() {
        assert!(rejected("[[virtual_proxies]]\nprefix = \"Sales\"").contains("lowercase"));
        assert!(rejected("[[virtual_proxies]]\nprefix = \"a/b\"").contains("lowercase"));
        assert!(
            rejected("[[virtual_proxies]]\nprefix = \"a\"\n[[virtual_proxies]]\nprefix = \"a\"")
                .contains("defined twice")
        );
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
            store: Some(StoreBackend::Redis),
            redis_url: Some("redis://127.0.0.1:1/".to_owned()),
        };
        let config = Config::from_toml_with("listen = \"127.0.0.1:8\"", &overrides)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.listen.port(), 9);
        assert_eq!(config.store.backend, StoreBackend::Redis);
        assert_eq!(config.store.redis_url, "redis://127.0.0.1:1/");
    }
}
