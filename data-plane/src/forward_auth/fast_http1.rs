//! The forward-auth listener's own HTTP/1.1 loop for the check every ingress sends: a
//! request without a body over plain TCP. An ingress asks once per request it forwards, so
//! the check's cost is the ingress's cost: here the head is parsed once (with `httparse`,
//! the parser hyper uses), the check runs, and the answer goes out in one write, without
//! hyper's dispatcher around it.
//!
//! Only requests whose framing leaves nothing to decide are answered here: HTTP/1.1, a
//! complete head, no `Content-Length` or `Transfer-Encoding`, no `Upgrade` or `Expect`, valid
//! header names and values. The first request that is anything else (a body, HTTP/1.0 or
//! HTTP/2, a head too large or malformed, a parse error) is handed to hyper with every byte
//! read so far, and hyper serves the rest of the connection as it would have served all of
//! it: the two paths never both frame one byte.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::original::Caller;
use crate::body::ProxyBody;
use crate::config::LimitsConfig;
use crate::state::NodeState;

/// More headers than hyper accepts (100) go to hyper, which answers 431.
const MAX_HEADERS: usize = 100;

/// What a connection's loop ended with.
#[derive(Debug)]
pub enum Ended {
    /// Closed: by the client, a timeout, `Connection: close`, or the node's shutdown.
    Closed,
    /// A request this loop does not answer: hyper serves the connection from `read`.
    HandedOver { read: BytesMut },
}

/// One connection's checks, answered until one needs hyper.
#[derive(Debug)]
pub struct Checks<'a> {
    pub state: &'a Arc<NodeState>,
    pub trusted_networks: &'a [ipnet::IpNet],
    pub caller: Caller,
    pub limits: &'a LimitsConfig,
    pub stop: &'a CancellationToken,
}

impl Checks<'_> {
    /// Answers the checks on `stream` until it closes or a request needs hyper.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> Ended {
        let mut read = BytesMut::with_capacity(4096);
        // The first request's head is due `header_read_timeout` after the connection opened,
        // each later one that long after its first byte; between requests, `idle_timeout`.
        let mut head_started = Some(Instant::now());
        // How much of `read` is known to hold no end of a head: a head sent a byte at a time
        // is parsed once it is complete, not once per byte.
        let mut searched = 0;
        loop {
            let parsed = if may_end_a_head(&read, searched) {
                parse(&read)
            } else {
                Parsed::Partial
            };
            searched = read.len();
            let head = match parsed {
                // hyper answers a head over the limit (431); one read may bring it whole.
                Parsed::Complete(head) if head.length > self.limits.max_header_bytes => {
                    return Ended::HandedOver { read };
                }
                Parsed::Complete(head) => head,
                Parsed::NotHere => return Ended::HandedOver { read },
                Parsed::Partial if read.len() >= self.limits.max_header_bytes => {
                    return Ended::HandedOver { read };
                }
                Parsed::Partial => {
                    if !read.is_empty() && head_started.is_none() {
                        head_started = Some(Instant::now());
                    }
                    let deadline = match head_started {
                        Some(started) => started + self.limits.header_read_timeout,
                        None => Instant::now() + self.limits.idle_timeout,
                    };
                    let more = tokio::select! {
                        () = self.stop.cancelled(), if read.is_empty() => return Ended::Closed,
                        more = tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut read)) => more,
                    };
                    match more {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ended::Closed,
                        Ok(Ok(_)) => continue,
                    }
                }
            };
            read.advance(head.length);
            searched = 0;
            head_started = None;
            let close = head.close;
            let head_only = head.request.method() == Method::HEAD;
            let response = super::http::handle(
                self.state.clone(),
                self.trusted_networks,
                head.request,
                self.caller,
            )
            .await;
            let closing = close || self.stop.is_cancelled();
            let (answer, close_after) = match serialize(response, head_only, closing).await {
                Some(answer) => answer,
                None => return Ended::Closed,
            };
            // A client that stops reading holds its connection no longer than an idle one,
            // and the node's shutdown does not wait for it.
            let written = tokio::select! {
                () = self.stop.cancelled() => return Ended::Closed,
                written = tokio::time::timeout(self.limits.idle_timeout, stream.write_all(&answer)) => written,
            };
            if !matches!(written, Ok(Ok(()))) {
                return Ended::Closed;
            }
            if closing || close_after {
                let _ = stream.shutdown().await;
                return Ended::Closed;
            }
        }
    }
}

/// A request head this loop answers, and its length in the buffer.
struct Head {
    request: Request<()>,
    length: usize,
    /// The client asked to close after this answer.
    close: bool,
}

// Made and matched at once, once per request: boxing the head would cost an allocation there.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Complete(Head),
    Partial,
    /// Valid or not, hyper's to answer.
    NotHere,
}

fn parse(buffer: &[u8]) -> Parsed {
    if buffer.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotHere,
    };
    // httparse takes a bare LF for CRLF, as hyper does; such a head is left to hyper all the
    // same, so that this loop only ever answers heads no two parsers could read differently.
    if has_bare_line_feed(&buffer[..length]) {
        return Parsed::NotHere;
    }
    match build(&parsed) {
        Some((request, close)) => Parsed::Complete(Head {
            request,
            length,
            close,
        }),
        None => Parsed::NotHere,
    }
}

/// Whether the bytes of `buffer` past `searched` may complete a head: a line feed followed by
/// an empty line (CRLF or, as httparse also takes, a bare LF) ends one.
fn may_end_a_head(buffer: &[u8], searched: usize) -> bool {
    let from = searched.saturating_sub(3);
    buffer.get(from..).is_some_and(|tail| {
        tail.windows(2).any(|pair| pair == b"\n\n")
            || tail.windows(3).any(|triple| triple == b"\n\r\n")
    })
}

