//! SAML Single Logout routes under a virtual proxy's prefix, on a proxy with
//! `single_logout`: `/saml/slo`, where the identity provider has the browser bring its
//! LogoutRequest (HTTP-Redirect or HTTP-POST) or its LogoutResponse to ours, and
//! `/saml/logout`, a sign-out link that ends the session here and then at the identity
//! provider (a redirect, or a form that posts our LogoutRequest). The control plane reads
//! and verifies every SAML message; the node relays.

use std::net::SocketAddr;

use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::header::SET_COOKIE;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use crate::auth::cookie;
use crate::auth::saml::{binding_cookie, is_form, refused};
use crate::body::ProxyBody;
use crate::control::ControlError;
use crate::endpoints::own_sessions;
use crate::origin::Origin;
use crate::refusal::{Refusal, html_escape};
use crate::respond;
use crate::state::{Asker, NodeState};
use crate::virtual_proxy::VirtualProxy;

pub const SLO: &str = "/saml/slo";
pub const LOGOUT: &str = "/saml/logout";

/// Largest logout form read (a signed LogoutRequest is a few KiB).
const MAX_SLO_FORM: usize = 256 * 1024;

/// `GET` (HTTP-Redirect) or `POST` (HTTP-POST) `/{prefix}/saml/slo`. Cross-site by
/// design (the identity provider's page sends the browser here), so no Origin check: the
/// message's signature, or for a LogoutResponse the binding to this browser, decides.
pub async fn slo(
    state: &NodeState,
    proxy: &VirtualProxy,
    (parts, body): (&Parts, Incoming),
    origin: &Origin,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, Refusal> {
    let (query, form) = match parts.method {
        Method::GET => (
            parts.uri.query().unwrap_or_default().to_owned(),
            String::new(),
        ),
        Method::POST => {
            if !is_form(parts) {
                return Err(Refusal::bad_request(
                    "the SAML logout message must be posted as application/x-www-form-urlencoded",
                ));
            }
            let body: Bytes = match Limited::new(body, MAX_SLO_FORM).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return Err(Refusal::bad_request(
                        "the SAML logout message is too large or was cut short",
                    ));
                }
            };
            (String::new(), String::from_utf8_lossy(&body).into_owned())
        }
        _ => return Err(Refusal::method_not_allowed("GET, POST")),
    };
    if query.is_empty() && form.is_empty() {
        return Err(Refusal::bad_request("no SAML logout message"));
    }
    // Each message may cost the control plane a signature check: the same limits as logins.
    state.start_login(
        proxy,
        Asker {
            headers: &parts.headers,
            peer,
        },
    )?;
    let binding = proxy
        .saml
        .as_ref()
        .and_then(|saml| cookie::read(&parts.headers, saml.binding_cookie(origin.secure)))
        .unwrap_or_default();
    let request = pb::SamlLogoutMessageRequest {
        virtual_proxy: proxy.prefix.clone(),
        query,
        form,
        binding: binding.to_owned(),
    };
    let answer = match state.control.saml_logout_message(request).await {
        Ok(answer) => answer,
        Err(ControlError::Denied(reason)) => return Err(Refusal::forbidden(reason)),
        Err(error) => return Err(refused(state, error)),
    };
    // Every node hears of them through Watch; this one need not wait.
    for handle in &answer.ended_handles {
        state.end_session(handle);
    }
    let mut response = if answer.post_action.is_empty() {
        respond::redirect(&answer.redirect_uri, None)
    } else {
        let form = PostForm {
            action: answer.post_action,
            field: "SAMLResponse",
            value: answer.saml_response,
            relay_state: answer.relay_state,
        };
        respond::html(StatusCode::OK, &form.page())
    };
    for clear in cookie::clear_session(proxy, origin.secure) {
        response.headers_mut().append(SET_COOKIE, clear);
    }
    Ok(response)
}

/// A SAML message the browser posts to the identity provider (the HTTP-POST binding).
pub struct PostForm {
    pub action: String,
    /// `SAMLRequest` or `SAMLResponse`.
    pub field: &'static str,
    /// The message, base64.
    pub value: String,
    /// Empty: none.
    pub relay_state: String,
}

