//! Who is making a request: the session cookie, a login ticket, a trusted header or anonymous
//! access, else the login flow (a redirect to the authentication module for a GET, 401 for
//! anything else). Never a 401 or a redirect for a session that merely could not be checked:
//! that is a 503.

// A refusal is the response itself, handed straight back to the client; boxing it would only
// add an allocation.
#![allow(clippy::result_large_err)]

pub mod cookie;
pub mod csrf;
pub mod header;
pub mod jwt;
pub mod kerberos;
pub mod oidc;
pub mod query;
pub mod rules;

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_proto::v1 as pb;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use tonic::Code;

use crate::body::ProxyBody;
use crate::cache::CachedSession;
use crate::control::{ControlError, Login};
use crate::respond;
use crate::state::{NodeState, Validation};
use crate::vproxy::{Anonymous, VirtualProxy};
use kerberos::Negotiation;

/// The request's user, and the cookie to set if a session was just created for it.
#[derive(Debug)]
pub struct Authenticated {
    pub session: Arc<CachedSession>,
    pub set_cookie: Option<HeaderValue>,
    /// `WWW-Authenticate: Negotiate <token>` completing a Kerberos mutual authentication.
    pub www_authenticate: Option<HeaderValue>,
}

/// What the request gets instead of reaching the upstream.
pub type Refusal = Response<ProxyBody>;

pub use crate::origin::Origin;

/// Identifies the user of a request without a ticket.
pub async fn authenticate(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    peer: SocketAddr,
    origin: &Origin,
) -> Result<Authenticated, Refusal> {
    // A bearer token names the user explicitly: it wins over whatever cookie came along.
    if let Some(login) = bearer(state, proxy, parts, origin).await {
        return login.map(|(authenticated, _)| authenticated);
    }
    let header_user = proxy
        .header_authentication
        .as_ref()
        .and_then(|config| header::user(config, &parts.headers, peer.ip()));
    if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) {
        match state.validate(proxy, token).await {
            Validation::Valid(session) => {
                let same_user = header_user.as_ref().is_none_or(|(directory, id)| {
                    directory.eq_ignore_ascii_case(&session.user_directory)
                        && id.eq_ignore_ascii_case(&session.user_id)
                });
                if same_user {
                    return Ok(Authenticated {
                        session,
                        set_cookie: None,
                        www_authenticate: None,
                    });
                }
            }
            Validation::Invalid => {}
            Validation::Unavailable => return Err(unavailable()),
        }
    }
    if let Some((directory, id)) = header_user {
        let user = pb::User {
            user_directory: directory,
            user_id: id,
            attributes: Vec::new(),
        };
        let login = state.control.header_login(&proxy.prefix, user).await;
        return logged_in(state, proxy, origin, login, "header");
    }
    let negotiation = kerberos::read(proxy, &parts.headers);
    match negotiation {
        Negotiation::Token(token) => return kerberos_login(state, proxy, origin, token).await,
        Negotiation::Ntlm => {
            state.metrics.login("kerberos", "refused");
            return Err(kerberos::ntlm_refused());
        }
        Negotiation::Malformed => {
            state.metrics.login("kerberos", "refused");
            return Err(respond::error(
                StatusCode::UNAUTHORIZED,
                "the Negotiate token is malformed",
            ));
        }
        Negotiation::NotApplicable | Negotiation::Absent => {}
    }
    let forced = query::param(parts.uri.query(), "forceAuthentication")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    if proxy.anonymous == Anonymous::Always || (proxy.anonymous == Anonymous::Allow && !forced) {
        let login = state.control.anonymous_login(&proxy.prefix).await;
        return logged_in(state, proxy, origin, login, "anonymous");
    }
    let fallback = login_required(state, proxy, parts, origin).await;
    if negotiation == Negotiation::Absent {
        return Err(negotiate(fallback));
    }
    Err(fallback)
}

/// The Negotiate challenge in place of `fallback`, the ticket flow's answer: its redirect
/// becomes the page's link for browsers that cannot negotiate. A 503 stays a 503.
fn negotiate(fallback: Refusal) -> Refusal {
    match fallback.status() {
        StatusCode::FOUND => {
            let mut challenge = kerberos::challenge(
                fallback
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|location| location.to_str().ok()),
            );
            // An OpenID login's binding cookie must reach the browser with the link.
            for cookie in fallback.headers().get_all(http::header::SET_COOKIE) {
                challenge
                    .headers_mut()
                    .append(http::header::SET_COOKIE, cookie.clone());
            }
            challenge
        }
        StatusCode::SERVICE_UNAVAILABLE => fallback,
        _ => kerberos::challenge(None),
    }
}

