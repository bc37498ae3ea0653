//! Logging: plain text, or JSON lines with `GATEHOUSE_LOG_FORMAT=json`; the filter from
//! `GATEHOUSE_LOG` (default `info`), changeable while running through the admin port.

use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: Arc<reload::Handle<EnvFilter, Registry>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

impl LogControl {
    /// Installs the process's logger; call once, first thing in `main`.
    pub fn install() -> Self {
        let filter =
            EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let (filter, handle) = reload::Layer::new(filter);
        let json = std::env::var("GATEHOUSE_LOG_FORMAT")
            .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
        let registry = tracing_subscriber::registry().with(filter);
        if json {
            registry
                .with(tracing_subscriber::fmt::layer().json())
                .init();
        } else {
            registry.with(tracing_subscriber::fmt::layer()).init();
        }
        Self {
            handle: Arc::new(handle),
        }
    }

    /// The filter in force, as text.
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }

    /// Puts a new filter (`tracing` directives such as `info,gatehouse::access=off`) in force.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives.trim()).map_err(|error| error.to_string())?;
        self.handle
            .reload(filter)
            .map_err(|error| error.to_string())
    }
}
