//! End-to-end tests of Gatehouse. The harness starts a private `redis-server`, the control
//! plane and data-plane nodes on ephemeral loopback ports; tests call them as a user's program
//! or browser would, and look at what Redis holds.
//!
//! Tests are grouped in folders by what a user sees (`tests/README.md` maps behaviours to
//! files). They live in this one crate (one test binary) so the suite links once.

// Test code: a failed expectation is the test failing, so panicking is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fuzz_entry;
pub mod harness;

#[cfg(test)]
mod api;
#[cfg(test)]
mod auth_methods;
#[cfg(test)]
mod browser;
#[cfg(test)]
mod examples;
#[cfg(test)]
mod forward_auth;
#[cfg(test)]
mod fuzz_regressions;
#[cfg(test)]
mod operations;
#[cfg(test)]
mod reliability;
#[cfg(test)]
mod store_conformance;
