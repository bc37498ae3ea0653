//! What every end-to-end test needs: real processes on ephemeral loopback ports.

pub mod control_plane;
pub mod eventually;
pub mod redis_server;

pub use control_plane::ControlPlane;
pub use eventually::eventually;
pub use redis_server::RedisServer;