/// Has the control plane accept a SPNEGO token and start a session for its principal.
async fn kerberos_login(
    state: &NodeState,
    proxy: &VirtualProxy,
    origin: &Origin,
    token: Vec<u8>,
) -> Result<Authenticated, Refusal> {
    match state.control.kerberos_login(&proxy.prefix, token).await {
        Ok((login, output_token)) => {
            let mut authenticated = logged_in(state, proxy, origin, Ok(login), "kerberos")?;
            authenticated.www_authenticate = kerberos::mutual_authentication(&output_token);
            Ok(authenticated)
        }
        Err(ControlError::Refused(status)) if status.code() == Code::Unauthenticated => {
            state.metrics.login("kerberos", "refused");
            Err(respond::error(
                StatusCode::UNAUTHORIZED,
                "the Windows sign-in was not accepted",
            ))
        }
        Err(ControlError::Refused(status)) if status.code() == Code::PermissionDenied => {
            state.metrics.login("kerberos", "refused");
            tracing::info!(message = status.message(), "Kerberos login refused");
            Err(respond::error(
                StatusCode::FORBIDDEN,
                "this Windows account's realm is not accepted here",
            ))
        }
        Err(error) => logged_in(state, proxy, origin, Err(error), "kerberos"),
    }
}

/// Logs in with the request's JWT bearer token, if the virtual proxy takes them and the
/// request has one; also returns the session token (for the CSRF token). A token seen before
/// is a cache lookup like a cookie; only an unknown one costs a `JwtLogin` round trip.
pub async fn bearer(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
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
    match state.validate(proxy, &token).await {
        // The session ends with the token's `exp`; a cached copy must not outlive it.
        Validation::Valid(session) if session.absolute_expiry > std::time::SystemTime::now() => {
            return Some(Ok((
                Authenticated {
                    session,
                    set_cookie: set_cookie(&token),
                    www_authenticate: None,
                },
                token,
            )));
        }
        Validation::Valid(_) | Validation::Invalid => {}
        Validation::Unavailable => return Some(Err(unavailable())),
    }
    let login = state.control.jwt_login(&proxy.prefix, jwt).await;
    if let Err(ControlError::Refused(status)) = &login
        && status.code() == Code::Unauthenticated
    {
        state.metrics.login("jwt", "refused");
        // The control plane's reasons for refusing a token are short fixed texts meant for
        // the client ("the token has expired"); nothing internal.
        tracing::debug!(reason = status.message(), "bearer token refused");
        return Some(Err(bearer_refused(status.message())));
    }
    let result = logged_in(state, proxy, origin, login, "jwt").map(|mut authenticated| {
        if has_cookie {
            authenticated.set_cookie = None;
        }
        (authenticated, token)
    });
    Some(result)
}

fn bearer_refused(reason: &str) -> Refusal {
    let mut response = respond::error(StatusCode::UNAUTHORIZED, reason);
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// Exchanges a ticket for a session. A ticket that is no longer valid is not the end: on a
/// reload or a WebSocket reconnect, the cookie the ticket set may still be good.
pub async fn redeem(
    state: &NodeState,
    proxy: &VirtualProxy,
    ticket: &str,
    origin: &Origin,
    parts: &Parts,
) -> Result<Authenticated, Refusal> {
    match state.control.redeem(&proxy.prefix, ticket).await {
        Ok(Some(login)) => logged_in(state, proxy, origin, Ok(login), "ticket"),
        Ok(None) => {
            if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name)
                && let Validation::Valid(session) = state.validate(proxy, token).await
            {
                return Ok(Authenticated {
                    session,
                    set_cookie: None,
                    www_authenticate: None,
                });
            }
            Err(respond::error(
                StatusCode::FORBIDDEN,
                "the login ticket is invalid, expired or already used",
            ))
        }
        Err(error) => logged_in(state, proxy, origin, Err(error), "ticket"),
    }
}

fn logged_in(
    state: &NodeState,
    proxy: &VirtualProxy,
    origin: &Origin,
    login: Result<Login, ControlError>,
    method: &'static str,
) -> Result<Authenticated, Refusal> {
    match login {
        Ok(login) => {
            state.metrics.login(method, "ok");
            let session = state.remember(&login.token, &login.session);
            Ok(Authenticated {
                session,
                set_cookie: cookie::set(proxy, &login.token, origin.secure),
                www_authenticate: None,
            })
        }
        Err(error) => Err(login_failed(state, error, method)),
    }
}

