//! The forward-auth listener's own HTTP/1.1 loop against hyper: the same bytes sent to a
//! node that answers plain checks itself (the default) and to one that leaves everything to
//! hyper (`fast_http1 = false`) get the same answers, request for request, and the same
//! end of the connection. The corpus is the smuggling and hostile-input one: conflicting
//! lengths, `Transfer-Encoding` variants, obs-fold, bare LF, NUL, oversized heads,
//! pipelining, and requests that move a connection from one loop to the other.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Authorizers, FORWARD_AUTH};
use crate::harness::DataPlaneNode;

/// The headers of a check nginx sends, for the original `GET /app/hub`, with `cookie`.
fn check_headers(cookie: &str) -> String {
    format!(
        "Host: authorizer\r\nX-Original-URI: /app/hub\r\nX-Original-Method: GET\r\n\
         X-Forwarded-Host: 127.0.0.1:8080\r\nCookie: {cookie}\r\n"
    )
}

/// The corpus: what is sent on one connection, and what it is.
fn corpus(cookie: &str) -> Vec<(&'static str, Vec<u8>)> {
    let check = check_headers(cookie);
    let denied = check.replace("/app/hub", "/app/admin");
    let no_session = check.replace(cookie, "other=1");
    let big = format!("X-Big: {}\r\n", "b".repeat(20_000));
    let cases: Vec<(&'static str, String)> = vec![
        (
            "a plain check",
            format!("GET /auth HTTP/1.1\r\n{check}\r\n"),
        ),
        ("HEAD", format!("HEAD /auth HTTP/1.1\r\n{check}\r\n")),
        (
            "pipelined: allowed, denied, no session",
            format!(
                "GET /auth HTTP/1.1\r\n{check}\r\nGET /auth HTTP/1.1\r\n{denied}\r\n\
                 GET /auth HTTP/1.1\r\n{no_session}\r\n"
            ),
        ),
        (
            "Connection: close, then a request that must not be answered",
            format!(
                "GET /auth HTTP/1.1\r\nConnection: close\r\n{check}\r\nGET /auth HTTP/1.1\r\n{check}\r\n"
            ),
        ),
        (
            "Content-Length: 0",
            format!("GET /auth HTTP/1.1\r\nContent-Length: 0\r\n{check}\r\n"),
        ),
        (
            "a body by length, then a plain check",
            format!(
                "POST /auth HTTP/1.1\r\nContent-Length: 5\r\n{check}\r\nhelloGET /auth HTTP/1.1\r\n{check}\r\n"
            ),
        ),
        (
            "a chunked body, then a plain check",
            format!(
                "POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{check}\r\n5\r\nhello\r\n0\r\n\r\n\
                 GET /auth HTTP/1.1\r\n{check}\r\n"
            ),
        ),
        (
            "a plain check, then a chunked one, then a plain one",
            format!(
                "GET /auth HTTP/1.1\r\n{check}\r\nPOST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
                 {check}\r\n0\r\n\r\nGET /auth HTTP/1.1\r\n{check}\r\n"
            ),
        ),
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "POST /auth HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n{check}\r\n0\r\n\r\n\
                 GET /auth HTTP/1.1\r\n{check}\r\n"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /auth HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n{check}\r\nab"
            ),
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            format!(
                "POST /auth HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n{check}\r\n0\r\n\r\n"
            ),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!("POST /auth HTTP/1.1\r\nTransfer-Encoding : chunked\r\n{check}\r\n0\r\n\r\n"),
        ),
        (
            "an oversized chunk size",
            format!(
                "POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{check}\r\nffffffffffffffffff\r\n"
            ),
        ),
        (
            "obs-fold",
            format!("GET /auth HTTP/1.1\r\nX-Folded: a\r\n b\r\n{check}\r\n"),
        ),
        (
            "bare LF",
            format!("GET /auth HTTP/1.1\n{}\n", check.replace("\r\n", "\n")),
        ),
        (
            "NUL in a header value",
            format!("GET /auth HTTP/1.1\r\nX-Nul: a\0b\r\n{check}\r\n"),
        ),
        ("HTTP/1.0", format!("GET /auth HTTP/1.0\r\n{check}\r\n")),
        (
            "no Host",
            format!(
                "GET /auth HTTP/1.1\r\n{}\r\n",
                check.replace("Host: authorizer\r\n", "")
            ),
        ),
        (
            "a method with a bad byte",
            format!("G@T /auth HTTP/1.1\r\n{check}\r\n"),
        ),
        (
            "a head past max_header_bytes",
            format!("GET /auth HTTP/1.1\r\n{big}{check}\r\n"),
        ),
        (
            "Upgrade",
            format!(
                "GET /auth HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{check}\r\n"
            ),
        ),
        (
            "Expect: 100-continue",
            format!(
                "POST /auth HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n{check}\r\nok"
            ),
        ),
        (
            "an absolute-form target",
            format!("GET http://authorizer/auth HTTP/1.1\r\n{check}\r\n"),
        ),
        (
            "another path",
            format!("GET /other HTTP/1.1\r\n{check}\r\n"),
        ),
        (
            "a POST to /signin",
            format!("POST /signin HTTP/1.1\r\n{check}\r\n"),
        ),
        (
            "an unfinished head",
            format!("GET /auth HTTP/1.1\r\n{check}"),
        ),
        (
            "a stray line before the request",
            format!("\r\nGET /auth HTTP/1.1\r\n{check}\r\n"),
        ),
        (
            "an HTTP/2 preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, text)| (name, text.into_bytes()))
        .collect()
}

