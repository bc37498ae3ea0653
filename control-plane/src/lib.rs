//! The Gatehouse control plane: it owns every session, ticket and login target (in Redis, or
//! in memory for a single replica) and serves the Authentication, Session and Personal APIs
//! to clients and the node API to data-plane nodes, over gRPC.

pub mod admin;
pub use gatehouse_runtime::admin_access;
pub mod api;
pub mod assertion;
pub mod audit;
pub mod authority;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod jwt;
pub use gatehouse_runtime::jwt_session;
pub mod kerberos;
pub use gatehouse_runtime::logging;
pub mod metrics;
pub mod oidc;
pub mod outage;
pub mod outbound;
pub use gatehouse_runtime::process;
pub mod rest;
pub mod saml;
pub mod server;
pub mod store;
pub mod tokens;
pub mod virtual_proxies;

pub use config::Config;
pub use server::BoundServer;
