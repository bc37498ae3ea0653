//! The proxy listener's own HTTP/1.1 loop: each request head is parsed once, the same phases
//! as hyper's path decide on it (`proxy::route`, identification and admission, the upstream
//! rewrite, the last phase), the upstream head goes out in one write, the response head is
//! read once, and the body is relayed as it is framed.
//!
//! A request is served here only if everything about it is the common case: a plain HTTP/1.1
//! head with at most a `Content-Length` body, for a virtual proxy whose upstreams speak plain
//! HTTP/1.1, not for one of the node's own endpoints, not an upgrade. The first request that
//! is anything else is handed to hyper, before any phase acted on it, with every byte read,
//! and hyper serves the rest of the connection: the two paths never both frame one byte.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::exchange::{PlainAnswer, PlainAttempt};
use super::relay::{Dechunk, Decoding, Relay};
use super::request_head::{self, Head, Parsed};
use super::response_head::Framing;
use super::write::{self, BodyLength};
use super::{Ended, HeadWait, read_more_of_head};
use crate::auth::identify::{Identified, TicketLanding};
use crate::body::ProxyBody;
use crate::config::LimitsConfig;
use crate::endpoints;
use crate::proxy::{self, Finish, Route, Routed, forward, headers, rewrite};
use crate::refusal::Refusal;
use crate::request::admit::{self, Admitted};
use crate::request::context::{Client, RequestCtx};
use crate::state::NodeState;
use crate::upstream::Answered;

/// What comes after one request.
enum Next {
    Continue,
    Close,
    HandOver,
}

/// One client connection of the proxy listener.
#[derive(Debug)]
pub struct Connection<'a> {
    pub state: &'a Arc<NodeState>,
    pub client: Client,
    pub limits: &'a LimitsConfig,
    pub stop: &'a CancellationToken,
}

