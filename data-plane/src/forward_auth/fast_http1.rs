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
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::original::{Caller, CheckLines, header_text};
use crate::body::ProxyBody;
use crate::config::LimitsConfig;
pub use crate::http1::Ended;
use crate::http1::request_head::{MAX_HEADERS, has_bare_line_feed, may_end_a_head};
use crate::http1::write::push_decimal;
use crate::http1::{HeadWait, read_more_of_head};
use crate::refusal::Refusal;
use crate::request::context::Client;
use crate::state::NodeState;

/// Headers that leave something to decide about a request's framing: such a request is
/// hyper's.
const FRAMING: [&str; 4] = ["content-length", "transfer-encoding", "upgrade", "expect"];

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
        let mut wait = HeadWait::new(self.stop, self.limits);
        // The first request's head is due `header_read_timeout` after the connection opened,
        // each later one that long after its first byte; between requests, `idle_timeout`.
        let mut head_started = Some(Instant::now());
        // How much of `read` is known to hold no end of a head: a head sent a byte at a time
        // is parsed once it is complete, not once per byte.
        let mut searched = 0;
        // One buffer for every answer on the connection.
        let mut answer = Answer::default();
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
                    let limits = self.limits;
                    if read_more_of_head(stream, &mut read, &mut head_started, limits, &mut wait)
                        .await
                    {
                        continue;
                    }
                    return Ended::Closed;
                }
            };
            let (length, close, head_only) = (head.length, head.close, head.head_only);
            // The original is rebuilt while the head is still in the buffer, straight from
            // its lines; the buffer moves on before anything waits.
            let check = match head.check {
                Check::Auth { uri, lines } => {
                    let started = Instant::now();
                    let rebuilt =
                        super::original::rebuild_lines(lines, self.caller, self.trusted_networks);
                    Prepared::Auth {
                        uri,
                        rebuilt,
                        started,
                    }
                }
                Check::Other(request) => Prepared::Other(request),
            };
            read.advance(length);
            searched = 0;
            head_started = None;
            let response = match check {
                Prepared::Auth {
                    uri,
                    rebuilt,
                    started,
                } => {
                    super::http::answer_check(
                        self.state,
                        uri.query(),
                        rebuilt,
                        self.caller,
                        started,
                    )
                    .await
                }
                Prepared::Other(request) => {
                    super::http::handle(
                        self.state.clone(),
                        self.trusted_networks,
                        request,
                        self.caller,
                    )
                    .await
                }
            };
            let closing = close || self.stop.is_cancelled();
            let close_after = match serialize(response, head_only, closing, &mut answer).await {
                Some(close_after) => close_after,
                None => return Ended::Closed,
            };
            if !self.write(stream, &answer.bytes).await {
                return Ended::Closed;
            }
            if closing || close_after {
                let _ = stream.shutdown().await;
                return Ended::Closed;
            }
        }
    }

    /// Writes an answer; false when the connection is to close instead. An answer is a few
    /// hundred bytes, which the socket almost always takes at once: it is offered once
    /// before a timer and the stop signal are set up around the rest (which was 2 % of a
    /// check each time).
    async fn write<S: AsyncWrite + Unpin>(&self, stream: &mut S, answer: &[u8]) -> bool {
        let at_once = std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *stream).poll_write(cx, answer) {
                Poll::Ready(written) => Some(written),
                Poll::Pending => None,
            })
        })
        .await;
        let rest = match at_once {
            Some(Ok(written)) if written == answer.len() => return true,
            Some(Ok(written)) => &answer[written..],
            Some(Err(_)) => return false,
            None => answer,
        };
        // A client that stops reading holds its connection no longer than an idle one,
        // and the node's shutdown does not wait for it.
        let written = tokio::select! {
            () = self.stop.cancelled() => return false,
            written = tokio::time::timeout(self.limits.idle_timeout, stream.write_all(rest)) => written,
        };
        matches!(written, Ok(Ok(())))
    }
}

/// A request head this loop answers, and its length in the buffer.
struct Head<'b> {
    check: Check<'b>,
    length: usize,
    /// The client asked to close after this answer.
    close: bool,
    /// A `HEAD` request: its answer has no body.
    head_only: bool,
}

/// What a head asks.
// As `Parsed`: made and matched at once, a box would cost an allocation a check.
#[allow(clippy::large_enum_variant)]
enum Check<'b> {
    /// An ingress's check, `/auth`: its lines sorted for the original request as they were
    /// read, so that no map of the check's own headers is made.
    Auth { uri: Uri, lines: CheckLines<'b> },
    /// Anything else (`/signin`, another path): the request as hyper would have made it.
    Other(Request<()>),
}

/// A check ready to be decided, the buffer free again.
enum Prepared {
    Auth {
        uri: Uri,
        rebuilt: Result<(Request<()>, Client), Refusal>,
        started: Instant,
    },
    Other(Request<()>),
}

