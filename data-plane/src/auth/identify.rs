//! Identification: which session a request belongs to, from the credential it carries (a
//! login ticket, a bearer JWT, the session cookie, a trusted header, a Windows sign-in) or
//! anonymous access; without one, the login flow the virtual proxy uses.

use std::net::SocketAddr;

use gatehouse_proto::user_name;
use gatehouse_proto::v1 as pb;
use http::request::Parts;
use http::{HeaderValue, Method};

use crate::auth::client::login_client;
use crate::auth::kerberos::{self, Negotiation};
use crate::auth::login::{Authenticated, allowed_target, logged_in, login_redirect, unavailable};
use crate::auth::{cookie, header, jwt, oidc, query, saml};
use crate::control::ControlError;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::state::{Asker, NodeState, Validation};
use crate::virtual_proxy::{Anonymous, VirtualProxy};

/// Who a request's user is, and whether a login ticket in its URI was redeemed for it.
#[derive(Debug)]
pub struct Identified {
    pub user: Authenticated,
    /// The URI carries `qlikTicket`, which must not reach the upstream.
    pub ticket_in_uri: bool,
}

/// What becomes of a page load whose login ticket was redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketLanding {
    /// It is sent back to its URI without the ticket (the proxy): the ticket stays out of
    /// the browser's history and the upstream's logs.
    Redirect,
    /// It is identified as it stands, and the front end decides how to answer (forward
    /// authentication, whose ingress may not pass a redirect on).
    InPlace,
}

/// The identification phase: a login ticket in the URI is redeemed (a page load is then
/// answered as `landing` says; a WebSocket upgrade proceeds); without one, the request's
/// other credentials or the login flow.
pub async fn identify(
    state: &NodeState,
    ctx: &RequestCtx,
    parts: &Parts,
    landing: TicketLanding,
) -> Result<Identified, Refusal> {
    let proxy = &ctx.proxy;
    let Some(ticket) = query::param(parts.uri.query(), "qlikTicket") else {
        let user = authenticate(state, proxy, parts, ctx.client.peer, &ctx.origin).await?;
        return Ok(Identified {
            user,
            ticket_in_uri: false,
        });
    };
    if !is_well_formed_ticket(&ticket) {
        return Err(Refusal::bad_request("the login ticket is malformed"));
    }
    // Boxed, as `authenticate`'s logins are: a call to the control plane.
    let user = Box::pin(redeem(state, ctx, &ticket, parts)).await?;
    if !ctx.websocket && landing == TicketLanding::Redirect {
        let mut user = user;
        let clean = query::local_redirect(parts.uri.path(), parts.uri.query(), "qlikTicket");
        return Err(Refusal::Redirect {
            location: clean,
            cookies: user.take_cookies(),
        });
    }
    Ok(Identified {
        user,
        ticket_in_uri: true,
    })
}

/// Tickets are URL-safe text; anything else was tampered with or mangled.
fn is_well_formed_ticket(ticket: &str) -> bool {
    (1..=256).contains(&ticket.len())
        && ticket
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~'))
}

/// Identifies the user of a request without a ticket.
pub async fn authenticate(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    peer: SocketAddr,
    origin: &Origin,
) -> Result<Authenticated, Refusal> {
    // A bearer token names the user explicitly: it wins over whatever cookie came along.
    // (Boxed, as the logins below: see there.)
    if proxy.jwt_authentication
        && let Some(login) = Box::pin(bearer(state, proxy, parts, origin, peer)).await
    {
        return login.map(|(authenticated, _)| authenticated);
    }
    let header_user = header_user(proxy, parts, peer);
    if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) {
        let seal = || cookie::read(&parts.headers, &proxy.seal_cookie_name);
        let asker = Asker {
            headers: &parts.headers,
            peer,
        };
        let (validation, renewed_seal) = state.validate_sealed(proxy, token, asker, seal).await;
        match validation {
            Validation::Valid(session) => {
                let same_user = header_user.as_ref().is_none_or(|(directory, id)| {
                    user_name::same(directory, &session.user_directory)
                        && user_name::same(id, &session.user_id)
                });
                if same_user {
                    let mut authenticated = Authenticated::existing(session);
                    authenticated.seal_cookie =
                        renewed_seal.and_then(|seal| cookie::set_seal(proxy, &seal, origin.secure));
                    return Ok(authenticated);
                }
            }
            Validation::Invalid => {}
            Validation::Unavailable => return Err(unavailable()),
            Validation::Limited(limited) => return Err(limited.refusal()),
        }
    }
    // Every way on from here asks the control plane, and the futures of its calls are
    // kilobytes: in a box of their own they are not part of the future of every request
    // with a cached session, which is moved whole at each step on the way in.
    Box::pin(log_in(state, proxy, parts, peer, origin)).await
}

