//! A login's outcome: the control plane's answer becomes a cached session and its cookie, or
//! the refusal the client gets (a 503 when the control plane or an identity provider cannot
//! answer, never a 401); and the way to the authentication module for a user without a
//! session.

use std::sync::Arc;

use http::HeaderValue;

use crate::auth::cookie;
use crate::cache::CachedSession;
use crate::control::{ControlError, Login};
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::state::NodeState;
use crate::virtual_proxy::VirtualProxy;

/// The request's user, and the cookie to set if a session was just created for it.
#[derive(Debug)]
pub struct Authenticated {
    pub session: Arc<CachedSession>,
    /// The cookie of a session this request started.
    pub set_cookie: Option<HeaderValue>,
    /// The session's seal cookie: new with the session, or renewed.
    pub seal_cookie: Option<HeaderValue>,
    /// `WWW-Authenticate: Negotiate <token>` completing a Kerberos mutual authentication.
    pub www_authenticate: Option<HeaderValue>,
}

impl Authenticated {
    /// A session the request already had: nothing to set.
    pub fn existing(session: Arc<CachedSession>) -> Self {
        Self {
            session,
            set_cookie: None,
            seal_cookie: None,
            www_authenticate: None,
        }
    }

    /// The `Set-Cookie` values the response must carry (session cookie, then seal), taken.
    pub fn take_cookies(&mut self) -> Vec<HeaderValue> {
        self.set_cookie
            .take()
            .into_iter()
            .chain(self.seal_cookie.take())
            .collect()
    }
}

/// The session a login through `method` started (cached, with its cookie), or what the
/// client gets instead.
pub fn logged_in(
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
                seal_cookie: cookie::set_seal(proxy, &login.seal, origin.secure),
                www_authenticate: None,
            })
        }
        Err(error) => Err(login_failed(state, error, method)),
    }
}

/// What a login through `method` that the control plane did not grant gets: 503 when it (or
/// an identity provider behind it) cannot answer, else the refusal. Counted in the metrics.
pub fn login_failed(state: &NodeState, error: ControlError, method: &'static str) -> Refusal {
    let outcome = match error {
        ControlError::Unavailable(_)
        | ControlError::StoreUnavailable(_)
        | ControlError::ProviderUnavailable(_) => "unavailable",
        _ => "refused",
    };
    state.metrics.login(method, outcome);
    match error {
        ControlError::Unavailable(detail) | ControlError::StoreUnavailable(detail) => {
            tracing::warn!(%detail, "cannot log in: control plane unavailable");
            unavailable()
        }
        ControlError::LimitReached(_) => {
            Refusal::forbidden("this user has reached the maximum number of sessions")
        }
        ControlError::Invalid(_) => {
            Refusal::bad_request("the user named by the request is not valid")
        }
        // An identity provider (a JWKS, say) cannot be reached: not the client's fault.
        ControlError::ProviderUnavailable(reason) => Refusal::unavailable(reason),
        error @ (ControlError::NotAccepted(_)
        | ControlError::Denied(_)
        | ControlError::Failed { .. }) => {
            tracing::error!(%error, "login refused by the control plane");
            Refusal::forbidden("login refused")
        }
    }
}

/// 503: the session or login cannot be checked now.
pub fn unavailable() -> Refusal {
    Refusal::unavailable("sessions cannot be checked right now; try again shortly")
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
        Ok(location) => Refusal::redirect(location, None),
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
    // The control plane refuses longer targets too (`tickets.max_target_bytes`); a node
    // that knows it will be refused does not ask.
    if target.len() > gatehouse_proto::MAX_TARGET_URI_LEN {
        return Err(Refusal::bad_request(
            "the requested URL cannot be a login target",
        ));
    }
    let target_id = match state.control.create_target(&proxy.prefix, target).await {
        Ok(id) => id,
        Err(ControlError::Unavailable(_) | ControlError::StoreUnavailable(_)) => {
            return Err(unavailable());
        }
        Err(ControlError::Invalid(message)) => {
            tracing::warn!(message, "target refused");
            return Err(Refusal::bad_request(
                "the requested URL cannot be a login target",
            ));
        }
        // Anything else is the control plane's fault, not the client's: come back later.
        Err(error) => {
            tracing::error!(%error, "control plane failed to record a login target");
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

/// What the browser gets when the control plane refuses a step of a provider login
/// (`method`: `oidc`, `saml`) or cannot answer: its own short reason for a login it refused
/// or a request it found malformed, else what any other login would get.
pub fn refused_by_control_plane(
    state: &NodeState,
    error: ControlError,
    method: &'static str,
) -> Refusal {
    match error {
        // The control plane's reasons are short fixed texts meant for the user.
        ControlError::NotAccepted(reason) => {
            state.metrics.login(method, "refused");
            Refusal::unauthorized(reason)
        }
        ControlError::Invalid(reason) => {
            state.metrics.login(method, "refused");
            Refusal::bad_request(reason)
        }
        error => login_failed(state, error, method),
    }
}
