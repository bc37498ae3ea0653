//! Forward authentication, the node's second front end: an ingress (nginx `auth_request`,
//! ingress-nginx, Traefik, Caddy, Envoy `ext_authz`) describes a request it is about to
//! forward, and the node answers whether it may pass and as whom, instead of forwarding it.
//!
//! The original request is rebuilt from what a trusted ingress says about it (`original`),
//! then goes through the proxy's own phases, unchanged: limits and hygiene, routing, the
//! request context, identification and admission. What differs is only the answer: the
//! identity headers the virtual proxy's preset would have sent upstream (`Allowed`), or the
//! refusal the proxy would have answered with, which each front end
//! renders in the shape its ingress understands (`http`, `ext_authz`).

pub mod connections;
pub mod ext_authz;
pub mod fast_http1;
pub mod http;
pub mod original;

use std::sync::Arc;

use ::http::request::Parts;
use ::http::{HeaderMap, HeaderValue, Request, Uri};

use crate::auth::identify::TicketLanding;
use crate::auth::query;
use crate::identity_headers;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::request::admit::{self, Admitted};
use crate::request::context::{Client, RequestCtx};
use crate::request::{limits, path};
use crate::state::NodeState;
use crate::virtual_proxy::VirtualProxy;

/// A request that may pass: what the ingress copies into it, and what the browser's response
/// gains.
#[derive(Debug)]
pub struct Allowed {
    /// The virtual proxy the request was routed to.
    pub proxy: Arc<VirtualProxy>,
    /// The identity headers the proxy's preset sends upstream (none on a public path).
    pub identity: HeaderMap,
    /// `Set-Cookie` values: the cookie of a session this very request started (ticket,
    /// header, JWT, anonymous) and the session's new or renewed seal.
    pub cookies: Vec<HeaderValue>,
    /// `WWW-Authenticate: Negotiate <token>` completing a Kerberos mutual authentication.
    pub www_authenticate: Option<HeaderValue>,
    /// The original URL without its login ticket, when a ticket in it was redeemed for a
    /// page load: where a front end that can redirect sends the browser instead.
    pub without_ticket: Option<String>,
    /// The public origin the original request addressed, and its path and query: the
    /// original URL, made only by a front end that redirects to it.
    pub origin: Origin,
    pub target: Uri,
}

impl Allowed {
    /// The original URL, on the public origin it addressed.
    pub fn url(&self) -> String {
        self.origin.url(
            self.target
                .path_and_query()
                .map_or("/", |target| target.as_str()),
        )
    }
}

/// Runs the proxy's phases on `original`, the request the ingress described, sent by
/// `client` (the browser's address as the ingress reported it).
pub async fn decide(
    state: &NodeState,
    mut original: Request<()>,
    client: Client,
) -> Result<Allowed, Refusal> {
    as_forwarded(&original)?;
    limits::admit(&state.limits, &mut original)?;
    let table = state.table.load_full();
    let Some(proxy) = table.route(original.uri().path()).cloned() else {
        return Err(Refusal::NotFound(
            "no virtual proxy serves this path".into(),
        ));
    };
    path::check_spelling(original.uri().path(), proxy.allowed_spellings)
        .map_err(|refusal| Refusal::bad_request(refusal.to_string()))?;
    let ctx = RequestCtx::new(&original, client, proxy, table)?;
    let (parts, ()) = original.into_parts();
    let identified =
        match admit::identify_and_admit(state, &ctx, &parts, TicketLanding::InPlace).await? {
            Admitted::User(identified) => identified,
            // Nobody: no identity header to copy, so the ingress forwards none.
            Admitted::Public => {
                return Ok(Allowed {
                    proxy: ctx.proxy.clone(),
                    identity: HeaderMap::new(),
                    cookies: Vec::new(),
                    www_authenticate: None,
                    without_ticket: None,
                    origin: ctx.origin.clone(),
                    target: parts.uri,
                });
            }
        };
    let mut user = identified.user;
    let mut identity = HeaderMap::new();
    identity_headers::inject(
        &mut identity,
        &ctx.proxy.identity,
        &user.session,
        ctx.origin.secure,
    );
    Ok(Allowed {
        proxy: ctx.proxy.clone(),
        identity,
        cookies: user.take_cookies(),
        www_authenticate: user.www_authenticate,
        without_ticket: (identified.ticket_in_uri && !ctx.websocket)
            .then(|| ctx.origin.url(&without_ticket(&parts))),
        origin: ctx.origin.clone(),
        target: parts.uri,
    })
}

/// What the ingress will forward is the request as the client sent it, not the one the
/// proxy's phases clean up: the proxy forwards the path it decided on, an ingress its own
/// copy. So a check is decided only on what needs no cleaning. A path with `//`, `.` or `..`
/// segments (a rule on `/app/admin/` must not pass `/app/admin//../hub`, which the proxy
/// reads as `/app/hub` and an upstream may serve as `/app/admin/hub`) is refused, and so is a
/// header whose name holds `_`: the proxy drops those, an ingress may pass them on, and
/// CGI-style upstreams read `X_Qlik_User` as `X-Qlik-User`.
fn as_forwarded(original: &Request<()>) -> Result<(), Refusal> {
    let described = original.uri().path();
    if path::normalize(described).is_none_or(|canonical| *canonical != *described) {
        return Err(Refusal::bad_request(
            "the original path is not canonical (empty, . or .. segments): the ingress forwards \
             it as sent, so it is not decided; have the ingress normalise paths",
        ));
    }
    if let Some(name) = original
        .headers()
        .keys()
        .find(|name| name.as_str().bytes().any(|byte| byte == b'_'))
    {
        return Err(Refusal::bad_request(format!(
            "the header {name} holds '_', which upstreams may read as '-': have the ingress \
             drop such headers"
        )));
    }
    Ok(())
}

/// The original path and query without `qlikTicket`, as the proxy redirects to it.
fn without_ticket(parts: &Parts) -> String {
    query::local_redirect(parts.uri.path(), parts.uri.query(), "qlikTicket")
}
