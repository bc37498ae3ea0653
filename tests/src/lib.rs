//! End-to-end tests of Gatehouse. The harness starts a private `redis-server` and the control
//! plane on ephemeral loopback ports; tests call it through the generated gRPC clients, as a
//! user's program would, and look at what Redis holds.
//!
//! Test modules are grouped by the behaviour a user notices. They live in this one crate (one
//! test binary) so the suite links once.

// Test code: a failed expectation is the test failing, so panicking is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fuzz_entry;
pub mod harness;

#[cfg(test)]
mod admin_ports;
#[cfg(test)]
mod auth_jwt;
#[cfg(test)]
mod auth_kerberos;
#[cfg(test)]
mod auth_oidc;

#[cfg(test)]
mod data_plane_activity;
#[cfg(test)]
mod data_plane_balancing;
#[cfg(test)]
mod data_plane_fixtures;
#[cfg(test)]
mod data_plane_identity;
#[cfg(test)]
mod data_plane_login;
#[cfg(test)]
mod data_plane_options;
#[cfg(test)]
mod data_plane_outage;
#[cfg(test)]
mod data_plane_personal;
#[cfg(test)]
mod data_plane_revocation;
#[cfg(test)]
mod data_plane_websocket;
#[cfg(test)]
mod data_plane_websocket_limits;
#[cfg(test)]
mod errors;
#[cfg(test)]
mod example_auth_module;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod fuzz_regressions;
#[cfg(test)]
mod hostile_input;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod observability;
#[cfg(test)]
mod oidc_provider_harness;
#[cfg(test)]
mod personal;
#[cfg(test)]
mod public_origins;
#[cfg(test)]
mod python_example;
#[cfg(test)]
mod qps_rest;
#[cfg(test)]
mod reflection;
#[cfg(test)]
mod reliability_control_plane;
#[cfg(test)]
mod reliability_data_plane;
#[cfg(test)]
mod reliability_fixtures;
#[cfg(test)]
mod reliability_hostile;
#[cfg(test)]
mod reliability_partition;
#[cfg(test)]
mod reliability_redis_outage;
#[cfg(test)]
mod reliability_redis_topologies;
#[cfg(test)]
mod reliability_soak;
#[cfg(test)]
mod reload;
#[cfg(test)]
mod request_hygiene;
#[cfg(test)]
mod sessions;
#[cfg(test)]
mod store_conformance;
#[cfg(test)]
mod tickets;
#[cfg(test)]
mod tls;
#[cfg(test)]
mod tracing_export;