impl PostForm {
    /// The binding's page: a form the browser submits to the identity provider. Its button
    /// is shown, not only without scripts: a Content-Security-Policy of the virtual proxy's
    /// `response_headers` may block the inline `onload`, and the user must still get on.
    fn page(&self) -> String {
        let relay = if self.relay_state.is_empty() {
            String::new()
        } else {
            format!(
                "<input type=\"hidden\" name=\"RelayState\" value=\"{}\"/>",
                html_escape(&self.relay_state)
            )
        };
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signing out</title></head>\
             <body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"{}\" value=\"{}\"/>{relay}\
             <p>Signing out at the identity provider.</p>\
             <button type=\"submit\">Continue</button></form></body></html>\n",
            html_escape(&self.action),
            self.field,
            html_escape(&self.value),
        )
    }
}

/// How the browser takes our LogoutRequest to the identity provider.
pub enum ToIdp {
    /// HTTP-Redirect: the URL.
    Redirect(String),
    /// HTTP-POST: the form.
    Post(PostForm),
}

/// `GET` or `POST /{prefix}/saml/logout`: ends the session here (same cross-site rule as
/// `DELETE /qps/user`), then sends the browser to the identity provider with our
/// LogoutRequest; it comes back to `/saml/slo` and lands on the configured page.
pub async fn logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
) -> Result<Response<ProxyBody>, Refusal> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(Refusal::method_not_allowed("GET, POST"));
    }
    let ended = own_sessions::end_own_session(state, proxy, parts, origin).await?;
    let at_provider = match ended {
        Some(session) => idp_logout(state, proxy, parts, origin, &session.handle).await,
        None => None,
    };
    let mut response = match at_provider {
        Some((ToIdp::Redirect(uri), binding)) => respond::redirect(&uri, binding),
        Some((ToIdp::Post(form), binding)) => {
            let mut page = respond::html(StatusCode::OK, &form.page());
            if let Some(binding) = binding {
                page.headers_mut().append(SET_COOKIE, binding);
            }
            page
        }
        None => respond::html(
            StatusCode::OK,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
             <body><h1>You are signed out.</h1></body></html>\n",
        ),
    };
    for clear in cookie::clear_session(proxy, origin.secure) {
        response.headers_mut().append(SET_COOKIE, clear);
    }
    Ok(response)
}

/// After session `handle` ended here: the way to the identity provider with our
/// LogoutRequest and the binding cookie its answer must come back with; `None` when there
/// is none (or it cannot be had now: the user is logged out here all the same).
pub async fn idp_logout(
    state: &NodeState,
    proxy: &VirtualProxy,
    parts: &Parts,
    origin: &Origin,
    handle: &str,
) -> Option<(ToIdp, Option<http::HeaderValue>)> {
    let saml = proxy.saml.as_ref().filter(|saml| saml.single_logout)?;
    let request = pb::SamlLogoutBeginRequest {
        virtual_proxy: proxy.prefix.clone(),
        session_handle: handle.to_owned(),
        binding: cookie::read(&parts.headers, saml.binding_cookie(origin.secure))
            .unwrap_or_default()
            .to_owned(),
    };
    let started = match state.control.saml_logout_begin(request).await {
        Ok(started) => started,
        Err(error) => {
            tracing::warn!(%error, "cannot start the SAML logout at the identity provider");
            return None;
        }
    };
    let to_idp = if !started.redirect_uri.is_empty() {
        ToIdp::Redirect(started.redirect_uri)
    } else if !started.post_action.is_empty() {
        ToIdp::Post(PostForm {
            action: started.post_action,
            field: "SAMLRequest",
            value: started.saml_request,
            relay_state: started.relay_state,
        })
    } else {
        return None;
    };
    let max_age = started
        .timeout
        .and_then(|timeout| u64::try_from(timeout.seconds).ok())
        .unwrap_or(600);
    let binding = binding_cookie(proxy, saml, &started.binding, max_age, origin.secure);
    Some((to_idp, binding))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_post_form_escapes_its_values_and_offers_a_button_that_needs_no_script() {
        let page = PostForm {
            action: "https://idp.example/slo?a=1&b=\"2\"".to_owned(),
            field: "SAMLRequest",
            value: "PHNhbWxwOkxvZ291dFJlcXVlc3Q+".to_owned(),
            relay_state: "<script>".to_owned(),
        }
        .page();
        assert!(page.contains("action=\"https://idp.example/slo?a=1&amp;b=&quot;2&quot;\""));
        assert!(page.contains("name=\"RelayState\" value=\"&lt;script&gt;\""));
        assert!(!page.contains("<script>"));
        assert!(
            !page.contains("<noscript>"),
            "the button is shown with scripts on too"
        );
        assert!(page.contains("<button type=\"submit\">Continue</button></form>"));
    }
}
