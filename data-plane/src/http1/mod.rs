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

use bytes::BytesMut;

pub use self::replayed::Replayed;

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
