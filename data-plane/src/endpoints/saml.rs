//! The SAML routes under a virtual proxy's prefix: `/saml/login` (a sign-in link),
//! `/saml/acs` (the Assertion Consumer Service: the Response the identity provider has the
//! browser POST) and `/saml/metadata` (this service provider's metadata). The node relays
//! what arrives to the control plane, which alone reads and verifies SAML.

use std::net::SocketAddr;

use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use crate::auth::client::login_client;
use crate::auth::login::logged_in;
use crate::auth::saml::{ACS, LOGIN, METADATA, begin_to, is_form, refused};
use crate::auth::{cookie, query};
use crate::body::{self, ProxyBody};
use crate::control::ControlError;
use crate::endpoints::saml_logout::{self, LOGOUT, SLO};
use crate::endpoints::sign_in::{SignIn, sign_in};
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::request::context::RequestCtx;
use crate::respond;
use crate::state::{Asker, NodeState};
use crate::virtual_proxy::VirtualProxy;

/// Largest ACS form read: a Response of up to 512 KiB in base64, percent-encoded.
const MAX_ACS_FORM: usize = 2 * 1024 * 1024;

/// Whether `relative_path` (the path after the prefix) is one of this module's routes, on a
/// virtual proxy with SAML.
pub fn is_route(proxy: &VirtualProxy, relative_path: &str) -> bool {
    let single_logout = proxy.saml.as_ref().is_some_and(|saml| saml.single_logout);
    (proxy.saml.is_some() && matches!(relative_path, LOGIN | ACS | METADATA))
        || (single_logout && matches!(relative_path, SLO | LOGOUT))
}

/// Serves a path [`is_route`] accepted.
pub async fn route(
    state: &NodeState,
    ctx: &RequestCtx,
    request: http::Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (proxy, origin) = (&*ctx.proxy, &ctx.origin);
    let (parts, body) = request.into_parts();
    match ctx.relative_path.as_str() {
        LOGIN => login(state, proxy, &parts, origin, ctx.client.peer).await,
        ACS => acs(state, proxy, (&parts, body), origin, ctx.client.peer).await,
        METADATA => metadata(state, proxy, &parts).await,
        SLO => saml_logout::slo(state, proxy, (&parts, body), origin, ctx.client.peer).await,
        LOGOUT => saml_logout::logout(state, proxy, &parts, origin).await,
        _ => Err(Refusal::NotFound("not found".into())),
    }
}

/// `GET /{prefix}/saml/login?target=...`: a sign-in link. With a session, straight to the
/// target; without, to the identity provider and then to the target.
async fn login(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Refusal> {
    let asker = Asker {
        headers: &parts.headers,
        peer,
    };
    let target = match sign_in(state, proxy, parts, origin, asker).await? {
        SignIn::AlreadyIn(redirect) => return Ok(redirect),
        SignIn::Start(target) => target,
    };
    let answer = begin_to(state, proxy, parts, origin, target).await;
    state.login_answered(proxy, asker, &answer);
    Err(answer)
}

/// `POST /{prefix}/saml/acs` (form fields `SAMLResponse` and `RelayState`): the browser
/// brings the identity provider's Response. A cross-site POST by design (the form is on
/// the identity provider's page), so no Origin check: the binding cookie and the
/// Response's own checks decide.
async fn acs(
    state: &NodeState,
    proxy: &VirtualProxy,
    (parts, body): (&Parts, Incoming),
    origin: &Origin,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::POST {
        return Err(Refusal::method_not_allowed("POST"));
    }
    if !is_form(parts) {
        return Err(Refusal::bad_request(
            "the SAML response must be posted as application/x-www-form-urlencoded",
        ));
    }
    // Each Response costs the control plane an XML signature check: posting them counts
    // against the same per-address and per-proxy limits as starting a login.
    state.start_login(
        proxy,
        Asker {
            headers: &parts.headers,
            peer,
        },
    )?;
    let body: Bytes = match Limited::new(body, MAX_ACS_FORM).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(Refusal::bad_request(
                "the SAML response is too large or was cut short",
            ));
        }
    };
    let form = String::from_utf8_lossy(&body);
    let Some(saml_response) =
        query::param(Some(&form), "SAMLResponse").filter(|value| !value.is_empty())
    else {
        return Err(Refusal::bad_request("the form has no SAMLResponse"));
    };
    let binding = proxy
        .saml
        .as_ref()
        .and_then(|saml| cookie::read(&parts.headers, saml.binding_cookie(origin.secure)))
        .unwrap_or_default();
    let request = pb::SamlAcsRequest {
        virtual_proxy: proxy.prefix.clone(),
        saml_response,
        relay_state: query::param(Some(&form), "RelayState").unwrap_or_default(),
        binding: binding.to_owned(),
        client: Some(login_client(&state.trusted_proxies, &parts.headers, peer)),
    };
    match state.control.saml_acs(request).await {
        Ok((login, target)) => {
            let mut authenticated = logged_in(state, proxy, origin, Ok(login), "saml")?;
            let target = query::local_redirect(&target, None, "");
            let mut response = respond::redirect(&target, None);
            for cookie in authenticated.take_cookies() {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            Ok(response)
        }
        // The login and the assertion may be spent: posting the same Response again
        // cannot work.
        Err(ControlError::Unavailable(detail) | ControlError::StoreUnavailable(detail)) => {
            tracing::warn!(%detail, "SAML response: control plane unavailable");
            Err(Refusal::unavailable(
                "the login could not be finished; open the page you wanted again to log in",
            ))
        }
        Err(error) => Err(refused(state, error)),
    }
}

/// `GET /{prefix}/saml/metadata`: this service provider's metadata, for the identity
/// provider's administrator (or its metadata refresh).
async fn metadata(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::GET {
        return Err(Refusal::method_not_allowed("GET"));
    }
    match state.control.saml_metadata(&proxy.prefix).await {
        Ok(xml) => {
            let mut response = Response::new(body::full(xml));
            *response.status_mut() = StatusCode::OK;
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            Ok(response)
        }
        Err(error) => Err(refused(state, error)),
    }
}
