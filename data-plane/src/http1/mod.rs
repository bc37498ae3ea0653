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

use std::pin::Pin;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

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

/// What a connection's loop waits on while it reads a head: one timer and one wait for the
/// node's stop, made once for the connection and set again for each wait. Made anew for each
/// request, a timer was registered and removed again and a waiter put on the stop signal's
/// list and taken off every time (2 % of a forward-auth check); a kept timer whose deadline
/// moves later is only re-armed, and the waiter stays where it is.
#[derive(Debug)]
pub struct HeadWait<'a> {
    timer: Pin<Box<Sleep>>,
    stopped: Pin<Box<WaitForCancellationFuture<'a>>>,
}

impl<'a> HeadWait<'a> {
    pub fn new(stop: &'a CancellationToken, limits: &LimitsConfig) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            stopped: Box::pin(stop.cancelled()),
        }
    }
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
    wait: &mut HeadWait<'_>,
) -> bool {
    if !read.is_empty() && head_started.is_none() {
        *head_started = Some(Instant::now());
    }
    let deadline = match head_started {
        Some(started) => *started + limits.header_read_timeout,
        None => Instant::now() + limits.idle_timeout,
    };
    wait.timer.as_mut().reset(deadline.into());
    read.reserve(4096);
    // As `timeout_at` did: bytes that are there win over a deadline that has passed too.
    let more = tokio::select! {
        biased;
        () = wait.stopped.as_mut(), if read.is_empty() => return false,
        more = stream.read_buf(read) => more,
        () = wait.timer.as_mut() => return false,
    };
    matches!(more, Ok(read) if read > 0)
}
