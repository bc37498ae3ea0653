//! The node's own HTTP/1.1 engine for the common case: a plain HTTP/1.1 request to a plain
//! HTTP/1.1 upstream. hyper frames everything else. Each request head is parsed once
//! (`request_head`, with `httparse`, the parser hyper uses), the proxy's phases decide on it
//! as on any request, the upstream head goes out in one write (`write`, `exchange`, over the
//! nodes' own connections, `crate::upstream::plain`), the response head is read once
//! (`response_head`) and its body relayed as it is framed (`relay`). The forward-auth
//! listener's loop (`forward_auth::fast_http1`) shares its head scans, `Date` and hand-over.
//!
//! What a client or an upstream sees is what hyper's path would have sent, byte for byte
//! apart from the `Date` and the size of chunks: the heads are written by hyper's rules
//! (`write`), framing is decided by hyper's rules, and a differential test holds the two
//! paths to it (`tests/src/browser/fast_http1.rs`).

pub(crate) mod date;
pub mod exchange;
pub mod relay;
mod replayed;
pub mod request_head;
pub mod response_head;
pub mod serve;
pub mod write;

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_util::sync::CancellationToken;

pub use self::replayed::Replayed;
use crate::config::LimitsConfig;

/// What one of the node's own HTTP/1 loops (this engine's, and the forward-auth listener's)
/// ended a connection with.
#[derive(Debug)]
pub enum Ended {
    /// Closed: by the client, a timeout, `Connection: close`, an error, or the node's
    /// shutdown.
    Closed,
    /// A request the loop does not serve: hyper serves the connection from `read`.
    HandedOver { read: BytesMut },
}

/// Reads more of a request head into `read`, for either loop. The first request's head is
/// due `header_read_timeout` after the connection opened, each later one that long after
/// its first byte (`head_started`, set here when that byte arrives); between requests, the
/// wait is `idle_timeout`, and the node's stop ends it. False when the connection is to close
/// (its end, an error, a timeout, the stop).
pub async fn read_more_of_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    read: &mut BytesMut,
    head_started: &mut Option<Instant>,
    limits: &LimitsConfig,
    stop: &CancellationToken,
) -> bool {
    if !read.is_empty() && head_started.is_none() {
        *head_started = Some(Instant::now());
    }
    let deadline = match head_started {
        Some(started) => *started + limits.header_read_timeout,
        None => Instant::now() + limits.idle_timeout,
    };
    read.reserve(4096);
    let more = tokio::select! {
        () = stop.cancelled(), if read.is_empty() => return false,
        more = tokio::time::timeout_at(deadline.into(), stream.read_buf(read)) => more,
    };
    matches!(more, Ok(Ok(read)) if read > 0)
}
