//! Reading an upstream's response head, as hyper's client reads one: parsed with `httparse`
//! under hyper's rules (at most 100 headers, no obs-fold), informational heads skipped, and the
//! body's framing decided as RFC 9112 section 6.3 and hyper decide it.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::request_head::MAX_HEADERS;

/// How an upstream response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a HEAD answer, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the upstream closes.
    UntilClose,
}

/// A response head from an upstream.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The reason phrase when it is not the status's canonical one: hyper passes such a
    /// phrase on, so this engine does too.
    pub reason: Option<Bytes>,
    pub headers: HeaderMap,
    /// Answered in HTTP/1.0.
    pub http10: bool,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

#[derive(Debug)]
pub enum ParsedResponse {
    /// A final head, and its length in the buffer.
    Complete(ResponseHead, usize),
    /// An informational (1xx) head of this length, which hyper's client skips too.
    Informational(usize),
    Partial,
    /// Not a response hyper's client would take; the reason is for the log.
    Invalid(&'static str),
}

/// Reads the head at the start of `buffer`, answering a `method` request.
pub fn parse(buffer: &[u8], method: &Method) -> ParsedResponse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(_) => return ParsedResponse::Invalid("the response head is malformed"),
    };
    let Some(Ok(status)) = parsed.code.map(StatusCode::from_u16) else {
        return ParsedResponse::Invalid("the response status is not valid");
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return ParsedResponse::Invalid("the upstream switched protocols unasked");
    }
    if status.is_informational() {
        return ParsedResponse::Informational(length);
    }
    let http11 = parsed.version == Some(1);
    let reason = parsed
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason())
        .map(|reason| Bytes::copy_from_slice(reason.as_bytes()));
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let mut keep_alive = http11;
    let mut asked_to_close = false;
    for header in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return ParsedResponse::Invalid("a response header is not valid");
        };
        if name == CONNECTION {
            // Once any `Connection` line asks to close, a later `keep-alive` does not undo it.
            if asked_to_close || has_token(&value, "close") {
                asked_to_close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(&value, "keep-alive");
            }
        }
        map.append(name, value);
    }
    let framing = match framing(status, method, http11, &map) {
        Ok(framing) => framing,
        Err(reason) => return ParsedResponse::Invalid(reason),
    };
    let keep_alive = keep_alive && framing != Framing::UntilClose;
    ParsedResponse::Complete(
        ResponseHead {
            status,
            reason,
            headers: map,
            http10: !http11,
            framing,
            keep_alive,
        },
        length,
    )
}

/// RFC 9112 section 6.3, as hyper's client applies it. A response with both
/// `Transfer-Encoding` and `Content-Length` is refused: hyper would frame the answer to the
/// client by a length the upstream's chunks may not add up to.
fn framing(
    status: StatusCode,
    method: &Method,
    http11: bool,
    headers: &HeaderMap,
) -> Result<Framing, &'static str> {
    if matches!(status.as_u16(), 204 | 304) || *method == Method::HEAD {
        return Ok(Framing::Empty);
    }
    let encodings = headers.get_all(TRANSFER_ENCODING);
    if let Some(last) = encodings.iter().next_back() {
        if !http11 {
            return Err("an HTTP/1.0 response has a transfer coding");
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err("the response has both a transfer coding and a length");
        }
        let chunked = last.to_str().ok().is_some_and(|value| {
            value
                .rsplit(',')
                .next()
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
        });
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    if !headers.contains_key(CONTENT_LENGTH) {
        return Ok(Framing::UntilClose);
    }
    content_length(headers)
        .map(Framing::Length)
        .ok_or("the response length is not valid")
}

/// The one length every `Content-Length` value (and list element) gives, as hyper reads it.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for element in value.to_str().ok()?.split(',') {
            let element = element.trim().as_bytes();
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let parsed: u64 = std::str::from_utf8(element).ok()?.parse().ok()?;
            if length.is_some_and(|seen| seen != parsed) {
                return None;
            }
            length = Some(parsed);
        }
    }
    length
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|value| {
        value
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: &Method) -> ResponseHead {
        match parse(text.as_bytes(), method) {
            ParsedResponse::Complete(head, length) => {
                assert_eq!(length, text.find("\r\n\r\n").unwrap() + 4);
                head
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn the_framing_is_decided_as_hyper_decides_it() {
        let get = Method::GET;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Framing::UntilClose,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Framing::Empty,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::Empty),
        ];
        for (text, framing) in cases {
            assert_eq!(head(text, &get).framing, framing, "{text:?}");
        }
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD
            )
            .framing,
            Framing::Empty
        );
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                matches!(parse(text.as_bytes(), &get), ParsedResponse::Invalid(_)),
                "{text:?}"
            );
        }
        assert!(matches!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", &get),
            ParsedResponse::Informational(25)
        ));
    }

    #[test]
    fn keep_alive_and_the_reason_phrase_are_read_as_hyper_reads_them() {
        let get = Method::GET;
        let ok = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &get);
        assert!(ok.keep_alive);
        assert_eq!(ok.reason, None);
        let custom = head("HTTP/1.1 200 Fine\r\nContent-Length: 0\r\n\r\n", &get);
        assert_eq!(custom.reason.as_deref(), Some(&b"Fine"[..]));
        let closing = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            &get,
        );
        assert!(!closing.keep_alive);
        let old = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &get);
        assert!(!old.keep_alive);
        let old_kept = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            &get,
        );
        assert!(old_kept.keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\n\r\n", &get).keep_alive);
    }
}
