//! What a WebSocket may cost a node: frames are relayed as they arrive, never reassembled into
//! messages, so unfinished fragmented messages hold no memory in the node; a frame over
//! `limits.max_websocket_frame_bytes` ends the socket with close code 1009; and a session, and
//! the node as a whole, may hold only so many WebSockets (the next upgrade is 429 or 503).

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use gatehouse_proto::v1 as pb;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use crate::browser::fixtures::{AppProxy, COOKIE, assert_still_open, with_cookie};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::{WebSocket, expect_close, websocket};
use crate::harness::processes::{ControlPlaneProcess, DataPlaneProcess, ProcessUnderTest};
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, eventually};

/// Sockets that each hold an unfinished message in the memory test.
const HOLDING_SOCKETS: usize = 40;
/// What each of them has sent of its message, in fragments of [`FRAGMENT`].
const HELD_PER_SOCKET: usize = 4 << 20;
const FRAGMENT: usize = 64 << 10;
/// How much the node's RSS may grow while the sockets hold 160 MiB of unfinished messages:
/// a relay that reassembles holds all of it (the old one grew by about 170 MiB), a relay of
/// frames holds its buffers, a few hundred KiB for 40 sockets.
const HELD_GROWTH_BOUND: u64 = 48 << 20;

/// Fragment `index` of a binary message that never ends.
fn unfinished_fragment(index: usize, payload: Vec<u8>) -> Message {
    let opcode = if index == 0 {
        OpCode::Data(Data::Binary)
    } else {
        OpCode::Data(Data::Continue)
    };
    Message::Frame(Frame::message(payload, opcode, false))
}

/// The fragments of `message` (the last one final), `fragment` bytes each.
fn fragments(message: &[u8], opcode: Data, fragment: usize) -> Vec<Message> {
    let chunks: Vec<&[u8]> = message.chunks(fragment).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let opcode = if index == 0 {
                OpCode::Data(opcode)
            } else {
                OpCode::Data(Data::Continue)
            };
            Message::Frame(Frame::message(chunk.to_vec(), opcode, index == last))
        })
        .collect()
}

/// Waits for the pong to `payload`, skipping anything else; a pong proves every frame sent
/// before the ping has passed the node.
async fn expect_pong(socket: &mut WebSocket, payload: &[u8], wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Pong(data)))) if data.as_ref() == payload => return,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected the pong within {wait:?}, got {other:?}"),
        }
    }
}

