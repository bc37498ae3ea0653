//! A Gatehouse data-plane node: stateless, any node serves any request. It validates the
//! session cookie from a local cache (a miss costs one call to the control plane), runs the
//! QPS login flows (ticket, header, anonymous), and proxies HTTP and WebSocket traffic to the
//! virtual proxy's upstream pool. Revocations arrive over a `Watch` stream and end cached
//! sessions and open WebSockets at once.

pub mod admin;
// One source with the control plane: both planes guard their admin ports alike.
#[path = "../../control-plane/src/admin_access.rs"]
pub mod admin_access;
pub mod auth;
pub mod cache;
pub mod config;
pub mod control;
pub mod idle;
// One source with the control plane: both binaries log, trace and read settings alike.
#[path = "../../control-plane/src/logging.rs"]
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod personal;
#[path = "../../control-plane/src/process.rs"]
pub mod process;
pub mod proxy;
pub mod respond;
pub mod server;
#[path = "../../control-plane/src/config/settings.rs"]
pub mod settings;
pub mod sockets;
pub mod state;
pub mod tls;
pub mod upstream_tls;
pub mod vproxy;

pub use config::Config;
pub use server::BoundNode;