/// Sends `bytes` on a new connection to `address` and reads until the node closes it or
/// stays silent for a moment (a connection kept alive). The sending side stays open: hyper
/// drops a connection whose client half-closes, answered or not.
async fn exchange(address: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16384];
    while let Ok(Ok(read)) =
        tokio::time::timeout(Duration::from_millis(400), stream.read(&mut chunk)).await
    {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    answer
}

/// The answers in `bytes`, each as its status line, its headers sorted (the date and the
/// parts that are random per answer left out) and its body.
fn answers(mut bytes: &[u8]) -> Vec<String> {
    let mut answers = Vec::new();
    while let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default().to_owned();
        let mut length = 0;
        let mut headers: Vec<String> = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "date" => continue,
                // A seal goes out when a node next asks the control plane about the session,
                // which depends on that node's cache, not on the loop.
                "set-cookie"
                    if value
                        .split('=')
                        .next()
                        .is_some_and(|n| n.ends_with("-seal")) =>
                {
                    continue;
                }
                "content-length" => length = value.parse().unwrap_or(0),
                _ => {}
            }
            let value = match name.as_str() {
                // A new login target and cookie are random on each answer.
                "x-gatehouse-location" | "location" => value
                    .split_once("targetId=")
                    .map_or(value.to_owned(), |(before, _)| {
                        format!("{before}targetId=…")
                    }),
                "set-cookie" => value.split('=').next().unwrap_or_default().to_owned(),
                _ => value.to_owned(),
            };
            headers.push(format!("{name}: {value}"));
        }
        headers.sort();
        let head_only = status.starts_with("HTTP/1.1 100 ");
        let body_end = (end + 4 + if head_only { 0 } else { length }).min(bytes.len());
        let body = String::from_utf8_lossy(&bytes[end + 4..body_end]);
        answers.push(format!("{status}\n{}\n\n{body}", headers.join("\n")));
        bytes = &bytes[body_end..];
    }
    if !bytes.is_empty() {
        answers.push(format!("(unframed: {})", String::from_utf8_lossy(bytes)));
    }
    answers
}

#[tokio::test]
async fn the_nodes_own_loop_answers_every_input_as_hyper_does() {
    let authorizers = Authorizers::start().await;
    let hyper_only = DataPlaneNode::start_with(
        &authorizers.control_plane,
        &format!("{FORWARD_AUTH}fast_http1 = false\n"),
    )
    .await;
    let cookie = authorizers.alice_session().await;
    let mut answered_here = 0;
    for (name, bytes) in corpus(&cookie) {
        let fast = exchange(authorizers.one.forward_auth_address(), &bytes).await;
        let reference = exchange(hyper_only.forward_auth_address(), &bytes).await;
        let (fast, reference) = (answers(&fast), answers(&reference));
        assert_eq!(fast, reference, "{name}: the two loops answer differently");
        if fast
            .first()
            .is_some_and(|answer| answer.contains("x-qlik-user"))
        {
            answered_here += 1;
        }
    }
    assert!(answered_here >= 5, "the corpus has checks that are allowed");
    // A sanity check of the comparison itself: HEAD has no body, GET has one only when
    // refused; the two differ.
    let head = answers(
        &exchange(
            authorizers.one.forward_auth_address(),
            b"HEAD /other HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await,
    );
    let get = answers(
        &exchange(
            authorizers.one.forward_auth_address(),
            b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await,
    );
    assert_eq!(head.len(), 1);
    assert_ne!(head, get);
}