async fn process_cookie(control: &ControlPlaneProcess, id: &str) -> String {
    let created = control
        .sessions()
        .create_session(pb::CreateSessionRequest {
            virtual_proxy: "app".to_owned(),
            user: Some(user("CORP", id)),
            session_token: None,
        })
        .await
        .expect("CreateSession succeeds")
        .into_inner();
    format!("{COOKIE}={}", created.session_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_fragmented_messages_on_many_sockets_hold_no_memory_in_the_node() {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlaneProcess::start(&AppProxy::new([upstream.node()]).toml()).await;
    let mut node = DataPlaneProcess::start(&control, "ws-memory", &[]).await;
    // Sessions of their own, so that the per-session cap does not get in the way.
    let mut sockets = Vec::new();
    for index in 0..HOLDING_SOCKETS {
        let cookie = process_cookie(&control, &format!("holder-{index}")).await;
        let mut socket = websocket(&node.ws_url("/app/ws"), &with_cookie(&cookie))
            .await
            .unwrap_or_else(|status| panic!("WebSocket {index} refused with {status}"));
        assert_still_open(&mut socket).await;
        sockets.push(socket);
    }
    let before = node.process.stats().expect("read the node's /proc");

    let fragment = vec![0x5a_u8; FRAGMENT];
    let mut holders = Vec::new();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let fragment = fragment.clone();
        holders.push(tokio::spawn(async move {
            for part in 0..HELD_PER_SOCKET / FRAGMENT {
                socket
                    .feed(unfinished_fragment(part, fragment.clone()))
                    .await
                    .unwrap_or_else(|error| panic!("socket {index}, fragment {part}: {error}"));
            }
            // Control frames may come between fragments; this one comes back once the
            // whole unfinished message has passed the node.
            let marker = format!("held {index}").into_bytes();
            socket
                .send(Message::Ping(marker.clone().into()))
                .await
                .unwrap_or_else(|error| panic!("socket {index}, ping: {error}"));
            expect_pong(&mut socket, &marker, Duration::from_secs(60)).await;
            socket
        }));
    }
    let mut sockets = Vec::new();
    for holder in holders {
        sockets.push(holder.await.expect("a socket's sender panicked"));
    }
    node.process.assert_running();
    let held = node.process.stats().expect("read the node's /proc");
    let growth = held.rss_bytes.saturating_sub(before.rss_bytes);
    eprintln!(
        "{HOLDING_SOCKETS} sockets holding {} MiB each: node {before} before, {held} after \
         (+{:.1} MiB)",
        HELD_PER_SOCKET >> 20,
        growth as f64 / f64::from(1 << 20)
    );
    assert!(
        growth < HELD_GROWTH_BOUND,
        "the node's RSS grew by {growth} bytes while sockets held unfinished messages \
         ({before} before, {held} after)"
    );
    assert_eq!(
        node.metric("gatehouse_open_websockets").await,
        Some(HOLDING_SOCKETS as f64),
        "every socket is still open"
    );
    drop(sockets);
}

async fn start(node_toml: &str) -> (EchoUpstream, ControlPlane, DataPlaneNode, String) {
    let upstream = EchoUpstream::start("engine").await;
    let control = ControlPlane::start(&AppProxy::new([upstream.node()]).toml()).await;
    let node = DataPlaneNode::start_with(&control, node_toml).await;
    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    (upstream, control, node, cookie)
}

#[tokio::test]
async fn fragmented_messages_arrive_whole_at_the_upstream() {
    let (_upstream, _control, node, cookie) = start("").await;
    let mut socket = websocket(&node.ws_url("/app/ws"), &with_cookie(&cookie))
        .await
        .expect("upgrade");

    // 3 MiB in 64 KiB fragments, with a ping between two of them; the echo upstream answers
    // with the message it reassembled, as one frame.
    let binary: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut parts = fragments(&binary, Data::Binary, 64 << 10);
    parts.insert(5, Message::Ping(b"between".to_vec().into()));
    for part in parts {
        socket.feed(part).await.expect("send a fragment");
    }
    socket.flush().await.expect("flush");
    expect_pong(&mut socket, b"between", Duration::from_secs(10)).await;
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Binary(echo)))) => {
            assert_eq!(echo.len(), binary.len());
            assert!(echo.as_ref() == binary.as_slice(), "the echo differs");
        }
        other => panic!("expected the binary echo, got {other:?}"),
    }

    // Text split inside a multi-byte character: fragments are not text on their own.
    let text = "grüße ".repeat(20_000);
    for part in fragments(text.as_bytes(), Data::Text, 1001) {
        socket.feed(part).await.expect("send a fragment");
    }
    socket.flush().await.expect("flush");
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Text(echo)))) => assert_eq!(echo.as_str(), text),
        other => panic!("expected the text echo, got {other:?}"),
    }
    assert_still_open(&mut socket).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_from_the_client_is_refused_with_1009() {
    let (_upstream, _control, node, cookie) =
        start("[limits]\nmax_websocket_frame_bytes = 65536\n").await;
    let mut socket = websocket(&node.ws_url("/app/ws"), &with_cookie(&cookie))
        .await
        .expect("upgrade");
    socket
        .send(Message::binary(vec![1u8; 65_536]))
        .await
        .expect("send a frame at the limit");
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Binary(echo)))) => assert_eq!(echo.len(), 65_536),
        other => panic!("a frame at the limit is relayed, got {other:?}"),
    }

    socket
        .send(Message::binary(vec![1u8; 65_537]))
        .await
        .expect("send a frame over the limit");
    let frame = expect_close(&mut socket, Duration::from_secs(5))
        .await
        .expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
    eventually(
        "the node to forget the socket",
        Duration::from_secs(5),
        || {
            let open = node.state().sockets.count();
            async move { (open == 0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_frame_over_the_limit_from_the_upstream_is_refused_with_1009() {
    let (_upstream, _control, node, cookie) =
        start("[limits]\nmax_websocket_frame_bytes = 65536\n").await;
    let mut socket = websocket(&node.ws_url("/app/ws"), &with_cookie(&cookie))
        .await
        .expect("upgrade");
    // Small fragments pass; the upstream echoes the message as one 96 KiB frame.
    for part in fragments(&[7u8; 96 << 10], Data::Binary, 32 << 10) {
        socket.feed(part).await.expect("send a fragment");
    }
    socket.flush().await.expect("flush");
    let frame = expect_close(&mut socket, Duration::from_secs(5))
        .await
        .expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
}

#[tokio::test]
async fn a_session_beyond_its_websocket_cap_is_refused_with_429() {
    let (_upstream, control, node, cookie) =
        start("[limits]\nmax_websockets_per_session = 2\n").await;
    let url = node.ws_url("/app/ws");
    let mut first = websocket(&url, &with_cookie(&cookie)).await.expect("first");
    let mut second = websocket(&url, &with_cookie(&cookie))
        .await
        .expect("second");
    assert_eq!(
        websocket(&url, &with_cookie(&cookie)).await.err(),
        Some(429),
        "the third WebSocket of one session"
    );
    assert_still_open(&mut first).await;
    assert_still_open(&mut second).await;

    // Another session is not affected.
    let (other, _) = session_cookie(&control, "app", COOKIE, user("CORP", "bob")).await;
    let mut others = websocket(&url, &with_cookie(&other))
        .await
        .expect("another session's WebSocket");
    assert_still_open(&mut others).await;

    // A closed socket frees its place.
    first.close(None).await.expect("close");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), first.next()).await {}
    eventually(
        "a WebSocket once one of the session's closed",
        Duration::from_secs(5),
        || {
            let (url, cookie) = (url.clone(), cookie.clone());
            async move { websocket(&url, &with_cookie(&cookie)).await.ok() }
        },
    )
    .await;

    let metrics =
        crate::harness::client::get(&format!("http://{}/metrics", node.admin_address()), &[])
            .await
            .text();
    assert!(
        metrics.contains("gatehouse_websockets_refused_total{limit=\"session\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_node_beyond_its_websocket_cap_refuses_with_503() {
    let (_upstream, control, node, cookie) = start("[limits]\nmax_websockets = 2\n").await;
    let url = node.ws_url("/app/ws");
    let (other, _) = session_cookie(&control, "app", COOKIE, user("CORP", "bob")).await;
    let mut first = websocket(&url, &with_cookie(&cookie)).await.expect("first");
    let mut second = websocket(&url, &with_cookie(&other)).await.expect("second");
    let (third, _) = session_cookie(&control, "app", COOKIE, user("CORP", "carol")).await;
    assert_eq!(
        websocket(&url, &with_cookie(&third)).await.err(),
        Some(503),
        "a third WebSocket on a node that takes two"
    );
    assert_still_open(&mut first).await;
    assert_still_open(&mut second).await;
    let refused = crate::harness::client::get(
        &url.replace("ws://", "http://"),
        &[
            ("cookie", third.as_str()),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.text().trim(), "too many WebSockets on this node");
    let metrics =
        crate::harness::client::get(&format!("http://{}/metrics", node.admin_address()), &[])
            .await
            .text();
    assert!(
        metrics.contains("gatehouse_websockets_refused_total{limit=\"node\"} 2"),
        "{metrics}"
    );
}
