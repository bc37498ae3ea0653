//! Envoy `ext_authz` v3 over gRPC (`forward_auth.grpc_listen`): what Envoy and Istio's
//! `CUSTOM` authorization ask. A check carries the whole request head (method, path, host,
//! scheme, headers, the client's address), so nothing is rebuilt from conventions; the
//! decision is the same as the HTTP endpoint's.
//!
//! Allowed is an `OkHttpResponse`: the identity headers set (overwriting client copies),
//! every other identity header and the virtual proxy's consumed credentials (its
//! header-authentication header, a JWT bearer) removed, a new session's cookie added to the
//! browser's response. Anything else is a `DeniedHttpResponse` that Envoy hands to the
//! browser as it is: the proxy's own refusal, its status, headers and body, a login as a 302.
//! A caller outside `forward_auth.trusted_networks` gets `PERMISSION_DENIED`.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::CheckResponseExt as _;
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue as EnvoyHeader, HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode,
    OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use http_body_util::BodyExt as _;

use super::original::{self, Caller, Description};
use super::{Allowed, decide};
use crate::refusal::Refusal;
use crate::state::NodeState;

/// The `ext_authz` service of one node.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    pub state: Arc<NodeState>,
    pub trusted_networks: Arc<Vec<ipnet::IpNet>>,
    /// The port of `forward_auth.grpc_listen`.
    pub listener_port: u16,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let Some(peer) = request.remote_addr() else {
            return Err(tonic::Status::permission_denied(
                "the caller's address is unknown",
            ));
        };
        if !original::is_trusted(&self.trusted_networks, peer.ip()) {
            tracing::info!(%peer, "ext_authz check from an untrusted network");
            return Err(tonic::Status::permission_denied(
                "checks are accepted only from forward_auth.trusted_networks",
            ));
        }
        let caller = Caller {
            peer,
            listener_port: self.listener_port,
            secure: false,
        };
        let answer = match rebuild(request.get_ref(), caller) {
            Ok((original, client)) => match decide(&self.state, original, client).await {
                Ok(allowed) => allow(allowed),
                Err(refusal) => deny(refusal).await,
            },
            Err(refusal) => deny(refusal).await,
        };
        let status = match &answer.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied
                .status
                .as_ref()
                .and_then(|status| u16::try_from(status.code).ok())
                .unwrap_or(403),
            _ => 200,
        };
        self.state.metrics.forward_auth_check("ext_authz", status);
        Ok(tonic::Response::new(answer))
    }
}

