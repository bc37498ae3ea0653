//! Writing heads the way hyper writes them, so that what this engine sends is what hyper
//! would have sent: the request head an upstream receives (hyper's client), and the response
//! head a client receives (hyper's server: lowercase names in the map's order, the length or
//! chunked framing added after them, then `date`).

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// How the body after a response head is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body follows (hyper: a body that is already at its end).
    Empty,
    /// `n` bytes, `n > 0`.
    Known(u64),
    /// A body of unknown length: chunked.
    Unknown,
}

/// Appends the request line and headers of a request to an HTTP/1.1 upstream: hyper's client
/// writes every header as it is, one line per value, and adds nothing.
pub fn request_head(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        header_line(out, name.as_str(), value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head to write to a client.
#[derive(Debug)]
pub struct ResponseHead<'a> {
    pub status: StatusCode,
    /// A reason phrase that is not the canonical one, passed on from an upstream.
    pub reason: Option<&'a [u8]>,
    pub headers: &'a mut HeaderMap,
    /// The upstream answered in HTTP/1.0: hyper writes that version on, and sends a body of
    /// unknown length unchunked, to the connection's end.
    pub http10: bool,
    pub body: BodyLength,
    /// The request's method: a HEAD answer carries no body.
    pub method: &'a Method,
    /// The connection closes after this response (the node is stopping, or the client asked).
    pub closing: bool,
}

/// What writing a response head decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The body is written after the head (false for HEAD answers, 204 and 304).
    pub with_body: bool,
    /// The body goes out chunked.
    pub chunked: bool,
    /// The connection closes after this response.
    pub close: bool,
}

