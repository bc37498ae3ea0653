//! What the sign-in links of OpenID Connect and SAML share (`/{prefix}/oidc/login`,
//! `/{prefix}/saml/login`): the target checked, a holder of a session sent straight to it,
//! and the login start counted against the flood limits; the provider's redirect is each
//! method's own.

use http::request::Parts;
use http::{Method, Response};

use crate::auth::cookie;
use crate::auth::login::unavailable;
use crate::auth::oidc::local_target;
use crate::auth::query;
use crate::body::ProxyBody;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::respond;
use crate::state::{Asker, NodeState, Validation};
use crate::virtual_proxy::VirtualProxy;

/// Where a sign-in link goes next.
pub enum SignIn {
    /// The browser holds a session: this redirect takes it to the target.
    AlreadyIn(Response<ProxyBody>),
    /// A login to the identity provider starts, to land on this target; counted as a login
    /// start, to be answered with [`NodeState::login_answered`].
    Start(String),
}

/// `GET ...?target=...`: a path on this site, or a URL on this host (its path is kept);
/// default: the virtual proxy's root.
pub async fn sign_in(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    asker: Asker<'_>,
) -> Result<SignIn, Refusal> {
    if parts.method != Method::GET {
        return Err(Refusal::method_not_allowed("GET"));
    }
    let requested = query::param(parts.uri.query(), "target")
        .unwrap_or_else(|| format!("{}/", proxy.path_prefix()));
    let Some(target) = local_target(proxy, &requested, origin) else {
        return Err(Refusal::bad_request("target must be a path on this site"));
    };
    if let Some(token) = cookie::read(&parts.headers, &proxy.cookie_name) {
        match state.validate(proxy, token, asker).await {
            Validation::Valid(_) => return Ok(SignIn::AlreadyIn(respond::redirect(&target, None))),
            Validation::Invalid => {}
            Validation::Unavailable => return Err(unavailable()),
            Validation::Limited(limited) => return Err(limited.refusal()),
        }
    }
    state.start_login(proxy, asker)?;
    Ok(SignIn::Start(target))
}
