//! JWT bearer authentication: `Authorization: Bearer <jwt>`. The node never verifies a token
//! itself (the keys live in the control plane); it maps the token to the session token the
//! control plane derives from it and looks that up like a cookie, so a token seen before costs
//! a hash and a cache lookup, and only a token without a live session goes to `JwtLogin`.

use http::HeaderMap;
use http::header::AUTHORIZATION;

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

// The same derivation as the control plane's.
pub use gatehouse_runtime::jwt_session::session_token;

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
