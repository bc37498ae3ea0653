//! The one body type of every response the node sends and every request it forwards, and
//! the constructors of the bodies the node writes itself. A leaf: it imports nothing of the
//! crate, so the request path, the node's own endpoints and the upstream pool can all use it
//! without depending on each other.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};

/// A boxed body: upstream responses stream through it, the node's own answers are `Full`.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with nothing in it. (`Empty` takes no room, so boxing it allocates nothing, where
/// an empty `Full` cost an allocation per answer; both say they are 0 bytes long.)
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}
