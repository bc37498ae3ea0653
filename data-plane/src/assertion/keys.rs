//! The assertion keys of a snapshot: the one that signs now, and the JWKS every node
//! publishes at [`JWKS_PATH`] (every key, including one not signing yet and one whose last
//! assertions have not expired), made once per snapshot.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use gatehouse_proto::v1 as pb;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

use crate::body::{self, ProxyBody};
use crate::respond;

/// Where every node publishes the keys, outside every virtual proxy and without
/// authentication.
pub const JWKS_PATH: &str = "/.well-known/gatehouse/jwks.json";

/// One key: its `kid`, the key pair, and the JWS header that names it, encoded once.
struct NodeKey {
    kid: String,
    pair: EcdsaKeyPair,
    active_from: SystemTime,
    encoded_header: String,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("kid", &self.kid)
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

/// A key that signs: what `ProxyAssertion` asks of it.
pub(super) struct Signer<'a> {
    key: &'a NodeKey,
    random: &'a SystemRandom,
}

impl Signer<'_> {
    #[cfg(test)]
    pub(super) fn kid(&self) -> &str {
        &self.key.kid
    }

    /// The compact JWS of `encoded_claims` (base64url JSON).
    pub(super) fn sign(&self, encoded_claims: &str) -> Option<String> {
        let mut token =
            String::with_capacity(self.key.encoded_header.len() + encoded_claims.len() + 90);
        token.push_str(&self.key.encoded_header);
        token.push('.');
        token.push_str(encoded_claims);
        let signature = self
            .key
            .pair
            .sign(self.random, token.as_bytes())
            .map_err(|_| tracing::error!(kid = %self.key.kid, "assertion not signed"))
            .ok()?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Some(token)
    }
}

/// The keys of one snapshot, by when they start signing.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<NodeKey>,
    jwks: Bytes,
    random: SystemRandom,
}

impl Default for KeySet {
    fn default() -> Self {
        Self::from_proto(&[])
    }
}

impl KeySet {
    /// The snapshot's keys; one that cannot be read is left out (and logged), so the others
    /// still sign and verify.
    pub fn from_proto(keys: &[pb::AssertionKey]) -> Self {
        let random = SystemRandom::new();
        let mut parsed: Vec<NodeKey> = keys
            .iter()
            .filter_map(|key| {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.pkcs8, &random)
                        .map_err(|error| {
                            tracing::error!(kid = %key.id, %error, "assertion key left out");
                        })
                        .ok()?;
                let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": key.id});
                Some(NodeKey {
                    kid: key.id.clone(),
                    pair,
                    active_from: key
                        .active_from
                        .and_then(|at| SystemTime::try_from(at).ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
                })
            })
            .collect();
        parsed.sort_by_key(|key| key.active_from);
        let jwks = serde_json::json!({
            "keys": parsed.iter().filter_map(jwk).collect::<Vec<_>>(),
        });
        Self {
            keys: parsed,
            jwks: Bytes::from(jwks.to_string()),
            random,
        }
    }

    /// The key that signs at `now` (the newest whose time has come), and when the next one
    /// takes over.
    pub(super) fn signing_at(&self, now: SystemTime) -> Option<(Signer<'_>, Option<SystemTime>)> {
        let index = self.keys.iter().rposition(|key| key.active_from <= now)?;
        let next = self.keys.get(index + 1).map(|key| key.active_from);
        Some((
            Signer {
                key: &self.keys[index],
                random: &self.random,
            },
            next,
        ))
    }

    /// `{"keys": [...]}`, every key as a public JWK.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }
}

/// The public half as a JWK: the uncompressed point `04 || x || y`, split.
fn jwk(key: &NodeKey) -> Option<serde_json::Value> {
    let point = key.pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "use": "sig",
        "alg": "ES256",
        "kid": key.kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }))
}

/// The answer at [`JWKS_PATH`]. Verifiers may cache it a minute: a new key is published
/// `assertion.publish_ahead` (an hour by default) before it signs.
pub fn jwks_response(keys: &KeySet, method: &Method) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut refused =
            respond::text(StatusCode::METHOD_NOT_ALLOWED, "the JWKS is read with GET");
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let mut response = Response::new(if method == Method::HEAD {
        body::empty()
    } else {
        body::full(keys.jwks().clone())
    });
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
