//! What every end-to-end test needs: real processes on ephemeral loopback ports.

#[cfg(test)]
pub mod audit;
pub mod auth_module;
pub mod browser;
#[cfg(test)]
pub mod captured_log;
pub mod client;
pub mod control_plane;
pub mod data_plane;
pub mod eventually;
#[cfg(test)]
pub mod fixtures;
pub mod ingress;
pub mod kdc;
pub mod load;
pub mod oidc_provider;
/// The OpenID provider harness checked on its own, without Gatehouse.
#[cfg(test)]
mod oidc_provider_checks;
pub mod proc_stats;
pub mod processes;
/// The real binaries the harness starts, checked on their own.
#[cfg(test)]
mod processes_checks;
pub mod profile;
pub mod redis_server;
pub mod redis_topologies;
pub mod relay;
pub mod saml_idp;
pub mod upstream;
pub mod web_browser;

pub use control_plane::ControlPlane;
pub use data_plane::DataPlaneNode;
pub use eventually::eventually;
pub use redis_server::RedisServer;
pub use upstream::EchoUpstream;
