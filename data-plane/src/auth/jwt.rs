//! JWT bearer authentication: `Authorization: Bearer <jwt>`. The node never verifies a token
//! itself (the keys live in the control plane); it maps the token to the session token the
//! control plane derives from it and looks that up like a cookie, so a token seen before costs
//! a hash and a cache lookup, and only a token without a live session goes to `JwtLogin`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

/// Longest bearer token accepted; the control plane refuses longer ones too.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The bearer token of the request, if it has one (scheme matched case-insensitively).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The session token of `jwt` in `virtual_proxy`; the same derivation as the control plane's
/// `gatehouse_control_plane::jwt::session_token` (the end-to-end tests hold them together).
pub fn session_token(virtual_proxy: &str, jwt: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"gatehouse-jwt-session\0");
    digest.update(virtual_proxy.as_bytes());
    digest.update(b"\0");
    digest.update(jwt.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_a_bearer_scheme_with_a_token_counts() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer  a.b.c "));
        assert_eq!(bearer(&headers), Some("a.b.c"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
