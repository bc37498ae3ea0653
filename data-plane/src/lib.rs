//! A Gatehouse data-plane node: stateless, any node serves any request. It validates the
//! session cookie from a local cache (a miss costs one call to the control plane), runs the
//! QPS login flows (ticket, header, anonymous), and proxies HTTP and WebSocket traffic to the
//! virtual proxy's upstream pool. Revocations arrive over a `Watch` stream and end cached
//! sessions and open WebSockets at once.

pub mod admin;
pub mod assertion;
pub mod assertion_slot;
pub mod auth;
pub mod background;
pub mod body;
pub mod cache;
pub mod config;
pub mod control;
pub mod endpoints;
pub mod flood;
pub mod forward_auth;
pub mod http1;
pub mod identity_headers;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod refusal;
pub mod request;
pub mod respond;
pub mod router;
pub mod server;
pub mod sockets;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod virtual_proxy;

pub use config::Config;
pub use server::BoundNode;
