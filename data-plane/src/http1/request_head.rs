//! Reading a client's request head for the node's own HTTP/1 engine: parsed once with
//! `httparse` (the parser hyper uses), and taken only when its framing leaves nothing to
//! decide. Everything else is [`Parsed::NotHere`]: hyper's to judge, with every byte read.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

/// More headers than hyper accepts (100) go to hyper, which answers 431.
pub const MAX_HEADERS: usize = 100;

/// A request head this engine serves, and its length in the buffer.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    pub length: usize,
    /// The client asked to close after this answer.
    pub close: bool,
    /// The body's length, from its one `Content-Length` (0 without one).
    pub body_length: u64,
}

// Made and matched at once, once per request: boxing the head would cost an allocation there.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    Complete(Head),
    Partial,
    /// Valid or not, hyper's to answer.
    NotHere,
}

/// What `buffer` starts with: a head this engine serves, the start of one, or neither.
/// `allow_body`: a request with a `Content-Length` body is served (the proxy relays it);
/// without, only bodiless requests are.
pub fn parse(buffer: &[u8], allow_body: bool) -> Parsed {
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
    // same, so that this engine only ever serves heads no two parsers could read differently.
    if has_bare_line_feed(&buffer[..length]) {
        return Parsed::NotHere;
    }
    match build(&parsed, allow_body) {
        Some(built) => Parsed::Complete(Head {
            request: built.request,
            length,
            close: built.close,
            body_length: built.body_length,
        }),
        None => Parsed::NotHere,
    }
}

/// Whether the bytes of `buffer` past `searched` may complete a head: a line feed followed by
/// an empty line (CRLF or, as httparse also takes, a bare LF) ends one. Searched from the
/// back: a head usually arrives whole, its end the last bytes read.
pub fn may_end_a_head(buffer: &[u8], searched: usize) -> bool {
    let from = searched.saturating_sub(3);
    let Some(tail) = buffer.get(from..) else {
        return false;
    };
    let mut end = tail.len();
    while let Some(at) = tail[..end].iter().rposition(|&byte| byte == b'\n') {
        let after = &tail[at + 1..];
        if after.first() == Some(&b'\n') || after.starts_with(b"\r\n") {
            return true;
        }
        end = at;
    }
    false
}

/// Whether a line feed in `head` is not preceded by a carriage return. Every pair of bytes is
/// looked at and the findings OR-ed together as bytes, with no branch and no early exit, so
/// that the compiler compares many pairs at once; counting line feeds and CRLF pairs into
/// `usize` sums instead widened each byte to eight and was 6 % of a forward-auth check.
pub fn has_bare_line_feed(head: &[u8]) -> bool {
    let mut bare = u8::from(head.first() == Some(&b'\n'));
    for (&previous, &byte) in head.iter().zip(head.get(1..).unwrap_or_default()) {
        bare |= u8::from(byte == b'\n') & u8::from(previous != b'\r');
    }
    bare != 0
}

struct Built {
    request: Request<()>,
    close: bool,
    body_length: u64,
}

/// The request, when it is one this engine serves.
fn build(parsed: &httparse::Request<'_, '_>, allow_body: bool) -> Option<Built> {
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let target = parsed.path?;
    // Origin form only: absolute-form and `*` targets are hyper's.
    if !target.starts_with('/') {
        return None;
    }
    let uri: Uri = target.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = false;
    let mut body_length = None;
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == TRANSFER_ENCODING || name == UPGRADE || name == EXPECT {
            return None;
        }
        let value = HeaderValue::from_bytes(header.value).ok()?;
        if name == CONTENT_LENGTH {
            // One length, in plain digits: anything else (a list, a second header, a sign)
            // has framing rules of its own, which stay hyper's.
            if !allow_body || body_length.is_some() {
                return None;
            }
            body_length = Some(digits(header.value)?);
        }
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
    Some(Built {
        request,
        close,
        body_length: body_length.unwrap_or(0),
    })
}

/// A `Content-Length` of 1 to 18 ASCII digits (no sign, no space, no list).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &str) -> Parsed {
        parse(bytes.as_bytes(), true)
    }

    #[test]
    fn a_plain_request_is_served_here_with_its_length() {
        let text = "POST /app/x HTTP/1.1\r\nHost: n\r\nContent-Length: 5\r\n\r\nhelloGET";
        let Parsed::Complete(head) = parsed(text) else {
            panic!("a plain request");
        };
        assert_eq!(head.length, text.len() - 8);
        assert_eq!(head.body_length, 5);
        assert!(!head.close);
        assert_eq!(head.request.uri().path(), "/app/x");
        let Parsed::Complete(head) =
            parsed("GET / HTTP/1.1\r\nHost: n\r\nConnection: keep-alive, Close\r\n\r\n")
        else {
            panic!("a plain request");
        };
        assert!(head.close);
        assert_eq!(head.body_length, 0);
        assert!(matches!(parse(text.as_bytes(), false), Parsed::NotHere));
    }

    #[test]
    fn anything_with_framing_to_decide_goes_to_hyper() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "CONNECT n:443 HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: n\r\n\r\n",
            "GET http://n/ HTTP/1.1\r\nHost: n\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\nHost: n\n\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G\0T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parsed(text), Parsed::NotHere), "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: v\r\n")).collect();
        assert!(matches!(
            parsed(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
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

    proptest::proptest! {
        /// The scans against the plain byte-by-byte reading of what they look for.
        #[test]
        fn the_head_end_scans_read_bytes_as_a_plain_search_does(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'a']), 0..24),
            searched in 0usize..30,
        ) {
            let bare = bytes
                .iter()
                .enumerate()
                .any(|(at, &byte)| byte == b'\n' && (at == 0 || bytes[at - 1] != b'\r'));
            proptest::prop_assert_eq!(has_bare_line_feed(&bytes), bare);
            let ends = bytes.get(searched.saturating_sub(3)..).is_some_and(|tail| {
                tail.windows(2).any(|pair| pair == b"\n\n")
                    || tail.windows(3).any(|triple| triple == b"\n\r\n")
            });
            proptest::prop_assert_eq!(may_end_a_head(&bytes, searched), ends);
        }
    }

    #[test]
    fn an_unfinished_head_waits_for_more() {
        for text in ["", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: n\r\n"] {
            assert!(matches!(parsed(text), Parsed::Partial), "{text:?}");
        }
    }
}