/// The user named by the trusted header, where the proxy takes one from `peer`.
fn header_user(proxy: &VirtualProxy, parts: &Parts, peer: SocketAddr) -> Option<(String, String)> {
    proxy
        .header_authentication
        .as_ref()
        .and_then(|config| header::user(config, &parts.headers, peer.ip()))
}

/// [`authenticate`] of a request that carries no session of this proxy's user: a login by
/// the trusted header, Windows sign-in or anonymous access, else the login flow.
async fn log_in(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    peer: SocketAddr,
    origin: &Origin,
) -> Result<Authenticated, Refusal> {
    if let Some((directory, id)) = header_user(proxy, parts, peer) {
        let user = pb::User {
            user_directory: directory,
            user_id: id,
            attributes: Vec::new(),
        };
        let client = login_client(&state.trusted_proxies, &parts.headers, peer);
        let login = state
            .control
            .header_login(&proxy.prefix, user, client)
            .await;
        return logged_in(state, proxy, origin, login, "header");
    }
    let negotiation = kerberos::read(proxy, &parts.headers);
    match negotiation {
        Negotiation::Token(token) => {
            let client = login_client(&state.trusted_proxies, &parts.headers, peer);
            return kerberos_login(state, proxy, origin, token, client).await;
        }
        Negotiation::Ntlm => {
            state.metrics.login("kerberos", "refused");
            return Err(kerberos::ntlm_refused());
        }
        Negotiation::Malformed => {
            state.metrics.login("kerberos", "refused");
            return Err(Refusal::unauthorized("the Negotiate token is malformed"));
        }
        Negotiation::NotApplicable | Negotiation::Absent => {}
    }
    let forced = query::param(parts.uri.query(), "forceAuthentication")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    if proxy.anonymous == Anonymous::Always || (proxy.anonymous == Anonymous::Allow && !forced) {
        let client = login_client(&state.trusted_proxies, &parts.headers, peer);
        let login = state.control.anonymous_login(&proxy.prefix, client).await;
        return logged_in(state, proxy, origin, login, "anonymous");
    }
    let fallback = login_required(state, proxy, parts, origin, peer).await;
    if negotiation == Negotiation::Absent {
        return Err(negotiate(fallback));
    }
    Err(fallback)
}

/// The Negotiate challenge in place of `fallback`, the ticket flow's answer: its redirect
/// becomes the page's link for browsers that cannot negotiate (an OpenID login's binding
/// cookie goes with it). A 503 stays a 503, and a 429 a 429.
fn negotiate(fallback: Refusal) -> Refusal {
    match fallback {
        // A location that cannot be a header would have been a 400: no link to it.
        Refusal::Redirect { location, cookies } if HeaderValue::from_str(&location).is_ok() => {
            Refusal::Negotiate {
                other_login: Some(location),
                cookies,
            }
        }
        unavailable @ Refusal::Unavailable(_) => unavailable,
        limited @ Refusal::Limited { .. } => limited,
        _ => Refusal::Negotiate {
            other_login: None,
            cookies: Vec::new(),
        },
    }
}

/// Has the control plane accept a SPNEGO token and start a session for its principal.
async fn kerberos_login(
    state: &NodeState,
    proxy: &VirtualProxy,
    origin: &Origin,
    token: Vec<u8>,
    client: pb::ClientInfo,
) -> Result<Authenticated, Refusal> {
    match state
        .control
        .kerberos_login(&proxy.prefix, token, client)
        .await
    {
        Ok((login, output_token)) => {
            let mut authenticated = logged_in(state, proxy, origin, Ok(login), "kerberos")?;
            authenticated.www_authenticate = kerberos::mutual_authentication(&output_token);
            Ok(authenticated)
        }
        Err(ControlError::NotAccepted(_)) => {
            state.metrics.login("kerberos", "refused");
            Err(Refusal::unauthorized(
                "the Windows sign-in was not accepted",
            ))
        }
        Err(ControlError::Denied(message)) => {
            state.metrics.login("kerberos", "refused");
            tracing::info!(message, "Kerberos login refused");
            Err(Refusal::forbidden(
                "this Windows account's realm is not accepted here",
            ))
        }
        Err(error) => logged_in(state, proxy, origin, Err(error), "kerberos"),
    }
}

