//! One request's context, built once a virtual proxy has been chosen for it: who sent it and
//! how, the public origin it addressed (checked before anything is built from its `Host`),
//! the virtual proxy, the path below the proxy's prefix, and whether it asks to become a
//! WebSocket. Every later phase reads it instead of working it out again.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use http::header::{CONNECTION, UPGRADE};

use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::router::ProxyTable;
use crate::virtual_proxy::VirtualProxy;

/// Who sent a request, and how.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub peer: SocketAddr,
    /// The port of the listener the request arrived on: without configured public
    /// origins, a node serves the loopback names of this port only.
    pub listener_port: u16,
    /// Over TLS.
    pub secure: bool,
    /// The request's span is on: trace context goes upstream.
    pub traced: bool,
}

/// What the phases know about one request.
#[derive(Debug)]
pub struct RequestCtx {
    pub client: Client,
    /// The origin the browser addressed; its scheme decides the cookie's Secure flag.
    pub origin: Origin,
    pub proxy: Arc<VirtualProxy>,
    /// The snapshot the proxy came from: every proxy's cookie names are hidden from
    /// upstreams.
    table: Arc<ProxyTable>,
    /// The path below the proxy's prefix, starting with `/`.
    pub relative_path: String,
    /// The request asks to become a WebSocket.
    pub websocket: bool,
}

impl RequestCtx {
    /// The context of `request`, routed to `proxy` of `table`; refused when its `Host` names
    /// none of the proxy's origins.
    pub fn new<B>(
        request: &Request<B>,
        client: Client,
        proxy: Arc<VirtualProxy>,
        table: Arc<ProxyTable>,
    ) -> Result<Self, Refusal> {
        // Before anything is built from the Host: only a public origin's name is served.
        let origin = Origin::resolve(&proxy, request, client.listener_port, client.secure)
            .inspect_err(|refusal| {
                tracing::debug!(
                    ?refusal,
                    "request for a host this virtual proxy is not served at"
                );
            })?;
        let relative_path = relative_path(request.uri().path(), &proxy).into_owned();
        Ok(Self {
            client,
            origin,
            relative_path,
            websocket: asks_for_websocket(request),
            proxy,
            table,
        })
    }

    /// Every virtual proxy's session (and OpenID binding) cookie names: none of them may
    /// reach an upstream, nor be set by one.
    pub fn session_cookies(&self) -> &[String] {
        self.table.cookie_names()
    }
}

/// The path below the virtual proxy's prefix, starting with `/`.
pub fn relative_path<'a>(path: &'a str, proxy: &VirtualProxy) -> Cow<'a, str> {
    let rest = if proxy.prefix.is_empty() {
        path
    } else {
        path.strip_prefix('/')
            .and_then(|path| path.strip_prefix(proxy.prefix.as_str()))
            .unwrap_or(path)
    };
    if rest.starts_with('/') {
        rest.into()
    } else {
        format!("/{rest}").into()
    }
}

/// Whether a request asks to become a WebSocket.
fn asks_for_websocket<B>(request: &Request<B>) -> bool {
    let has_token = |name, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket")
}
