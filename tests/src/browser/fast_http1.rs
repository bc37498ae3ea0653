//! The proxy listener's own HTTP/1.1 engine (`fast_http1`, the default) against hyper's path
//! (`fast_http1 = false`): the same bytes sent to both nodes reach the upstream as the same
//! bytes, and come back to the client as the same answers, request for request, with the
//! same end of the connection. The corpus holds the smuggling and hostile-input cases
//! (conflicting lengths, `Transfer-Encoding` variants, obs-fold, bare LF, NUL, pipelining,
//! requests that move a connection to hyper) and the upstream's side of framing: lengths,
//! chunks with extensions and trailers, bodies that end with the connection, informational
//! heads, custom reason phrases, hop-by-hop headers, an upstream planting a session cookie,
//! malformed and truncated answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::{ControlPlane, DataPlaneNode};

/// The answer the recording upstream gives, chosen by the request's `x-answer` header.
fn canned(name: &str) -> (Vec<u8>, bool) {
    let big = "b".repeat(200_000);
    let (text, close) = match name {
        "length" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello".to_owned(),
            false,
        ),
        "chunked" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n\
             5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_owned(),
            false,
        ),
        "until-close" => (
            "HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\nbody until close".to_owned(),
            true,
        ),
        "http10" => (
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned(),
            true,
        ),
        "no-content" => (
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_owned(),
            false,
        ),
        "not-modified" => (
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n".to_owned(),
            false,
        ),
        "custom-reason" => (
            "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok".to_owned(),
            false,
        ),
        "empty" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Up: 1\r\n\r\n".to_owned(),
            false,
        ),
        "hop-by-hop" => (
            "HTTP/1.1 200 OK\r\nConnection: x-private, keep-alive\r\nX-Private: secret\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nContent-Length: 2\r\n\r\nok"
                .to_owned(),
            false,
        ),
        "cookie" => (
            format!(
                "HTTP/1.1 200 OK\r\nSet-Cookie: {COOKIE}=planted; Path=/\r\nSet-Cookie: theme=dark\r\n\
                 Content-Length: 2\r\n\r\nok"
            ),
            false,
        ),
        "continue" => (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_owned(),
            false,
        ),
        "bad-length" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_owned(),
            true,
        ),
        "folded" => (
            "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok".to_owned(),
            true,
        ),
        "truncated" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel".to_owned(),
            true,
        ),
        "big" => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            ),
            false,
        ),
        "big-chunked" => (
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                big.len(),
                big.len()
            ),
            false,
        ),
        _ => (
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndefault".to_owned(),
            false,
        ),
    };
    (text.into_bytes(), close)
}

/// An upstream that records every request as it arrived, byte for byte, and answers it
/// with the canned answer its `x-answer` header names.
pub(super) struct RecordingUpstream {
    pub(super) address: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
}

impl RecordingUpstream {
    pub(super) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_recorded(stream, record.clone()));
            }
        });
        Self { address, received }
    }

    pub(super) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

