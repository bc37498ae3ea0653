//! The test kit: what the end-to-end tests (`gatehouse-tests`) and the benchmark driver
//! (`gatehouse-bench`) both need, written once. Real processes on ephemeral loopback ports,
//! each killed when its guard is dropped (`redis-server`, `control-plane`, `data-plane`), an
//! echo upstream, a kept-alive HTTP client, and what a process holds read from `/proc` and
//! its `/metrics`.
//!
//! Everything answers `Result`: the benchmark driver reports a failure and exits, the test
//! harness turns it into a panic with the same message.

pub mod binaries;
pub mod http_client;
pub mod ports;
pub mod proc_stats;
pub mod process;
pub mod redis_server;
pub mod upstream;
pub mod wait;

pub use binaries::{ControlPlaneProcess, DataPlaneProcess, binary};
pub use ports::{free_port, loopback};
pub use process::Process;
pub use redis_server::RedisServer;
pub use upstream::EchoUpstream;
pub use wait::wait_for;
