//! What an operator sees: the admin ports, graceful shutdown, metrics, configuration reload,
//! the configuration reference covering every key, audit events and their sinks, and exported
//! traces.

mod admin_ports;
mod audit_events;
mod audit_login_methods;
mod audit_sinks;
mod config_reload;
mod configuration_reference;
mod graceful_shutdown;
mod kubernetes_rollouts;
mod metrics;
mod tracing_export;
