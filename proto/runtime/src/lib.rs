//! Code both Gatehouse binaries share and must run the same way: one logging set-up (text or
//! JSON, `/log-level`, OTLP export), one rule for who may use an admin port, process set-up,
//! `GATEHOUSE__*` / `--set` configuration overrides, and the session token a JWT maps to
//! (the control plane stores it, nodes look it up).

pub mod admin_access;
pub mod jwt_session;
pub mod logging;
pub mod process;
pub mod settings;
