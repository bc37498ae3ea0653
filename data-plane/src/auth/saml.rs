//! SAML login on a node: a browser without a session is sent to the identity provider with
//! an AuthnRequest the control plane makes, and a binding cookie that ties the login to this
//! browser. The routes the identity provider sends the browser back to are the node's own
//! endpoints (`endpoints::saml`); the control plane alone reads and verifies SAML.

use gatehouse_proto::v1 as pb;
use http::HeaderValue;
use http::request::Parts;

use crate::auth::login::refused_by_control_plane;
use crate::auth::oidc::local_target;
use crate::auth::{cookie, query};
use crate::control::ControlError;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::state::NodeState;
use crate::virtual_proxy::{SamlAuthentication, VirtualProxy};

pub const LOGIN: &str = "/saml/login";
pub const ACS: &str = "/saml/acs";
pub const METADATA: &str = "/saml/metadata";

/// A browser without a session: 302 to the identity provider, with the binding cookie that
/// ties the login to this browser. It comes back to the page it asked for.
pub async fn begin(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Refusal {
    let target = query::local_redirect(parts.uri.path(), parts.uri.query(), "forceAuthentication");
    begin_to(state, proxy, parts, origin, target).await
}

/// The sign-in URL of this virtual proxy, `/{prefix}/saml/login?target=...`, coming back to
/// `target`; `None` unless `target` is on this site (see [`local_target`]).
pub fn login_uri(proxy: &VirtualProxy, origin: &Origin, target: &str) -> Option<String> {
    let target = local_target(proxy, target, origin)?;
    Some(origin.url(&format!(
        "{}{LOGIN}?target={}",
        proxy.path_prefix(),
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
    )))
}

/// To the identity provider, coming back to `target` (a path on this site).
pub async fn begin_to(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    target: String,
) -> Refusal {
    let Some(saml) = &proxy.saml else {
        return Refusal::NotFound("not found".into());
    };
    let request = pb::SamlBeginRequest {
        virtual_proxy: proxy.prefix.clone(),
        target,
        binding: cookie::read(&parts.headers, saml.binding_cookie(origin.secure))
            .unwrap_or_default()
            .to_owned(),
    };
    match state.control.saml_begin(request).await {
        Ok(started) => {
            let max_age = started
                .login_timeout
                .and_then(|timeout| u64::try_from(timeout.seconds).ok())
                .unwrap_or(600);
            let binding = binding_cookie(proxy, saml, &started.binding, max_age, origin.secure);
            Refusal::redirect(started.redirect_uri, binding)
        }
        Err(error) => refused(state, error),
    }
}

/// `Set-Cookie` for the binding cookie. The identity provider's page posts the Response
/// to us: a cross-site POST, with which browsers send only SameSite=None cookies, and those
/// only when Secure. Over TLS it is therefore `__Host-`, Secure and SameSite=None; over
/// plain HTTP (development) it carries no SameSite, which browsers read as Lax but still
/// send with a top-level POST in the first two minutes. No Domain: it stays with this host.
pub fn binding_cookie(
    proxy: &VirtualProxy,
    saml: &SamlAuthentication,
    value: &str,
    max_age: u64,
    secure: bool,
) -> Option<HeaderValue> {
    let mut cookie = format!(
        "{}={value}; Path=/; HttpOnly; Max-Age={max_age}",
        saml.binding_cookie(secure)
    );
    if saml.binding_is_secure(secure) || proxy.cookie_host_prefix {
        cookie.push_str("; Secure; SameSite=None");
    }
    HeaderValue::from_str(&cookie).ok()
}

/// What the browser gets when the control plane says no or cannot answer: its own short
/// reason for a login it refused or a request it found malformed, else what any other
/// login would get.
pub fn refused(state: &NodeState, error: ControlError) -> Refusal {
    refused_by_control_plane(state, error, "saml")
}

/// Whether a request's body is an HTML form (`application/x-www-form-urlencoded`), as the
/// HTTP-POST binding sends its messages.
pub fn is_form(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(';').next().is_some_and(|kind| {
                kind.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}