async fn serve_recorded(mut stream: TcpStream, record: Arc<Mutex<Vec<String>>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(length) = next_request(&mut stream, &mut buffer).await else {
            return;
        };
        let request: Vec<u8> = buffer.drain(..length).collect();
        let text = String::from_utf8_lossy(&request).into_owned();
        let answer = text
            .lines()
            .find_map(|line| line.strip_prefix("x-answer: "))
            .unwrap_or("default")
            .to_owned();
        record.lock().unwrap().push(text);
        let (bytes, close) = canned(&answer);
        if stream.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

/// Reads until `buffer` starts with a whole request (framed by `Content-Length` or chunked,
/// as nodes send them), and says how long it is.
async fn next_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(length) = request_length(buffer) {
            return Some(length);
        }
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

fn request_length(buffer: &[u8]) -> Option<usize> {
    let head_end = buffer.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    if head.contains("\r\ntransfer-encoding: chunked") {
        let mut at = head_end;
        loop {
            let line_end = buffer[at..].windows(2).position(|pair| pair == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&buffer[at..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                let end = buffer[at..].windows(2).position(|pair| pair == b"\r\n")? + at;
                return (end == at).then_some(at + 2);
            }
            at += size + 2;
            if at > buffer.len() {
                return None;
            }
        }
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buffer.len() >= head_end + length).then_some(head_end + length)
}

/// Sends `bytes` on a new connection and reads until the node closes it or stays silent for
/// a moment (a connection kept alive). The sending side stays open: hyper drops a connection
/// whose client half-closes, answered or not.
pub(super) async fn exchange(address: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let stream = TcpStream::connect(address).await.expect("connect");
    send_and_read(stream, bytes).await
}

/// Sends `bytes` on `stream` and reads until the node closes it or stays silent for 400 ms;
/// whether it closed.
pub(super) async fn send_and_read(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    bytes: &[u8],
) -> (Vec<u8>, bool) {
    stream.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match tokio::time::timeout(Duration::from_millis(400), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (answer, true),
            Ok(Ok(read)) => answer.extend_from_slice(&chunk[..read]),
            Err(_) => return (answer, false),
        }
    }
}

/// The answers in `bytes`, each as its head without the `Date` line (in the order sent) and
/// its body with chunked framing taken off (hyper and the engine may cut chunks differently).
/// An answer cut short (an upstream that closed mid-body) is left out: how much of it was
/// flushed before the connection closed depends on timing, on either path.
fn answers(mut bytes: &[u8]) -> Vec<String> {
    let mut answers = Vec::new();
    while let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        // A login target is new on every answer.
        let lines: Vec<String> = head
            .split("\r\n")
            .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
            .map(|line| match line.split_once("targetId=") {
                Some((before, _)) => format!("{before}targetId=…"),
                None => line.to_owned(),
            })
            .collect();
        let lower = head.to_ascii_lowercase();
        let bodiless = lower.starts_with("http/1.1 204") || lower.starts_with("http/1.1 304");
        let rest = &bytes[end + 4..];
        let (body, used) = if bodiless {
            (Some(String::new()), 0)
        } else if lower.contains("\r\ntransfer-encoding: chunked") {
            dechunk(rest)
        } else {
            let length = lines
                .iter()
                .find_map(|line| {
                    let line = line.to_ascii_lowercase();
                    line.strip_prefix("content-length: ")?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            if length > rest.len() {
                (None, rest.len())
            } else {
                (
                    Some(String::from_utf8_lossy(&rest[..length]).into_owned()),
                    length,
                )
            }
        };
        let Some(body) = body else {
            return answers;
        };
        answers.push(format!("{}\n\n{body}", lines.join("\n")));
        bytes = &rest[used..];
    }
    if !bytes.is_empty() {
        answers.push(format!("(unframed: {})", String::from_utf8_lossy(bytes)));
    }
    answers
}

/// A chunked body's data and how many bytes its framing took; `None` when it is cut short.
fn dechunk(bytes: &[u8]) -> (Option<String>, usize) {
    let mut data = Vec::new();
    let mut at = 0;
    while let Some(line) = bytes[at..].windows(2).position(|pair| pair == b"\r\n") {
        let size_text = String::from_utf8_lossy(&bytes[at..at + line]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            break;
        };
        at += line + 2;
        if size == 0 {
            let end = at + 2;
            if end > bytes.len() {
                break;
            }
            return (Some(String::from_utf8_lossy(&data).into_owned()), end);
        }
        if at + size + 2 > bytes.len() {
            break;
        }
        data.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
    (None, bytes.len())
}

/// The corpus: what is sent on one connection, and what it is.
fn corpus(cookie: &str) -> Vec<(&'static str, String)> {
    let get = |answer: &str| {
        format!(
            "GET /app/hub HTTP/1.1\r\nHost: gatehouse.test\r\nCookie: {cookie}\r\nx-answer: {answer}\r\n\r\n"
        )
    };
    let post = |body: &str| {
        format!(
            "POST /app/form HTTP/1.1\r\nHost: gatehouse.test\r\nCookie: {cookie}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let headers = format!("Host: gatehouse.test\r\nCookie: {cookie}\r\n");
    let big_body = "p".repeat(150_000);
    let mut cases: Vec<(&'static str, String)> = [
        "length",
        "chunked",
        "until-close",
        "http10",
        "no-content",
        "not-modified",
        "custom-reason",
        "empty",
        "hop-by-hop",
        "cookie",
        "continue",
        "bad-length",
        "folded",
        "truncated",
        "big",
        "big-chunked",
    ]
    .into_iter()
    .map(|answer| (answer, get(answer)))
    .collect();
    cases.extend([
        (
            "HEAD, answered with a length and no body",
            format!("HEAD /app/hub HTTP/1.1\r\n{headers}x-answer: length\r\n\r\n"),
        ),
        ("a POST with a body", post("hello")),
        (
            "a POST with a body the upstream answers malformed, then a GET",
            format!(
                "POST /app/form HTTP/1.1\r\n{headers}x-answer: bad-length\r\nContent-Length: 2\r\n\r\nok{}",
                get("length")
            ),
        ),
        ("a POST with a body larger than a read", post(&big_body)),
        (
            "pipelined: GET, POST, GET",
            format!("{}{}{}", get("length"), post("abc"), get("chunked")),
        ),
        (
            "a chunked body (hyper's), then a GET",
            format!(
                "POST /app/form HTTP/1.1\r\n{headers}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{}",
                get("length")
            ),
        ),
        (
            "a GET, then a chunked body, then a GET",
            format!(
                "{}POST /app/form HTTP/1.1\r\n{headers}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
                get("length"),
                get("chunked")
            ),
        ),
        (
            "Connection: close, then a request that must not be answered",
            format!(
                "GET /app/hub HTTP/1.1\r\nConnection: close\r\n{headers}\r\n{}",
                get("length")
            ),
        ),
        (
            "no session: the login redirect",
            "GET /app/hub HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n".to_owned(),
        ),
        (
            "no virtual proxy, with a body at hand, then a GET",
            format!(
                "POST /other HTTP/1.1\r\n{headers}Content-Length: 3\r\n\r\nabc{}",
                get("length")
            ),
        ),
        (
            "no virtual proxy, with a body still to come",
            format!("POST /other HTTP/1.1\r\n{headers}Content-Length: 30\r\n\r\nabc"),
        ),
        (
            "forged identity and forwarding headers",
            format!(
                "GET /app/hub HTTP/1.1\r\n{headers}X-Qlik-User: UserDirectory=X; UserId=admin\r\n\
                 X-Forwarded-For: 10.9.9.9\r\nX_Remote_User: admin\r\nConnection: x-qlik-user\r\n\r\n"
            ),
        ),
        (
            "a path spelled to climb out",
            format!("GET /app/%2e%2e/admin HTTP/1.1\r\n{headers}\r\n"),
        ),
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST /app/form HTTP/1.1\r\n{headers}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
                get("length")
            ),
        ),
        (
            "two different Content-Lengths",
            format!("POST /app/form HTTP/1.1\r\n{headers}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!("POST /app/form HTTP/1.1\r\n{headers}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            format!("POST /app/form HTTP/1.1\r\n{headers}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "obs-fold",
            format!("GET /app/hub HTTP/1.1\r\nX-Folded: a\r\n b\r\n{headers}\r\n"),
        ),
        (
            "bare LF",
            format!("GET /app/hub HTTP/1.1\n{}\n", headers.replace("\r\n", "\n")),
        ),
        (
            "NUL in a header value",
            format!("GET /app/hub HTTP/1.1\r\nX-Nul: a\0b\r\n{headers}\r\n"),
        ),
        ("HTTP/1.0", format!("GET /app/hub HTTP/1.0\r\n{headers}\r\n")),
        (
            "Expect: 100-continue",
            format!("POST /app/form HTTP/1.1\r\n{headers}Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok"),
        ),
        (
            "an absolute-form target",
            format!("GET http://gatehouse.test/app/hub HTTP/1.1\r\n{headers}\r\n"),
        ),
        ("the node's own endpoint", format!("GET /app/qps/user HTTP/1.1\r\n{headers}\r\n")),
        ("no Host", format!("GET /app/hub HTTP/1.1\r\nCookie: {cookie}\r\n\r\n")),
        (
            "a Host named hop-by-hop: the upstream is told its node's name",
            format!("GET /app/hub HTTP/1.1\r\n{headers}Connection: host\r\n\r\n"),
        ),
        ("an unfinished head", format!("GET /app/hub HTTP/1.1\r\n{headers}")),
        ("a stray line first", format!("\r\n{}", get("length"))),
        ("an HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned()),
    ]);
    cases
}

#[tokio::test]
async fn the_nodes_own_engine_forwards_and_answers_every_input_as_hyper_does() {
    let upstream = RecordingUpstream::start().await;
    let proxy = AppProxy::new([upstream.address.to_string()])
        .key(r#"public_origins = ["http://gatehouse.test"]"#);
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    // A session validated once stays cached through the corpus: a seal cookie goes out
    // only when a node asks the control plane, which depends on its cache, not its engine.
    let cached = "[cache]\nttl = \"300s\"\ntouch_interval = \"600s\"\ngrace = \"600s\"\n";
    let engine =
        DataPlaneNode::start_with(&control_plane, &format!("fast_http1 = true\n{cached}")).await;
    let hyper_only =
        DataPlaneNode::start_with(&control_plane, &format!("fast_http1 = false\n{cached}")).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    // Each node validates the session once before the corpus, so that neither answer
    // depends on whose cache was cold.
    for node in [&engine, &hyper_only] {
        let warm =
            format!("GET /app/hub HTTP/1.1\r\nHost: gatehouse.test\r\nCookie: {cookie}\r\n\r\n");
        exchange(node.address(), warm.as_bytes()).await;
    }
    upstream.take();

    let nodes = (engine.address(), hyper_only.address());
    let forwarded = compare_on_corpus(&upstream, &cookie, nodes, |address, bytes| async move {
        exchange(address, &bytes).await
    })
    .await;
    assert!(
        forwarded >= 20,
        "the corpus reaches the upstream: {forwarded}"
    );
    let served = metric(&engine, "gatehouse_fast_http1_requests_total").await;
    assert!(served >= 20.0, "the engine served the corpus: {served}");
    let handed = metric(&engine, "gatehouse_fast_http1_handovers_total").await;
    assert!(
        handed >= 10.0,
        "hostile and unusual requests went to hyper: {handed}"
    );
    assert_eq!(
        metric(&hyper_only, "gatehouse_fast_http1_requests_total").await,
        0.0,
        "fast_http1 = false leaves every request to hyper"
    );
}

/// Sends each case of the corpus through `exchange` to the node with the engine and to the
/// one without (`nodes`, in that order), and holds them to the same requests at the upstream,
/// the same answers and the same end of the connection; how many requests reached the
/// upstream.
pub(super) async fn compare_on_corpus<Sent>(
    upstream: &RecordingUpstream,
    cookie: &str,
    nodes: (SocketAddr, SocketAddr),
    exchange: impl Fn(SocketAddr, Vec<u8>) -> Sent,
) -> usize
where
    Sent: std::future::Future<Output = (Vec<u8>, bool)>,
{
    let (engine, hyper_only) = nodes;
    let mut forwarded = 0;
    for (name, bytes) in corpus(cookie) {
        let (engine_answer, engine_closed) = exchange(engine, bytes.clone().into_bytes()).await;
        let engine_upstream = upstream.take();
        let (hyper_answer, hyper_closed) = exchange(hyper_only, bytes.into_bytes()).await;
        let hyper_upstream = upstream.take();
        assert_eq!(
            engine_upstream, hyper_upstream,
            "{name}: the upstream received different requests"
        );
        assert_eq!(
            answers(&engine_answer),
            answers(&hyper_answer),
            "{name}: the client got different answers"
        );
        assert_eq!(
            engine_closed, hyper_closed,
            "{name}: the connection ended differently"
        );
        forwarded += engine_upstream.len();
    }
    forwarded
}

/// A counter of a node's `/metrics`.
pub(super) async fn metric(node: &DataPlaneNode, name: &str) -> f64 {
    let url = format!("http://{}/metrics", node.admin_address());
    let text = crate::harness::client::get(&url, &[]).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
