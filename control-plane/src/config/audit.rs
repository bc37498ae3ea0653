//! `[audit]`: where audit events go besides the log, and how much a slow sink may hold.

use std::path::PathBuf;

use serde::Deserialize;

use super::{StoreBackend, StoreConfig};

/// Where audit events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Write each event as a JSON line on the log target `gatehouse::audit`.
    pub log: bool,
    /// Append each event to this Redis stream of the store's Redis (`store.backend =
    /// "redis"` only).
    pub redis_stream: Option<String>,
    /// About how many entries the stream keeps (`XADD MAXLEN ~`).
    pub redis_stream_max_len: u64,
    /// Export each event as an OTLP log record to this OTLP/gRPC collector.
    pub otlp_endpoint: Option<String>,
    /// The CA an `https://` collector's certificate chains to; the system roots otherwise.
    pub otlp_ca_file: Option<PathBuf>,
    /// Events each sink holds while it is slow or down; more are dropped (and counted).
    pub sink_queue_len: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            log: true,
            redis_stream: None,
            redis_stream_max_len: 1_000_000,
            otlp_endpoint: None,
            otlp_ca_file: None,
            sink_queue_len: 10_000,
        }
    }
}

/// Most events a sink's queue may hold: at a few hundred bytes each, about 300 MB.
const MAX_SINK_QUEUE_LEN: usize = 1_000_000;

impl AuditConfig {
    pub(super) fn validate(&self, store: &StoreConfig) -> Result<(), String> {
        if let Some(key) = &self.redis_stream {
            if store.backend != StoreBackend::Redis {
                return Err(
                    "audit.redis_stream needs store.backend = \"redis\": the memory store has no Redis to write the stream to"
                        .to_owned(),
                );
            }
            if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(
                    "audit.redis_stream must be a Redis key without spaces or control characters"
                        .to_owned(),
                );
            }
            // Under the store's prefix only `<prefix>:audit...` is free: every other name
            // there may be one of the store's own keys.
            let prefix = format!("{}:", store.key_prefix);
            if let Some(rest) = key.strip_prefix(&prefix)
                && rest != "audit"
                && !rest.starts_with("audit:")
            {
                return Err(format!(
                    "audit.redis_stream {key:?} is among the store's own keys (under {prefix:?}); use \"{prefix}audit\" or a name outside that prefix"
                ));
            }
            if self.redis_stream_max_len == 0 {
                return Err("audit.redis_stream_max_len must be at least 1".to_owned());
            }
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let parsed: http::Uri = endpoint.parse().map_err(|_| {
                "audit.otlp_endpoint is not a URL (e.g. http://otel-collector:4317)".to_owned()
            })?;
            if !matches!(parsed.scheme_str(), Some("http" | "https"))
                || parsed.host().is_none_or(str::is_empty)
            {
                return Err(
                    "audit.otlp_endpoint must be an http:// or https:// URL of an OTLP/gRPC collector"
                        .to_owned(),
                );
            }
        }
        if let Some(path) = &self.otlp_ca_file
            && !path.is_file()
        {
            return Err(format!(
                "audit.otlp_ca_file: {} is not a readable file",
                path.display()
            ));
        }
        if self.sink_queue_len == 0 || self.sink_queue_len > MAX_SINK_QUEUE_LEN {
            return Err(format!(
                "audit.sink_queue_len must be between 1 and {MAX_SINK_QUEUE_LEN}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn rejected(text: &str) -> String {
        match Config::from_toml_str(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(error) => error.to_string(),
        }
    }

    const REDIS: &str = "[store]\nbackend = \"redis\"\n";

    #[test]
    fn sinks_are_off_by_default_and_a_stream_needs_the_redis_store() {
        let config = Config::from_toml_str("").unwrap();
        assert!(config.audit.log);
        assert!(config.audit.redis_stream.is_none() && config.audit.otlp_endpoint.is_none());
        assert_eq!(config.audit.redis_stream_max_len, 1_000_000);
        assert_eq!(config.audit.sink_queue_len, 10_000);
        let message = rejected("[audit]\nredis_stream = \"gatehouse:audit\"\n");
        assert!(
            message.contains("audit.redis_stream needs store.backend = \"redis\""),
            "{message}"
        );
        let config = Config::from_toml_str(&format!(
            "{REDIS}[audit]\nredis_stream = \"gatehouse:audit\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.audit.redis_stream.as_deref(),
            Some("gatehouse:audit")
        );
    }

    #[test]
    fn a_stream_cannot_take_one_of_the_stores_own_keys() {
        for taken in [
            "gatehouse:revocations",
            "gatehouse:seal-keys",
            "gatehouse:token:x",
        ] {
            let message = rejected(&format!("{REDIS}[audit]\nredis_stream = \"{taken}\"\n"));
            assert!(
                message.contains("among the store's own keys"),
                "{taken}: {message}"
            );
        }
        for free in ["gatehouse:audit:eu", "audit", "other:gatehouse:revocations"] {
            assert!(
                Config::from_toml_str(&format!("{REDIS}[audit]\nredis_stream = \"{free}\"\n"))
                    .is_ok(),
                "{free}"
            );
        }
        assert!(rejected(&format!("{REDIS}[audit]\nredis_stream = \"a b\"\n")).contains("spaces"));
        assert!(
            rejected(&format!(
                "{REDIS}[audit]\nredis_stream = \"audit\"\nredis_stream_max_len = 0\n"
            ))
            .contains("redis_stream_max_len")
        );
    }

    #[test]
    fn the_collector_is_an_http_or_https_url_and_the_queue_is_bounded() {
        for bad in ["collector:4317", "ftp://c:1", "http://"] {
            let message = rejected(&format!("[audit]\notlp_endpoint = \"{bad}\"\n"));
            assert!(message.contains("audit.otlp_endpoint"), "{bad}: {message}");
        }
        assert!(
            Config::from_toml_str("[audit]\notlp_endpoint = \"https://c.example:4317\"\n").is_ok()
        );
        assert!(rejected("[audit]\nsink_queue_len = 0\n").contains("sink_queue_len"));
        assert!(rejected("[audit]\notlp_ca_file = \"/nonexistent\"\n").contains("otlp_ca_file"));
    }
}
