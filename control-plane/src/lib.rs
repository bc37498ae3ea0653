//! The Gatehouse control plane: it owns every session, ticket and login target (in Redis, or
//! in memory for a single replica) and serves the Authentication, Session and Personal APIs
//! to clients and the node API to data-plane nodes, over gRPC.

pub mod admin;
pub mod admin_access;
pub mod api;
pub mod authority;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod jwt;
pub mod jwt_session;
pub mod kerberos;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod outbound;
pub mod process;
pub mod rest;
pub mod server;
pub mod store;
pub mod tokens;
pub mod virtual_proxies;

pub use config::Config;
pub use server::BoundServer;
