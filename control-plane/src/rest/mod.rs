//! The QPS-compatible REST surface: `/qps/{prefix}/ticket`, the session and user endpoints and
//! `/qps/error`, as existing QPS authentication modules and portals call them (JSON bodies,
//! the Xrfkey check, client certificates). It is a translation layer only: every call lands in
//! the same [`Authority`](crate::authority::Authority) the gRPC services use, so both surfaces
//! share one set of rules, and deletions reach nodes through the same revocation stream.

mod handlers;
// What a client sends (bodies, paths, the Xrfkey) is read in these three: public so that the
// fuzz targets (`tests/src/fuzz_entry.rs`) reach the parsers the server runs.
pub mod json;
mod reply;
pub mod routes;
mod server;
pub mod xrfkey;

pub use server::{BoundRest, RestStartError};
