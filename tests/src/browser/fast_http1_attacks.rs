//! Attacks on the proxy listener's own HTTP/1.1 engine that the differential corpus does not
//! state on its own: each test says what an attacker tries and what the upstream must (not)
//! receive.

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