/// What a login through `method` that the control plane did not grant gets: 503 when it (or
/// an identity provider behind it) cannot answer, else the refusal. Counted in the metrics.
fn login_failed(state: &NodeState, error: ControlError, method: &'static str) -> Refusal {
    let status = match error {
        ControlError::Unavailable(detail) => {
            state.metrics.login(method, "unavailable");
            tracing::warn!(%detail, "cannot log in: control plane unavailable");
            return unavailable();
        }
        ControlError::Refused(status) => status,
    };
    let unreachable_provider = status.code() == Code::FailedPrecondition;
    state.metrics.login(
        method,
        if unreachable_provider {
            "unavailable"
        } else {
            "refused"
        },
    );
    match status.code() {
        Code::ResourceExhausted => respond::error(
            StatusCode::FORBIDDEN,
            "this user has reached the maximum number of sessions",
        ),
        Code::InvalidArgument => respond::error(
            StatusCode::BAD_REQUEST,
            "the user named by the request is not valid",
        ),
        // An identity provider (a JWKS, say) cannot be reached: not the client's fault.
        Code::FailedPrecondition => {
            respond::error(StatusCode::SERVICE_UNAVAILABLE, status.message())
        }
        code => {
            tracing::error!(
                ?code,
                message = status.message(),
                "login refused by the control plane"
            );
            respond::error(StatusCode::FORBIDDEN, "login refused")
        }
    }
}

fn unavailable() -> Refusal {
    respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "sessions cannot be checked right now; try again shortly",
    )
}

/// No session: a GET goes to the authentication module with a remembered target; anything
/// else is 401, since a redirect would lose its body.
async fn login_required(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Refusal {
    if parts.method != Method::GET {
        return respond::error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    if let Some(oidc) = &proxy.oidc {
        return oidc::begin(state, proxy, oidc, parts, origin).await;
    }
    let Some(module) = &proxy.authentication_module_uri else {
        return respond::error(StatusCode::UNAUTHORIZED, "authentication required");
    };
    let target = match query::param(parts.uri.query(), "reloadUri") {
        Some(reload) => match allowed_target(proxy, origin, &reload) {
            Some(target) => target,
            None => {
                return respond::error(
                    StatusCode::BAD_REQUEST,
                    "reloadUri points to a host that is not allowed",
                );
            }
        },
        None => {
            let path =
                query::without_param(parts.uri.path(), parts.uri.query(), "forceAuthentication");
            origin.url(&path)
        }
    };
    login_redirect(state, proxy, origin, module, &target).await
}

/// 302 to the authentication module with `proxyRestUri` and `targetId`, as QPS does.
pub async fn login_redirect(
    state: &NodeState,
    proxy: &VirtualProxy,
    origin: &Origin,
    module: &str,
    target: &str,
) -> Refusal {
    match login_uri(state, proxy, origin, module, target).await {
        Ok(location) => respond::redirect(&location, None),
        Err(refusal) => refusal,
    }
}

/// The module URL a browser is sent to for logging in to `target`.
pub async fn login_uri(
    state: &NodeState,
    proxy: &VirtualProxy,
    origin: &Origin,
    module: &str,
    target: &str,
) -> Result<String, Refusal> {
    let target_id = match state.control.create_target(&proxy.prefix, target).await {
        Ok(id) => id,
        Err(ControlError::Unavailable(_)) => return Err(unavailable()),
        Err(ControlError::Refused(status)) if status.code() == Code::InvalidArgument => {
            tracing::warn!(message = status.message(), "target refused");
            return Err(respond::error(
                StatusCode::BAD_REQUEST,
                "the requested URL cannot be a login target",
            ));
        }
        // Anything else is the control plane's fault, not the client's: come back later.
        Err(ControlError::Refused(status)) => {
            tracing::error!(code = ?status.code(), "control plane failed to record a login target");
            return Err(unavailable());
        }
    };
    // The control plane's REST surface when it has one, so a QPS module's
    // `POST proxyRestUri + "ticket"` works unchanged; otherwise this node's address, where
    // modules find the virtual proxy as the last path segment.
    let rest = match &proxy.proxy_rest_uri {
        Some(uri) => uri.clone(),
        None => origin.url(&format!("/qps/{}/", proxy.prefix)),
    };
    let separator = if module.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{module}{separator}proxyRestUri={}&targetId={target_id}",
        percent_encoding::utf8_percent_encode(&rest, percent_encoding::NON_ALPHANUMERIC)
    ))
}

/// `uri` if it is an absolute http(s) URL on a public origin or an allowed host (no open
/// redirects).
pub fn allowed_target(proxy: &VirtualProxy, origin: &Origin, uri: &str) -> Option<String> {
    // A URL that does not parse whole (a control character in its path, say) is no target,
    // wherever its host is.
    let parses = uri.parse::<http::Uri>().is_ok();
    (parses && crate::origin::admits_url(proxy, origin, uri)).then(|| uri.to_owned())
}
