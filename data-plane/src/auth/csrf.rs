//! Cross-site request forgery: a state-changing browser request must come from an allowed
//! origin or carry the session's CSRF token. The token is derived from the session token, so
//! every node can check it without shared state, and a cross-site page (which cannot read the
//! HttpOnly cookie) cannot compute it.

use http::HeaderName;
use http::header::{ORIGIN, REFERER};
use http::request::Parts;
use sha2::{Digest as _, Sha256};

use crate::auth::query;
use crate::origin::Origin;
use crate::refusal::Refusal;
use crate::virtual_proxy::VirtualProxy;

/// Header (and query parameter) carrying the token, as in QPS.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("qlik-csrf-token");

/// The CSRF token of a session: 128 bits of a hash of the session token, hex.
pub fn token_for(session_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"gatehouse-csrf\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A state-changing call on the node's own endpoints, by the holder of `session_token`:
/// refused (403) unless it comes from an allowed origin or carries the session's CSRF token.
pub fn admit_own_endpoint_call(
    parts: &Parts,
    proxy: &VirtualProxy,
    origin: &Origin,
    session_token: Option<&str>,
) -> Result<(), Refusal> {
    if same_origin(parts, proxy, origin)
        || session_token.is_some_and(|token| carries_token(parts, token))
    {
        return Ok(());
    }
    Err(Refusal::forbidden(
        "cross-origin request refused: send it from an allowed origin or with the qlik-csrf-token header",
    ))
}

/// Whether the request carries the session's token, as a header or query parameter.
pub fn carries_token(parts: &Parts, session_token: &str) -> bool {
    let expected = token_for(session_token);
    let presented = parts
        .headers
        .get(&TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query::param(parts.uri.query(), "qlik-csrf-token"));
    presented.is_some_and(|presented| {
        gatehouse_runtime::constant_time_eq(presented.trim().as_bytes(), expected.as_bytes())
    })
}

/// Whether the browser says the request comes from one of the proxy's origins or an allowed
/// host (`Origin`, else `Referer`). A request with neither is not known to be same-origin.
pub fn same_origin(parts: &Parts, proxy: &VirtualProxy, origin: &Origin) -> bool {
    parts
        .headers
        .get(ORIGIN)
        .or_else(|| parts.headers.get(REFERER))
        .and_then(|value| value.to_str().ok())
        .is_some_and(|source| crate::origin::admits_url(proxy, origin, source))
}

/// Whether a WebSocket upgrade may proceed as far as its `Origin` goes. Browsers always send
/// one; a foreign one is a cross-site WebSocket hijack attempt. Other clients send none.
pub fn websocket_origin_allowed(parts: &Parts, proxy: &VirtualProxy, origin: &Origin) -> bool {
    parts.headers.get(ORIGIN).is_none_or(|source| {
        source
            .to_str()
            .is_ok_and(|source| crate::origin::admits_url(proxy, origin, source))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_per_session_and_differ_between_sessions() {
        assert_eq!(token_for("a"), token_for("a"));
        assert_ne!(token_for("a"), token_for("b"));
        assert_eq!(token_for("a").len(), 32);
        assert!(!token_for("secret-session").contains("secret"));
    }
}