impl Connection<'_> {
    /// Serves the requests on `stream` until it closes or a request needs hyper.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> Ended {
        let mut read = BytesMut::with_capacity(8 * 1024);
        let mut wait = HeadWait::new(self.stop, self.limits);
        // The first request's head is due `header_read_timeout` after the connection opened,
        // each later one that long after its first byte; between requests, `idle_timeout`.
        let mut head_started = Some(Instant::now());
        // How much of `read` is known to hold no end of a head: a head sent a byte at a time
        // is parsed once it is complete, not once per byte.
        let mut searched = 0;
        loop {
            let parsed = if request_head::may_end_a_head(&read, searched) {
                request_head::parse(&read, true)
            } else {
                Parsed::Partial
            };
            searched = read.len();
            let head = match parsed {
                // hyper answers a head over the limit (431); one read may bring it whole.
                Parsed::Complete(head) if head.length > self.limits.max_header_bytes => {
                    return self.hand_over(read);
                }
                Parsed::Complete(head) => head,
                Parsed::NotHere => return self.hand_over(read),
                Parsed::Partial if read.len() >= self.limits.max_header_bytes => {
                    return self.hand_over(read);
                }
                Parsed::Partial => {
                    let limits = self.limits;
                    if read_more_of_head(stream, &mut read, &mut head_started, limits, &mut wait)
                        .await
                    {
                        continue;
                    }
                    return Ended::Closed;
                }
            };
            searched = 0;
            head_started = None;
            match self.one(stream, &mut read, head).await {
                Next::Continue => self.state.metrics.fast_http1_request(),
                Next::Close => {
                    self.state.metrics.fast_http1_request();
                    let _ = stream.shutdown().await;
                    return Ended::Closed;
                }
                Next::HandOver => return self.hand_over(read),
            }
        }
    }

    fn hand_over(&self, read: BytesMut) -> Ended {
        self.state.metrics.fast_http1_handover();
        Ended::HandedOver { read }
    }

    /// One request, in its span when it has one.
    async fn one<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        read: &mut BytesMut,
        head: Head,
    ) -> Next {
        use tracing::Instrument as _;
        let mut client = self.client;
        match proxy::request_span(&head.request, &mut client) {
            Some(span) => {
                self.request(Exchange { stream, read, head }, client)
                    .instrument(span)
                    .await
            }
            None => self.request(Exchange { stream, read, head }, client).await,
        }
    }

    /// The phases, in hyper's path's order (`proxy::handle`).
    async fn request<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        exchange: Exchange<'_, S>,
        client: Client,
    ) -> Next {
        let Exchange { stream, read, head } = exchange;
        let Head {
            mut request,
            length,
            close,
            body_length,
        } = head;
        let state = &**self.state;
        let method = request.method().clone();
        let reply = |read: &mut BytesMut| Reply {
            method: method.clone(),
            close,
            body_length: unread_body(read, body_length),
        };
        let Routed { ctx, finish } = match proxy::route(state, &mut request, client) {
            Route::Answered(response) => {
                read.advance(length);
                let reply = reply(read);
                return self.answer(stream, response, reply).await;
            }
            Route::Proxied(routed) => routed,
        };
        let ctx = match ctx {
            Ok(ctx) => ctx,
            Err(refusal) => {
                read.advance(length);
                let reply = reply(read);
                return self.refuse(stream, (refusal, None), &finish, reply).await;
            }
        };
        if endpoints::find(&ctx).is_some()
            || ctx.websocket
            || !ctx.proxy.upstream.speaks_plain_http1()
        {
            return Next::HandOver;
        }
        read.advance(length);
        let (mut parts, ()) = request.into_parts();
        let admitted =
            admit::identify_and_admit(state, &ctx, &parts, TicketLanding::Redirect).await;
        let identified = match admitted {
            Ok(Admitted::User(identified)) => Some(identified),
            Ok(Admitted::Public) => None,
            Err(refusal) => {
                let reply = reply(read);
                return self.refuse(stream, (refusal, None), &finish, reply).await;
            }
        };
        rewrite::for_upstream(state, &ctx, &mut parts, identified.as_ref());
        keep_body_length(&mut parts.headers, body_length);
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str());
        // Hygiene refuses an HTTP/1.1 request without a Host, but the client's `Connection`
        // header may have named it, and it went with the hop-by-hop headers.
        let host_missing = !parts.headers.contains_key(HOST);
        let mut upstream_head = Vec::with_capacity(1024);
        write::request_head(&mut upstream_head, &parts.method, target, &parts.headers);
        let affinity = identified
            .as_ref()
            .map(|identified| identified.user.session.handle.clone());
        let mut attempt = PlainAttempt::new(
            upstream_head,
            &parts.method,
            (&mut *stream, &mut *read),
            body_length,
            (
                ctx.proxy.upstream.settings().connect_timeout,
                self.limits.idle_timeout,
            ),
        );
        if host_missing {
            attempt.name_the_node();
        }
        let sent = Instant::now();
        let answered = ctx
            .proxy
            .upstream
            .send_plain(&mut attempt, affinity.as_deref())
            .await;
        let answered = match answered {
            Ok(answered) => answered,
            Err(error) => {
                let refusal = forward::failed(state, &ctx, &error);
                // A body read half-way leaves the connection where no next request starts.
                let body_length = match attempt.unread_body() {
                    Some(unread) => unread_body(read, unread),
                    None => body_length,
                };
                let reply = Reply {
                    method,
                    close,
                    body_length,
                };
                return self
                    .refuse(stream, (refusal, identified), &finish, reply)
                    .await;
            }
        };
        state
            .metrics
            .upstream_answered(&ctx.proxy.metric_label, sent.elapsed().as_secs_f64());
        let forwarded = Forwarded {
            answered,
            ctx: &ctx,
            identified,
            method: &method,
            close,
        };
        self.relay_response(stream, forwarded, &finish).await
    }

    /// Writes an upstream's response: its head rewritten as hyper's path rewrites it, its
    /// body relayed; the connection goes back to its node when the response ended cleanly.
    async fn relay_response<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        forwarded: Forwarded<'_>,
        finish: &Finish,
    ) -> Next {
        let Forwarded {
            answered,
            ctx,
            identified,
            method,
            close,
        } = forwarded;
        let Answered {
            answer:
                PlainAnswer {
                    mut head,
                    mut connection,
                },
            address,
            in_flight,
        } = answered;
        headers::from_upstream(&mut head.headers, ctx.session_cookies());
        if let Some(identified) = identified {
            rewrite::response(&mut head.headers, identified.user);
        }
        finish.apply(self.state, head.status, &mut head.headers, Some(address));
        let (body, decoding) = match head.framing {
            Framing::Empty | Framing::Length(0) => (BodyLength::Empty, Decoding::Length(0)),
            Framing::Length(length) => (BodyLength::Known(length), Decoding::Length(length)),
            Framing::Chunked => (BodyLength::Unknown, Decoding::Chunked(Dechunk::default())),
            Framing::UntilClose => (BodyLength::Unknown, Decoding::UntilClose { chunked: true }),
        };
        let mut out = Vec::with_capacity(1024);
        let written = write::response_head(
            &mut out,
            write::ResponseHead {
                status: head.status,
                reason: head.reason.as_deref(),
                headers: &mut head.headers,
                http10: head.http10,
                body,
                method,
                closing: close || self.stop.is_cancelled(),
            },
        );
        // Only HEAD answers, 204 and 304 go without a body, and those have none to read.
        let decoding = match decoding {
            _ if !written.with_body => Decoding::Length(0),
            Decoding::UntilClose { .. } => Decoding::UntilClose {
                chunked: written.chunked,
            },
            decoding => decoding,
        };
        let mut relay = Relay {
            from: &mut connection.stream,
            read: &mut connection.read,
            to: stream,
            idle_timeout: self.limits.idle_timeout,
        };
        if let Err(error) = relay.body(decoding, out).await {
            tracing::debug!(upstream = %address, %error, "response body relay ended early");
            return Next::Close;
        }
        if head.keep_alive {
            in_flight.member().plain_connections().checkin(connection);
        }
        if written.close {
            Next::Close
        } else {
            Next::Continue
        }
    }

    /// Answers with a refusal, after the last phase; `identified`: the user whose login
    /// cookies the answer still carries (an upstream failure after a login).
    async fn refuse<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        refused: (Refusal, Option<Identified>),
        finish: &Finish,
        reply: Reply,
    ) -> Next {
        let (refusal, identified) = refused;
        let mut response = refusal.into_response();
        if let Some(identified) = identified {
            rewrite::response(response.headers_mut(), identified.user);
        }
        let status = response.status();
        finish.apply(self.state, status, response.headers_mut(), None);
        self.answer(stream, response, reply).await
    }

    /// Writes one of the node's own answers (a refusal, a redirect), head and body in one
    /// write.
    async fn answer<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        response: Response<ProxyBody>,
        reply: Reply,
    ) -> Next {
        let (mut parts, body) = response.into_parts();
        let Ok(body) = body.collect().await.map(|body| body.to_bytes()) else {
            return Next::Close;
        };
        let length = if body.is_empty() {
            BodyLength::Empty
        } else {
            BodyLength::Known(body.len() as u64)
        };
        let mut out = Vec::with_capacity(512 + body.len());
        let written = write::response_head(
            &mut out,
            write::ResponseHead {
                status: parts.status,
                reason: None,
                headers: &mut parts.headers,
                http10: false,
                body: length,
                method: &reply.method,
                closing: reply.close || self.stop.is_cancelled(),
            },
        );
        if written.with_body {
            out.extend_from_slice(&body);
        }
        // Written also once the node is stopping, as hyper's graceful shutdown answers what
        // is in flight: the idle timeout and the shutdown grace bound a client that never reads.
        let sent = tokio::time::timeout(self.limits.idle_timeout, stream.write_all(&out)).await;
        // An unread body leaves the connection where no next request starts: as hyper, the
        // answer goes out as usual and the connection closes after it.
        if !matches!(sent, Ok(Ok(()))) || written.close || reply.body_length > 0 {
            return Next::Close;
        }
        Next::Continue
    }
}