// Made and matched at once, once per request: boxing the head would cost an allocation there.
#[allow(clippy::large_enum_variant)]
enum Parsed<'b> {
    Complete(Head<'b>),
    Partial,
    /// Valid or not, hyper's to answer.
    NotHere,
}

fn parse(buffer: &[u8]) -> Parsed<'_> {
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
        Some((check, close, head_only)) => Parsed::Complete(Head {
            check,
            length,
            close,
            head_only,
        }),
        None => Parsed::NotHere,
    }
}

/// The request, when it is one this loop answers; with whether the client asked to close,
/// and whether it is a `HEAD`.
fn build<'b>(parsed: &httparse::Request<'_, 'b>) -> Option<(Check<'b>, bool, bool)> {
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    let mut lines =
        (uri.path() == "/auth").then(|| CheckLines::with_capacity(parsed.headers.len()));
    let mut headers = HeaderMap::new();
    let mut close = false;
    for header in parsed.headers.iter() {
        let name = header.name;
        if FRAMING
            .iter()
            .any(|framing| name.eq_ignore_ascii_case(framing))
        {
            return None;
        }
        if name.eq_ignore_ascii_case(CONNECTION.as_str()) {
            let tokens = header_text(header.value)?;
            for token in tokens.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        }
        match &mut lines {
            Some(lines) => lines.add(name, header.value)?,
            None => {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_bytes(header.value).ok()?,
                );
            }
        }
    }
    let head_only = method == Method::HEAD;
    if let Some(lines) = lines {
        return Some((Check::Auth { uri, lines }, close, head_only));
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some((Check::Other(request), close, head_only))
}

/// One connection's answer buffer, reused for every answer on it.
#[derive(Default)]
struct Answer {
    bytes: Vec<u8>,
}

/// The answer's bytes, head and body, written into `answer`; whether the connection closes
/// after it (the answer says `Connection: close`, as it does when `closing`). `None` when
/// the body cannot be read.
async fn serialize(
    response: Response<ProxyBody>,
    head_only: bool,
    closing: bool,
    answer: &mut Answer,
) -> Option<bool> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    let out = &mut answer.bytes;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut close = false;
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
            close = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if closing && !close {
        out.extend_from_slice(b"connection: close\r\n");
        close = true;
    }
    // As hyper frames it: a HEAD answer with an empty body says no length.
    if !(head_only && body.is_empty()) {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, u64::try_from(body.len()).unwrap_or(u64::MAX));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    crate::http1::date::append(out);
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &str) -> Parsed<'_> {
        parse(bytes.as_bytes())
    }

    #[test]
    fn a_bodiless_http11_check_is_answered_here() {
        let text = "GET /auth HTTP/1.1\r\nHost: n\r\nX-Original-URI: /app/\r\nX-Original-Method: GET\r\nCookie: a=b\r\n\r\nGET";
        let Parsed::Complete(head) = parsed(text) else {
            panic!("a plain check");
        };
        assert_eq!(head.length, text.len() - 3);
        assert!(!head.close);
        assert!(!head.head_only);
        let Check::Auth { uri, lines } = head.check else {
            panic!("a check of /auth");
        };
        assert_eq!(uri.path(), "/auth");
        let (original, _) = super::super::original::rebuild_lines(
            lines,
            Caller {
                peer: "127.0.0.1:4000".parse().unwrap(),
                listener_port: 9904,
                secure: false,
            },
            &["127.0.0.0/8".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(original.headers()[http::header::HOST], "n");
        assert_eq!(original.headers()["cookie"], "a=b");
        assert!(!original.headers().contains_key("x-original-uri"));
        assert_eq!(original.uri(), "/app/");
        let Parsed::Complete(head) =
            parsed("HEAD /auth HTTP/1.1\r\nHost: n\r\nConnection: keep-alive, Close\r\n\r\n")
        else {
            panic!("a plain check");
        };
        assert!(head.close);
        assert!(head.head_only);
        let Parsed::Complete(head) =
            parsed("GET /signin?rd=x HTTP/1.1\r\nHost: n\r\nX-A: b\r\n\r\n")
        else {
            panic!("a plain request");
        };
        let Check::Other(request) = head.check else {
            panic!("not a check of /auth");
        };
        assert_eq!(request.uri(), "/signin?rd=x");
        assert_eq!(request.headers()["x-a"], "b");
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
        let mut answer = Answer::default();
        let close = serialize(response, false, false, &mut answer)
            .await
            .unwrap();
        let text = String::from_utf8(answer.bytes.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 2\r\n"), "{text}");
        assert!(!text.contains("999"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\nno"), "{text}");
        assert!(!close);
        serialize(
            Response::new(crate::body::full("x")),
            true,
            false,
            &mut answer,
        )
        .await
        .unwrap();
        let text = String::from_utf8(answer.bytes.clone()).unwrap();
        assert!(text.contains("\r\ncontent-length: 1\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {text}"
        );
    }
}
