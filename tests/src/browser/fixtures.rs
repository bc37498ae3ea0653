//! Shared set-up of the data-plane tests: the virtual proxy "app" in TOML, and small checks on
//! what the echo upstream reports.

use std::time::Duration;

use futures_util::SinkExt as _;
use gatehouse_proto::v1 as pb;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::client::{self, HttpResponse, WebSocket, next_message, websocket};
use crate::harness::{ControlPlane, DataPlaneNode, RedisServer};

/// Where the data plane sends browsers without a session.
pub const MODULE: &str = "http://login.test/auth";
/// The session cookie of virtual proxy "app" (QPS's naming convention).
pub const COOKIE: &str = "X-Qlik-Session-app";
/// The one host besides the node's own that "app" may redirect to or accept WebSockets from.
pub const PORTAL: &str = "portal.test";

/// Virtual proxy "app" in front of some upstream nodes, with room for more settings.
#[derive(Debug, Clone)]
pub struct AppProxy {
    nodes: Vec<String>,
    keys: Vec<String>,
    upstream: Vec<String>,
    tables: Vec<String>,
}

impl AppProxy {
    pub fn new<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            keys: Vec::new(),
            upstream: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// The same proxy in front of one more upstream node.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// A `key = value` line of the `[[virtual_proxies]]` table.
    pub fn key(mut self, line: &str) -> Self {
        self.keys.push(line.to_owned());
        self
    }

    /// A `key = value` line of `[virtual_proxies.upstream]`.
    pub fn upstream(mut self, line: &str) -> Self {
        self.upstream.push(line.to_owned());
        self
    }

    /// A sub-table such as `[virtual_proxies.header_authentication]` with its keys.
    pub fn table(mut self, text: &str) -> Self {
        self.tables.push(text.to_owned());
        self
    }

    pub fn toml(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|node| format!("{node:?}")).collect();
        format!(
            "[[virtual_proxies]]\nprefix = \"app\"\nauthentication_module_uri = \"{MODULE}\"\n\
             host_allow_list = [\"{PORTAL}\"]\n{}\n[virtual_proxies.upstream]\nnodes = [{}]\n{}\n{}\n",
            self.keys.join("\n"),
            nodes.join(", "),
            self.upstream.join("\n"),
            self.tables.join("\n"),
        )
    }

    /// The control plane's configuration with sessions in `redis`.
    pub fn on_redis(&self, redis: &RedisServer) -> String {
        format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n{}",
            redis.url(),
            self.toml()
        )
    }
}

/// `Cookie` header for a `name=value` pair.
pub fn with_cookie(cookie: &str) -> [(&'static str, &str); 1] {
    [("cookie", cookie)]
}

/// A header the upstream received, as text (the first value if it repeated).
pub fn seen_header<'a>(seen: &'a Value, name: &str) -> Option<&'a str> {
    match &seen["headers"][name] {
        Value::String(value) => Some(value),
        Value::Array(values) => values.first().and_then(Value::as_str),
        _ => None,
    }
}

/// `X-Qlik-User` as the proxy writes it.
pub fn qlik_user(directory: &str, id: &str) -> String {
    format!("UserDirectory={directory}; UserId={id}")
}

/// Which upstream answered a proxied request.
pub fn served_by(response: &HttpResponse) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["upstream"]
        .as_str()
        .expect("the echo upstream names itself")
        .to_owned()
}

/// The absolute URL a `Location` points to, seen from `base` (absolute or path-absolute).
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|scheme| base[scheme + 3..].find('/').map(|path| scheme + 3 + path))
        .unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

/// Whether a GET with `cookie` is sent to log in again (the session is not accepted).
pub async fn rejected(url: &str, cookie: &str) -> bool {
    let response = client::get(url, &with_cookie(cookie)).await;
    response.status == 302
        && response
            .location()
            .is_some_and(|location| location.starts_with(MODULE))
}

/// A WebSocket through `node` with `cookie`, proven open by one echoed message.
pub async fn open_socket(node: &DataPlaneNode, cookie: &str) -> WebSocket {
    let mut socket = websocket(&node.ws_url("/app/ws"), &with_cookie(cookie))
        .await
        .unwrap_or_else(|status| panic!("WebSocket refused with {status}"));
    assert_still_open(&mut socket).await;
    socket
}

/// Sends a message and expects it echoed back.
pub async fn assert_still_open(socket: &mut WebSocket) {
    socket
        .send(Message::text("ping?"))
        .await
        .expect("send on an open WebSocket");
    match next_message(socket, Duration::from_secs(2)).await {
        Some(Message::Text(text)) => assert_eq!(text.as_str(), "ping?"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// Logs out through the Personal API of `node`, as a page of the node's own site does (the
/// browser sends the page's `Origin`, which the node requires of a state change).
pub async fn logout(node: &DataPlaneNode, cookie: &str) -> HttpResponse {
    let origin = format!("http://{}", node.address());
    client::delete(
        &node.url("/app/qps/user"),
        &[("cookie", cookie), ("origin", &origin)],
    )
    .await
}

/// Deadline for things that travel through the control plane (revocations, reconnects).
pub const PROPAGATION: Duration = Duration::from_secs(5);

/// Node settings under which an unreachable control plane is given up on quickly, so a 503
/// takes no long wait.
pub const QUICK_CONTROL_PLANE: &str =
    "[control_plane]\nconnect_timeout = \"300ms\"\nrequest_timeout = \"1s\"\n";

/// Ends a session by its handle through the Session API, as an administrator does.
pub async fn delete_session(control_plane: &ControlPlane, handle: &str) {
    control_plane
        .sessions()
        .delete_session(pb::DeleteSessionRequest {
            session: Some(pb::SessionSelector {
                by: Some(pb::session_selector::By::Handle(handle.to_owned())),
            }),
        })
        .await
        .expect("DeleteSession succeeds");
}