fn has_bare_line_feed(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(at, &byte)| byte == b'\n' && (at == 0 || head[at - 1] != b'\r'))
}

/// The request, when it is one this loop answers; with whether the client asked to close.
fn build(parsed: &httparse::Request<'_, '_>) -> Option<(Request<()>, bool)> {
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = false;
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == UPGRADE || name == EXPECT
        {
            return None;
        }
        let value = HeaderValue::from_bytes(header.value).ok()?;
        if name == CONNECTION {
            let tokens = value.to_str().ok()?;
            for token in tokens.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        }
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some((request, close))
}

/// The answer's bytes, head and body in one buffer, and whether the connection closes after
/// it (the answer says `Connection: close`, as it does when `closing`). `None` when the body
/// cannot be read.
async fn serialize(
    response: Response<ProxyBody>,
    head_only: bool,
    closing: bool,
) -> Option<(Vec<u8>, bool)> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    let mut answer = Vec::with_capacity(256 + body.len());
    answer.extend_from_slice(b"HTTP/1.1 ");
    answer.extend_from_slice(parts.status.as_str().as_bytes());
    answer.push(b' ');
    answer.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    answer.extend_from_slice(b"\r\n");
    let mut close = false;
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
            close = true;
        }
        answer.extend_from_slice(name.as_str().as_bytes());
        answer.extend_from_slice(b": ");
        answer.extend_from_slice(value.as_bytes());
        answer.extend_from_slice(b"\r\n");
    }
    if closing && !close {
        answer.extend_from_slice(b"connection: close\r\n");
        close = true;
    }
    // As hyper frames it: a HEAD answer with an empty body says no length.
    if !(head_only && body.is_empty()) {
        answer.extend_from_slice(b"content-length: ");
        answer.extend_from_slice(body.len().to_string().as_bytes());
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"date: ");
    answer.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    answer.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        answer.extend_from_slice(&body);
    }
    Some((answer, close))
}

/// A stream whose first bytes were already read: they are read again first, so that hyper
/// sees the connection from the start of the request it was handed.
#[derive(Debug)]
pub struct Replayed<S> {
    read: BytesMut,
    stream: S,
}

impl<S> Replayed<S> {
    pub fn new(read: BytesMut, stream: S) -> Self {
        Self { read, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let count = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..count]);
            self.read.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &str) -> Parsed {
        parse(bytes.as_bytes())
    }

    #[test]
    fn a_bodiless_http11_check_is_answered_here() {
        let text =
            "GET /auth HTTP/1.1\r\nHost: n\r\nX-Original-URI: /app/\r\nCookie: a=b\r\n\r\nGET";
        let Parsed::Complete(head) = parsed(text) else {
            panic!("a plain check");
        };
        assert_eq!(head.length, text.len() - 3);
        assert!(!head.close);
        assert_eq!(head.request.uri().path(), "/auth");
        assert_eq!(head.request.headers()["x-original-uri"], "/app/");
        let Parsed::Complete(head) =
            parsed("HEAD /auth HTTP/1.1\r\nHost: n\r\nConnection: keep-alive, Close\r\n\r\n")
        else {
            panic!("a plain check");
        };
        assert!(head.close);
    }

    #[test]
    fn anything_with_framing_to_decide_goes_to_hyper() {
        for text in [
            "GET /auth HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST /auth HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /auth HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET /auth HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /auth HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /auth HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "GET /auth HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "CONNECT n:443 HTTP/1.1\r\n\r\n",
            "GET /auth HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET /auth HTTP/1.1\nHost: n\n\n",
            "GET /auth HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET  /auth HTTP/1.1\r\n\r\n",
            "G\0T /auth HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parsed(text), Parsed::NotHere), "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: v\r\n")).collect();
        assert!(matches!(
            parsed(&format!("GET /auth HTTP/1.1\r\n{many}\r\n")),
            Parsed::NotHere
        ));
    }

    #[test]
    fn only_bytes_that_may_end_a_head_are_parsed_again() {
        let head = b"GET /auth HTTP/1.1\r\nHost: n\r\n\r\n";
        assert!(may_end_a_head(head, 0));
        assert!(
            may_end_a_head(head, head.len() - 1),
            "the end spans the last read"
        );
        assert!(!may_end_a_head(&head[..head.len() - 2], 0));
        assert!(may_end_a_head(b"GET / HTTP/1.1\nHost: n\n\n", 10));
        assert!(!may_end_a_head(b"", 0));
        assert!(!may_end_a_head(head, head.len() + 10));
    }

    #[test]
    fn an_unfinished_head_waits_for_more() {
        for text in [
            "",
            "GET /auth HTTP/1.1\r\n",
            "GET /auth HTTP/1.1\r\nHost: n\r\n",
        ] {
            assert!(matches!(parsed(text), Parsed::Partial), "{text:?}");
        }
    }

    #[tokio::test]
    async fn the_answer_is_one_buffer_with_its_length_and_date() {
        let mut response = Response::new(crate::body::full("no"));
        *response.status_mut() = http::StatusCode::FORBIDDEN;
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        let (answer, close) = serialize(response, false, false).await.unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 2\r\n"), "{text}");
        assert!(!text.contains("999"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\nno"), "{text}");
        assert!(!close);
        let (answer, _) = serialize(Response::new(crate::body::full("x")), true, false)
            .await
            .unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(text.contains("\r\ncontent-length: 1\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {text}"
        );
    }

    #[tokio::test]
    async fn replayed_bytes_come_before_the_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut replayed = Replayed::new(BytesMut::from(&b"hello"[..]), server);
        let mut all = String::new();
        replayed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