/// Logs in with the request's JWT bearer token, if the virtual proxy takes them and the
/// request has one; also returns the session token (for the CSRF token). A token seen before
/// is a cache lookup like a cookie; only an unknown one costs a `JwtLogin` round trip.
/// `peer`: where the request came from, recorded on a session it starts.
pub async fn bearer(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    peer: SocketAddr,
) -> Option<Result<(Authenticated, String), Refusal>> {
    if !proxy.jwt_authentication {
        return None;
    }
    let jwt = jwt::bearer(&parts.headers)?;
    if jwt.len() > jwt::MAX_TOKEN_LEN {
        return Some(Err(bearer_refused("the bearer token is too long")));
    }
    let token = jwt::session_token(&proxy.prefix, jwt);
    // Set the cookie unless the request carries it already.
    let has_cookie = cookie::read(&parts.headers, &proxy.cookie_name) == Some(token.as_str());
    let set_cookie = |token: &str| {
        if has_cookie {
            None
        } else {
            cookie::set(proxy, token, origin.secure)
        }
    };
    let asker = Asker {
        headers: &parts.headers,
        peer,
    };
    match state.validate(proxy, &token, asker).await {
        // The session ends with the token's `exp`; a cached copy must not outlive it.
        Validation::Valid(session) if session.absolute_expiry > state.clock.now() => {
            let mut authenticated = Authenticated::existing(session);
            authenticated.set_cookie = set_cookie(&token);
            return Some(Ok((authenticated, token)));
        }
        Validation::Valid(_) | Validation::Invalid => {}
        Validation::Unavailable => return Some(Err(unavailable())),
        Validation::Limited(limited) => return Some(Err(limited.refusal())),
    }
    let client = login_client(&state.trusted_proxies, &parts.headers, peer);
    let login = state.control.jwt_login(&proxy.prefix, jwt, client).await;
    if let Err(ControlError::NotAccepted(reason)) = login {
        state.metrics.login("jwt", "refused");
        // The control plane's reasons for refusing a token are short fixed texts meant for
        // the client ("the token has expired"); nothing internal.
        tracing::debug!(reason, "bearer token refused");
        return Some(Err(bearer_refused(reason)));
    }
    let result = logged_in(state, proxy, origin, login, "jwt").map(|mut authenticated| {
        if has_cookie {
            authenticated.set_cookie = None;
        }
        (authenticated, token)
    });
    Some(result)
}

fn bearer_refused(reason: impl Into<crate::refusal::Reason>) -> Refusal {
    Refusal::Unauthorized {
        reason: reason.into(),
        challenge: Some(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
    }
}

/// Exchanges a ticket for a session. A ticket that is no longer valid is not the end: on a
/// reload or a WebSocket reconnect, the cookie the ticket set may still be good.
pub async fn redeem(
    state: &NodeState,
    ctx: &RequestCtx,
    ticket: &str,
    parts: &Parts,
) -> Result<Authenticated, Refusal> {
    let (proxy, origin) = (&*ctx.proxy, &ctx.origin);
    let client = login_client(&state.trusted_proxies, &parts.headers, ctx.client.peer);
    match state.control.redeem(&proxy.prefix, ticket, client).await {
        Ok(Some(login)) => logged_in(state, proxy, origin, Ok(login), "ticket"),
        Ok(None) => {
            let asker = Asker {
                headers: &parts.headers,
                peer: ctx.client.peer,
            };
            if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name)
                && let Validation::Valid(session) = state.validate(proxy, token, asker).await
            {
                return Ok(Authenticated::existing(session));
            }
            Err(Refusal::forbidden(
                "the login ticket is invalid, expired or already used",
            ))
        }
        Err(error) => logged_in(state, proxy, origin, Err(error), "ticket"),
    }
}

/// No session: a GET goes to the authentication module with a remembered target; anything
/// else is 401, since a redirect would lose its body. A login started stores something, so
/// it counts against the flood limits on login starts (429 past them).
async fn login_required(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    peer: SocketAddr,
) -> Refusal {
    if parts.method != Method::GET {
        return Refusal::unauthorized("authentication required");
    }
    let asker = Asker {
        headers: &parts.headers,
        peer,
    };
    if proxy.oidc.is_some() || proxy.saml.is_some() {
        if let Err(limited) = state.start_login(proxy, asker) {
            return limited;
        }
        let answer = if proxy.oidc.is_some() {
            oidc::begin(state, proxy, parts, origin).await
        } else {
            saml::begin(state, proxy, parts, origin).await
        };
        state.login_answered(proxy, asker, &answer);
        return answer;
    }
    let Some(module) = &proxy.authentication_module_uri else {
        return Refusal::unauthorized("authentication required");
    };
    let target = match query::param(parts.uri.query(), "reloadUri") {
        Some(reload) => match allowed_target(proxy, origin, &reload) {
            Some(target) => target,
            None => {
                return Refusal::bad_request("reloadUri points to a host that is not allowed");
            }
        },
        None => {
            let path =
                query::without_param(parts.uri.path(), parts.uri.query(), "forceAuthentication");
            origin.url(&path)
        }
    };
    if let Err(limited) = state.start_login(proxy, asker) {
        return limited;
    }
    let answer = login_redirect(state, proxy, origin, module, &target).await;
    state.login_answered(proxy, asker, &answer);
    answer
}