/// Appends `head` as hyper's server would write it.
pub fn response_head(out: &mut Vec<u8>, head: ResponseHead<'_>) -> Written {
    let ResponseHead {
        status,
        reason,
        headers,
        http10,
        body,
        method,
        closing,
    } = head;
    if closing {
        let asks_to_close = headers
            .get_all(CONNECTION)
            .iter()
            .any(|value| has_close(value.as_bytes()));
        if !asks_to_close {
            headers.append(CONNECTION, HeaderValue::from_static("close"));
        }
    }
    status_line(out, (status, reason), http10);
    let mut close = closing;
    let mut wrote_length = false;
    let mut wrote_date = false;
    let head_request = *method == Method::HEAD;
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        if *name == CONTENT_LENGTH {
            match body {
                // The first value stands for all (they were checked to agree).
                BodyLength::Known(_) => {
                    if let Some(first) = values.next() {
                        header_line(out, "content-length", first);
                        wrote_length = true;
                    }
                    continue;
                }
                // Only a HEAD answer keeps a length it has no body for.
                BodyLength::Empty if head_request => wrote_length = true,
                BodyLength::Empty | BodyLength::Unknown => continue,
            }
        } else if *name == TRANSFER_ENCODING {
            // Upstream codings are hop-by-hop and removed before this; the engine adds its own.
            continue;
        } else if *name == CONNECTION {
            let joined = join(values);
            close |= has_close(&joined);
            out.extend_from_slice(b"connection: ");
            out.extend_from_slice(&joined);
            out.extend_from_slice(b"\r\n");
            continue;
        } else if *name == DATE {
            wrote_date = true;
        }
        for value in values {
            header_line(out, name.as_str(), value);
        }
    }
    let with_body = can_have_body(method, status);
    let mut chunked = false;
    if !wrote_length {
        match body {
            BodyLength::Unknown if with_body && !http10 => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
            // Without chunked framing, a body of unknown length ends with the connection.
            BodyLength::Unknown => close = true,
            BodyLength::Empty => {
                if can_have_length(status) && !head_request {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
            }
            BodyLength::Known(length) => {
                if can_have_length(status) {
                    out.extend_from_slice(b"content-length: ");
                    push_decimal(out, length);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        super::date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Written {
        with_body: with_body && body != BodyLength::Empty,
        chunked,
        close,
    }
}

/// `value` in decimal digits, without the formatting machinery (`write!` of a length was
/// 0.7 % of a forward-auth check).
pub fn push_decimal(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + u8::try_from(rest % 10).unwrap_or_default();
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn status_line(out: &mut Vec<u8>, status: (StatusCode, Option<&[u8]>), http10: bool) {
    let (status, reason) = status;
    if status == StatusCode::OK && reason.is_none() && !http10 {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Several values of one header on one line, as hyper writes `Connection`.
fn join<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut joined = Vec::new();
    for value in values {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    joined
}

fn has_close(value: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// hyper's `can_have_body` for a response (never 1xx here; no CONNECT is served).
fn can_have_body(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD && can_have_length(status)
}

fn can_have_length(status: StatusCode) -> bool {
    !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_written_in_decimal_as_formatting_writes_them() {
        for value in [0, 7, 10, 99, 1234, 4_294_967_296, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, value);
            assert_eq!(out, format!("x{value}").into_bytes());
        }
    }

    fn written(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: BodyLength,
        method: Method,
        closing: bool,
    ) -> (String, Written) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let mut out = Vec::new();
        let decided = response_head(
            &mut out,
            ResponseHead {
                status: StatusCode::from_u16(status).unwrap(),
                reason: None,
                headers: &mut map,
                http10: false,
                body,
                method: &method,
                closing,
            },
        );
        let text = String::from_utf8(out).unwrap();
        let without_date = text
            .lines()
            .filter(|line| !line.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (without_date, decided)
    }

    #[test]
    fn lengths_are_written_where_and_when_hyper_writes_them() {
        let (text, decided) = written(
            200,
            &[("content-length", "5"), ("x-a", "1")],
            BodyLength::Known(5),
            Method::GET,
            false,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 5\nx-a: 1\n");
        assert!(decided.with_body && !decided.chunked && !decided.close);

        let (text, _) = written(
            200,
            &[("content-length", "0")],
            BodyLength::Empty,
            Method::GET,
            false,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 0\n");
        let (text, decided) = written(
            200,
            &[("content-length", "7")],
            BodyLength::Empty,
            Method::HEAD,
            false,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 7\n");
        assert!(!decided.with_body);
        let (text, _) = written(200, &[], BodyLength::Empty, Method::HEAD, false);
        assert_eq!(text, "HTTP/1.1 200 OK\n");
        let (text, _) = written(
            304,
            &[("content-length", "7")],
            BodyLength::Empty,
            Method::GET,
            false,
        );
        assert_eq!(text, "HTTP/1.1 304 Not Modified\n");
        let (text, decided) = written(404, &[("x", "y")], BodyLength::Unknown, Method::GET, false);
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\nx: y\ntransfer-encoding: chunked\n"
        );
        assert!(decided.chunked);
        let (text, decided) = written(403, &[], BodyLength::Known(3), Method::HEAD, false);
        assert_eq!(text, "HTTP/1.1 403 Forbidden\ncontent-length: 3\n");
        assert!(!decided.with_body);
    }

    #[test]
    fn a_closing_connection_says_so_once() {
        let (text, decided) = written(200, &[], BodyLength::Empty, Method::GET, true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\nconnection: close\ncontent-length: 0\n"
        );
        assert!(decided.close);
        let (text, decided) = written(
            200,
            &[("connection", "x"), ("connection", "Close")],
            BodyLength::Empty,
            Method::GET,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\nconnection: x, Close\ncontent-length: 0\n"
        );
        assert!(decided.close);
    }

    #[test]
    fn a_request_head_is_written_as_it_stands() {
        let mut headers = HeaderMap::new();
        headers.append("host", HeaderValue::from_static("engine"));
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        let mut out = Vec::new();
        request_head(&mut out, &Method::POST, "/x?y=1", &headers);
        assert_eq!(
            out,
            b"POST /x?y=1 HTTP/1.1\r\nhost: engine\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n"
        );
    }
}