/// A request's stream, what was read from it, and its head.
struct Exchange<'a, S> {
    stream: &'a mut S,
    read: &'a mut BytesMut,
    head: Head,
}

/// An upstream's answer and what its response is rewritten with.
struct Forwarded<'a> {
    answered: Answered<PlainAnswer>,
    ctx: &'a RequestCtx,
    identified: Option<Identified>,
    method: &'a Method,
    close: bool,
}

/// How an answer of the node's own goes out.
struct Reply {
    method: Method,
    /// The client asked to close.
    close: bool,
    /// Body bytes of the request still unread on the connection.
    body_length: u64,
}

/// Tells the upstream the length of the body it is sent, as hyper's client does: the
/// client's `Content-Length` is gone when its `Connection` header named it (hop-by-hop
/// headers are dropped with the ones they name), and a body sent after a head without its
/// length reaches the upstream as requests of its own, with headers no phase stripped.
fn keep_body_length(headers: &mut HeaderMap, body_length: u64) {
    if body_length > 0 && !headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body_length));
    }
}

/// A request body the node answers without reading: dropped when it is all in `read` (hyper
/// drains a body that is at hand), else its length, and the connection closes after the
/// answer.
fn unread_body(read: &mut BytesMut, body_length: u64) -> u64 {
    match usize::try_from(body_length) {
        Ok(length) if length <= read.len() => {
            read.advance(length);
            0
        }
        _ => body_length,
    }
}
