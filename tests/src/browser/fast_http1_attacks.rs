//! Attacks on the proxy listener's own HTTP/1.1 engine that the differential corpus does not
//! state on its own: each test says what an attacker tries and what the upstream must (not)
//! receive.

use std::time::Duration;

use crate::browser::fast_http1::{RecordingUpstream, exchange};
use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::{ControlPlane, DataPlaneNode};

/// A recording upstream, a node with the engine and one without in front of it, and a
/// session on them.
struct Nodes {
    upstream: RecordingUpstream,
    _control_plane: ControlPlane,
    engine: DataPlaneNode,
    hyper_only: DataPlaneNode,
    cookie: String,
}

impl Nodes {
    async fn start() -> Self {
        let upstream = RecordingUpstream::start().await;
        let proxy = AppProxy::new([upstream.address.to_string()])
            .key(r#"public_origins = ["http://gatehouse.test"]"#);
        let control_plane = ControlPlane::start(&proxy.toml()).await;
        let engine = DataPlaneNode::start_with(&control_plane, "fast_http1 = true\n").await;
        let hyper_only = DataPlaneNode::start_with(&control_plane, "fast_http1 = false\n").await;
        let (cookie, _) =
            session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
        Self {
            upstream,
            _control_plane: control_plane,
            engine,
            hyper_only,
            cookie,
        }
    }

    /// Both nodes, named for the assertions.
    fn both(&self) -> [(&'static str, &DataPlaneNode); 2] {
        [("engine", &self.engine), ("hyper", &self.hyper_only)]
    }
}

/// `Connection: content-length` makes the hop-by-hop rule drop the client's length from the
/// upstream head; the body the engine relays after it must not reach the upstream as a
/// request of its own (with identity headers no one stripped).
#[tokio::test]
async fn a_body_cannot_be_smuggled_by_naming_its_length_hop_by_hop() {
    let nodes = Nodes::start().await;
    let cookie = &nodes.cookie;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: gatehouse.test\r\n\
                    X-Qlik-User: UserDirectory=CORP; UserId=admin\r\n\r\n";
    let request = format!(
        "POST /app/form HTTP/1.1\r\nHost: gatehouse.test\r\nCookie: {cookie}\r\n\
         Connection: content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    for (name, node) in nodes.both() {
        exchange(node.address(), request.as_bytes()).await;
        let received = nodes.upstream.take();
        assert_eq!(
            received.len(),
            1,
            "{name}: one request upstream: {received:#?}"
        );
        assert!(received[0].starts_with("POST "), "{name}: {received:#?}");
        assert!(
            received[0].contains(&format!("\r\ncontent-length: {}\r\n", smuggled.len())),
            "{name}: the upstream is told the body's length: {received:#?}"
        );
        assert!(received[0].ends_with(smuggled), "{name}: {received:#?}");
    }
}

/// An upstream that holds each request until the test releases it, then answers it with
/// bytes that are no response (the node answers 502 itself).
struct HeldUpstream {
    address: std::net::SocketAddr,
    arrived: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
}

impl HeldUpstream {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (arrival, arrived) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let arrival = arrival.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let (release, released) = tokio::sync::oneshot::channel();
                    let _ = arrival.send(release);
                    let _ = released.await;
                    let _ = stream.write_all(b"no response\r\n\r\n").await;
                });
            }
        });
        Self { address, arrived }
    }
}

/// A request in flight when the node is told to stop is answered, as hyper's graceful
/// shutdown answers it, also when the answer is the node's own (here a 502 for an upstream
/// that answered nonsense).
#[tokio::test]
async fn a_request_in_flight_at_shutdown_gets_the_nodes_own_answer() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut upstream = HeldUpstream::start().await;
    let proxy = AppProxy::new([upstream.address.to_string()])
        .key(r#"public_origins = ["http://gatehouse.test"]"#);
    let control_plane = ControlPlane::start(&proxy.toml()).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    // The answer used to race the stop signal: several nodes make a lost race near certain.
    for attempt in 0..6 {
        let mut node = DataPlaneNode::start_with(
            &control_plane,
            "fast_http1 = true\nshutdown_grace = \"5s\"\n",
        )
        .await;
        let mut client = tokio::net::TcpStream::connect(node.address())
            .await
            .unwrap();
        let request =
            format!("GET /app/hub HTTP/1.1\r\nHost: gatehouse.test\r\nCookie: {cookie}\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let release = tokio::time::timeout(Duration::from_secs(10), upstream.arrived.recv())
            .await
            .expect("the request reaches the upstream")
            .unwrap();
        node.begin_shutdown();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = release.send(());
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 502 "),
            "attempt {attempt}: the in-flight request was answered: {answer:?}"
        );
        assert!(node.stopped_within(Duration::from_secs(5)).await);
    }
}
