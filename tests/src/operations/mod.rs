//! What an operator sees: the admin ports, graceful shutdown, metrics, configuration reload
//! and exported traces.

mod admin_ports;
mod config_reload;
mod graceful_shutdown;
mod metrics;
mod tracing_export;
