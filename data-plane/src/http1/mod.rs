//! The node's own HTTP/1.1 engine for the common case: a plain HTTP/1.1 request to a plain
//! HTTP/1.1 upstream. hyper frames everything else. Each request head is parsed once
//! (`request_head`, with `httparse`, the parser hyper uses), the proxy's phases decide on it
//! as on any request, the upstream head goes out in one write (`write`, `exchange`, over the
//! nodes' own connections, `crate::upstream::plain`), the response head is read once
//! (`response_head`) and its body relayed as it is framed (`relay`).
//!
//! What a client or an upstream sees is what hyper's path would have sent, byte for byte
//! apart from the `Date` and the size of chunks: the heads are written by hyper's rules
//! (`write`), framing is decided by hyper's rules, and a differential test holds the two
//! paths to it (`tests/src/browser/fast_http1.rs`).

mod date;
pub mod exchange;
pub mod relay;
pub mod request_head;
pub mod response_head;
pub mod serve;
pub mod write;
