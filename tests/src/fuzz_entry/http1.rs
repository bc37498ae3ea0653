//! The node's own HTTP/1.1 engine (`gatehouse_data_plane::http1`) against hyper, in
//! process: the same bytes given to the engine's parsers and to hyper's HTTP/1 server or
//! client over an in-memory stream. Whatever the engine takes, hyper must read the same way:
//! a request head the engine serves is the request hyper parses (method, target, headers)
//! with the body hyper reads, and a chunked response body the engine relays is the body
//! hyper's client reads, with the same end.

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_data_plane::http1::relay::Dechunk;
use gatehouse_data_plane::http1::request_head::{self, Parsed};
use gatehouse_data_plane::http1::response_head;
use http::{Method, Request, Response};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// Request bytes: a head the engine serves is read alike by hyper, and so is its body when
/// the input holds it whole.
pub fn request_framing(data: &[u8]) {
    let Parsed::Complete(head) = request_head::parse(data, true) else {
        return;
    };
    let body_end = head.length as u64 + head.body_length;
    let whole = body_end <= data.len() as u64;
    let Some((parts, body)) = hyper_reads_request(data, whole) else {
        panic!("the engine serves a head hyper does not take: {data:?}");
    };
    assert_eq!(*head.request.method(), parts.method, "method");
    assert_eq!(head.request.uri(), &parts.uri, "target");
    assert_eq!(head.request.headers(), &parts.headers, "headers");
    if whole {
        let end = usize::try_from(body_end).expect("within the input");
        match body {
            Some(Ok(body)) => assert_eq!(&body[..], &data[head.length..end], "the body"),
            other => panic!("hyper read the body as {other:?}: {data:?}"),
        }
    }
}

/// Response bytes after a chunked head: a body the engine's decoder relays whole is the one
/// hyper's client reads, and one hyper refuses the engine refuses too. Every parser of the
/// engine also takes any input without panicking.
pub fn chunked_response(data: &[u8]) {
    let _ = response_head::parse(data, &Method::GET);
    let _ = request_head::parse(data, false);
    let mut dechunk = Dechunk::default();
    let mut relayed = Vec::new();
    let engine = dechunk
        .feed(data, &mut relayed)
        .map(|used| (used, dechunk.is_done()));
    let hyper = hyper_reads_chunked(data);
    match (engine, hyper) {
        (Ok((_, true)), Some(Ok(body))) => {
            assert_eq!(data_of(&relayed), body, "the relayed body");
        }
        (Ok((_, true)), other) => panic!("the engine relays a body hyper reads as {other:?}"),
        // The engine waits for more; hyper, at the input's end, reports it cut short.
        (Ok((_, false)), Some(Ok(_))) => panic!("hyper read a whole body the engine waits on"),
        (Err(error), Some(Ok(_))) => panic!("the engine refuses a body hyper reads: {error}"),
        (Ok(_), _) | (Err(_), _) => {}
    }
}

/// The data of a chunked body the engine wrote (its own, well-formed framing).
fn data_of(mut chunked: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(line) = chunked.windows(2).position(|pair| pair == b"\r\n") {
        let size = usize::from_str_radix(&String::from_utf8_lossy(&chunked[..line]), 16)
            .expect("the engine writes hex sizes");
        if size == 0 {
            break;
        }
        data.extend_from_slice(&chunked[line + 2..line + 2 + size]);
        chunked = &chunked[line + 2 + size + 2..];
    }
    data
}

/// What hyper's server made of the first request in `data`: its head, and (when
/// `with_body`) its body or the body's error. The client side stays open: hyper drops the
/// requests of a connection whose client half-closes.
fn hyper_reads_request(
    data: &[u8],
    with_body: bool,
) -> Option<(http::request::Parts, Option<Result<Bytes, String>>)> {
    RUNTIME.block_on(async {
        let (mut client, server) = tokio::io::duplex(data.len() + 1024);
        let (heads, mut head) = tokio::sync::mpsc::unbounded_channel();
        let (bodies, mut body) = tokio::sync::mpsc::unbounded_channel();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (heads, bodies) = (heads.clone(), bodies.clone());
            async move {
                let (parts, incoming) = request.into_parts();
                let _ = heads.send(parts);
                let read = incoming
                    .collect()
                    .await
                    .map(|body| body.to_bytes())
                    .map_err(|error| error.to_string());
                let _ = bodies.send(read);
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let serving = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service),
        );
        let _ = client.write_all(data).await;
        let wait = Duration::from_secs(2);
        let parts = tokio::time::timeout(wait, head.recv()).await.ok().flatten();
        let read = match (&parts, with_body) {
            (Some(_), true) => tokio::time::timeout(wait, body.recv()).await.ok().flatten(),
            _ => None,
        };
        serving.abort();
        drop(client);
        parts.map(|parts| (parts, read))
    })
}

/// hyper's client reading `body` after `HTTP/1.1 200 OK` with chunked framing: the body, its
/// error, or `None` when it never came to an end.
fn hyper_reads_chunked(body: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    response.extend_from_slice(body);
    RUNTIME.block_on(async {
        let (client, mut server) = tokio::io::duplex(response.len() + 1024);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client))
                .await
                .ok()?;
        let driving = tokio::spawn(connection);
        // An answer before the request would be an unsolicited one, which hyper refuses.
        let answering = async {
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match server.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&chunk[..read]),
                }
            }
            let _ = server.write_all(&response).await;
            let _ = server.shutdown().await;
        };
        let reading = async {
            let request = Request::builder()
                .uri("/")
                .header("host", "upstream")
                .body(Empty::new())
                .expect("a request");
            sender.ready().await.map_err(|error| error.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| error.to_string())?;
            response
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes().to_vec())
                .map_err(|error| error.to_string())
        };
        let (read, ()) = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::join!(reading, answering)
        })
        .await
        .ok()?;
        driving.abort();
        Some(read)
    })
}
