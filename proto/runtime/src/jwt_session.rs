//! The session token a JWT bearer token maps to. One source for both planes (the data plane
//! includes this file): a node and every control-plane replica must derive the same value.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The session token of `jwt` in `virtual_proxy`. Derived rather than random so that every
/// node and every control-plane replica finds the same session for the same JWT without a
/// lookup table: whoever can compute it holds the JWT already, which buys the same session
/// anyway. The store keeps only a hash of it, as for every session token.
pub fn session_token(virtual_proxy: &str, jwt: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"gatehouse-jwt-session\0");
    digest.update(virtual_proxy.as_bytes());
    digest.update(b"\0");
    digest.update(jwt.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.finalize())
}
