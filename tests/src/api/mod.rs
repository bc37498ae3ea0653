//! What a program calling the control plane sees: the Session, Authentication (tickets) and
//! Personal gRPC APIs (with the user's own sessions, also on nodes), the QPS-compatible REST surface, server reflection, the status of every
//! failure, TLS and who may call what, and the public URLs the planes build.

mod error_statuses;
mod own_sessions;
mod personal_api;
mod public_origins;
mod qps_rest;
mod reflection;
mod session_api;
mod ticket_login;
pub(crate) mod tls;
