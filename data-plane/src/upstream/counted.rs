//! The body of an upstream response, from either client, holding its request's place in
//! its node's in-flight count until the body is read or dropped: least-outstanding
//! balancing counts a long download as load for as long as it streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::connections::InlineBody;
use super::member::InFlight;

/// A response body from either client.
#[derive(Debug)]
// The inline body carries its connection and is much the larger; boxing it would cost an
// allocation per request to save bytes in a value that lives only as long as a response.
#[allow(clippy::large_enum_variant)]
pub(super) enum UpstreamBody {
    Inline(InlineBody),
    Pooled(Incoming),
}

/// A response body that keeps its request counted until it has been read.
#[derive(Debug)]
pub struct CountedBody {
    inner: UpstreamBody,
    _in_flight: InFlight,
}

impl CountedBody {
    pub(super) fn new(inner: UpstreamBody, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.inner {
            UpstreamBody::Inline(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Pooled(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            UpstreamBody::Inline(body) => body.is_end_stream(),
            UpstreamBody::Pooled(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            UpstreamBody::Inline(body) => body.size_hint(),
            UpstreamBody::Pooled(body) => body.size_hint(),
        }
    }
}
