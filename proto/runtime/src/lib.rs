//! Code both Gatehouse binaries share and must run the same way: one hardened HTTP serve
//! loop for every listener, one logging set-up (text or JSON, `/log-level`, OTLP export), one
//! rule for who may use an admin port and one rendering of its refusals and `/log-level`
//! answers, process set-up, `GATEHOUSE__*` / `--set` configuration overrides, the session
//! token a JWT maps to (the control plane stores it, nodes look it up), the digest of a token
//! in a node's negative cache (the control plane names one to nodes), and the injectable
//! clock TTL logic reads.

pub mod admin_access;
pub mod admin_port;
pub mod clock;
pub mod http_server;
pub mod idle;
pub mod jwt_session;
pub mod logging;
pub mod process;
pub mod settings;
pub mod unknown_token;

/// Whether two secrets are equal, in time that depends only on their lengths, so response
/// timing does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}