/// The original request of a check: Envoy describes it whole. Public for the fuzz targets.
pub fn rebuild(
    check: &CheckRequest,
    caller: Caller,
) -> Result<(http::Request<()>, crate::request::context::Client), Refusal> {
    let attributes = check.attributes.as_ref();
    let http = attributes
        .and_then(|attributes| attributes.request.as_ref())
        .and_then(|request| request.http.as_ref())
        .ok_or_else(|| Refusal::bad_request("the check describes no HTTP request"))?;
    let client = attributes
        .and_then(|attributes| attributes.source.as_ref())
        .and_then(|source| source.address.as_ref())
        .and_then(|address| match &address.address {
            Some(Address::SocketAddress(socket)) => socket.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| -> Result<(), Refusal> {
        // Pseudo-headers are the method, path, host and scheme, read from their fields.
        if name.starts_with(':') {
            return Ok(());
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Refusal::bad_request("a header name of the check is not valid"))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| Refusal::bad_request("a header value of the check is not valid"))?;
        // An http::HeaderMap holds at most 32,768 entries; append would panic beyond.
        headers
            .try_append(name, value)
            .map_err(|_| Refusal::bad_request("the check holds too many headers"))?;
        Ok(())
    };
    match &http.header_map {
        // With `encode_raw_headers`, repeated headers stay apart.
        Some(map) => {
            for header in &map.headers {
                let value = if header.raw_value.is_empty() {
                    header.value.as_bytes()
                } else {
                    header.raw_value.as_slice()
                };
                add(&header.key, value)?;
            }
        }
        None => {
            for (name, value) in &http.headers {
                add(name, value.as_bytes())?;
            }
        }
    }
    let description = Description {
        method: Some(http.method.as_str()).filter(|method| !method.is_empty()),
        uri: Some(http.path.as_str()).filter(|path| !path.is_empty()),
        host: Some(http.host.as_str()).filter(|host| !host.is_empty()),
        proto: Some(http.scheme.as_str()).filter(|scheme| !scheme.is_empty()),
        client,
    };
    original::describe(description, headers, caller, None)
}

/// OK: the identity set, client copies and consumed credentials removed, the cookie added.
fn allow(allowed: Allowed) -> CheckResponse {
    if let Some(clean) = allowed.without_ticket {
        // A page load that redeemed a ticket goes back to its URL without it, as through
        // the proxy: the ticket stays out of history and the upstream's logs.
        return denied(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: HttpStatusCode::Found.into(),
            }),
            headers: allowed
                .cookies
                .iter()
                .map(|cookie| header("set-cookie", cookie.as_bytes(), false))
                .chain([header("location", clean.as_bytes(), false)])
                .chain([header("cache-control", b"no-store", false)])
                .collect(),
            body: String::new(),
        });
    }
    let set: Vec<HeaderValueOption> = allowed
        .identity
        .iter()
        .map(|(name, value)| header(name.as_str(), value.as_bytes(), true))
        .collect();
    let proxy = &allowed.proxy;
    let mut headers_to_remove: Vec<String> = gatehouse_proto::identity_headers::ALL
        .iter()
        .filter(|name| !allowed.identity.contains_key(**name))
        .map(|name| (*name).to_owned())
        .collect();
    if let Some(login) = &proxy.header_authentication {
        headers_to_remove.push(login.header.as_str().to_owned());
    }
    if let Some(header) = proxy.identity.assertion_header()
        && !allowed.identity.contains_key(header)
        && !headers_to_remove.iter().any(|name| name == header.as_str())
    {
        headers_to_remove.push(header.as_str().to_owned());
    }
    if proxy.jwt_authentication {
        headers_to_remove.push(AUTHORIZATION.as_str().to_owned());
    }
    let response_headers_to_add = allowed
        .cookies
        .iter()
        .map(|cookie| header(SET_COOKIE.as_str(), cookie.as_bytes(), false))
        .chain(
            allowed
                .www_authenticate
                .iter()
                .map(|negotiate| header("www-authenticate", negotiate.as_bytes(), true)),
        )
        .collect();
    let mut response = CheckResponse::with_status(tonic::Status::ok(""));
    response.http_response = Some(HttpResponse::OkResponse(OkHttpResponse {
        headers: set,
        headers_to_remove,
        response_headers_to_add,
        ..OkHttpResponse::default()
    }));
    response
}

/// Denied: the proxy's own refusal, status, headers and body, as Envoy is to send it.
async fn deny(refusal: Refusal) -> CheckResponse {
    let response = refusal.into_response();
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let code = HttpStatusCode::try_from(i32::from(parts.status.as_u16()))
        .unwrap_or(HttpStatusCode::Forbidden);
    denied(DeniedHttpResponse {
        status: Some(HttpStatus { code: code.into() }),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| header(name.as_str(), value.as_bytes(), false))
            .collect(),
        body,
    })
}

fn denied(response: DeniedHttpResponse) -> CheckResponse {
    // The status says denied; Envoy sends the browser the HTTP answer.
    let mut check = CheckResponse::with_status(tonic::Status::permission_denied("denied"));
    check.http_response = Some(HttpResponse::DeniedResponse(response));
    check
}

/// One header for Envoy; `overwrite` replaces any value the request already has.
fn header(name: &str, value: &[u8], overwrite: bool) -> HeaderValueOption {
    let append_action = if overwrite {
        HeaderAppendAction::OverwriteIfExistsOrAdd
    } else {
        HeaderAppendAction::AppendIfExistsOrAdd
    };
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.to_owned(),
            // Identity values are percent-encoded ASCII; cookies and locations are ASCII.
            value: String::from_utf8_lossy(value).into_owned(),
            ..EnvoyHeader::default()
        }),
        append_action: append_action.into(),
        ..HeaderValueOption::default()
    }
}
