//! A Gatehouse data-plane node: stateless, any node serves any request. It validates the
//! session cookie from a local cache (a miss costs one call to the control plane), runs the
//! QPS login flows (ticket, header, anonymous), and proxies HTTP and WebSocket traffic to the
//! virtual proxy's upstream pool. Revocations arrive over a `Watch` stream and end cached
//! sessions and open WebSockets at once.

pub mod admin;
pub use gatehouse_runtime::admin_access;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod control;
pub use gatehouse_runtime::logging;
pub mod metrics;
pub mod origin;
pub mod personal;
pub use gatehouse_runtime::process;
pub mod proxy;
pub mod respond;
pub mod server;
pub use gatehouse_runtime::settings;
pub mod sockets;
pub mod state;
pub mod tls;
pub mod upstream_tls;
pub mod vproxy;

pub use config::Config;
pub use server::BoundNode;
