//! Loopback addresses on ports nobody listens on yet.

use std::net::{SocketAddr, TcpListener};

/// A loopback port nobody listens on right now. Another process could take it before the
/// child binds it; the child would then fail to start, and the run fails with that error.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
