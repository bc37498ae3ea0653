//! What a browser user sees through a data-plane node: logging in, the Personal API over
//! HTTP, WebSockets and their limits, the identity headers the upstream gets, requests that
//! are refused before the upstream, the signed identity assertion and its keys, floods of
//! requests without a session, paths served without identification, inactivity
//! timeouts, logout across nodes, per-proxy options and how requests are spread over
//! upstream nodes.

mod fast_http1;
mod fast_http1_attacks;
mod fast_http1_tls;
pub(crate) mod fixtures;
mod flood_limits;
mod hostile_requests;
mod identity_headers;
mod inactivity_timeout;
mod login;
mod personal_api_over_http;
mod public_paths;
mod request_hygiene;
mod sessions_across_nodes;
pub(crate) mod signed_assertion;
mod upstream_balancing;
mod virtual_proxy_options;
mod websocket;
mod websocket_limits;
