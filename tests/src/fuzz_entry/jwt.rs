//! JWT bearer tokens: the node reads `Authorization: Bearer`, the control plane decodes the
//! token's header, checks its signature and claims, and maps the claims to a user.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_control_plane::config::JwtConfig;
use gatehouse_control_plane::error::Error;
use gatehouse_control_plane::jwt::{Verified, Verifier};
use gatehouse_data_plane::auth::jwt::bearer;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value};

use super::two;

/// An Ed25519 key made for fuzzing only: seeds are signed with it, so that mutations of a
/// valid token reach the claim checks, and `signed_claims` signs what the fuzzer writes.
const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICPsHV/26bEbSkMXaj+qQmP73R70qKcDyfDRb0doWPKh
-----END PRIVATE KEY-----
";
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGHLH1MNWKDWoCnqfa5xvokhUWZTj+oAiL1TxZDYvGYQ=
-----END PUBLIC KEY-----
";
const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "gatehouse";
const LEEWAY: Duration = Duration::from_secs(60);

struct Fixture {
    verifier: Verifier,
    runtime: tokio::runtime::Runtime,
    signing_key: EncodingKey,
}

/// The verifier of a virtual proxy that accepts EdDSA and ES256 tokens of [`ISSUER`] for
/// [`AUDIENCE`], naming the user by `sub` and `dir` (default `JWT`), groups as `Group`.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut key_file = tempfile::NamedTempFile::new().expect("a temporary file");
        key_file
            .write_all(PUBLIC_KEY.as_bytes())
            .expect("the key is written");
        let config = JwtConfig {
            public_keys: vec![key_file.path().to_owned()],
            jwks_file: None,
            jwks_url: None,
            ca_file: None,
            jwks_min_refresh: Duration::from_secs(30),
            algorithms: vec!["EdDSA".into(), "ES256".into()],
            issuers: vec![ISSUER.into()],
            audiences: vec![AUDIENCE.into()],
            leeway: LEEWAY,
            user_id_claim: "sub".into(),
            user_directory_claim: Some("dir".into()),
            user_directory: Some("JWT".into()),
            attributes: BTreeMap::from([("Group".into(), "groups".into())]),
        };
        // The key is read here; the file may go.
        let verifier = Verifier::with_client(config, None).expect("the fixed key loads");
        Fixture {
            verifier,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            signing_key: EncodingKey::from_ed_pem(PRIVATE_KEY.as_bytes()).expect("the fixed key"),
        }
    })
}

fn verify(token: &str) -> (Result<Map<String, Value>, Error>, Result<Verified, Error>) {
    let fixture = fixture();
    fixture.runtime.block_on(async {
        (
            fixture.verifier.claims(token).await,
            fixture.verifier.verify(token).await,
        )
    })
}

/// A NumericDate claim in seconds, when it is a number.
fn seconds(claims: &Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64)
}

fn since_epoch(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What every token the verifier accepts must satisfy: the header names an accepted
/// algorithm, it is from [`ISSUER`] for [`AUDIENCE`], not expired and already valid (within
/// the leeway); its user is the one its claims name.
fn check_accepted(token: &str, claims: &Map<String, Value>, verified: &Result<Verified, Error>) {
    let header = jsonwebtoken::decode_header(token).expect("an accepted token has a header");
    assert!(
        matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256),
        "{token}"
    );
    let now = since_epoch(SystemTime::now());
    let leeway = LEEWAY.as_secs_f64();
    let exp = seconds(claims, "exp").expect("an accepted token has an exp");
    assert!(exp + leeway + 1.0 >= now, "expired: {token}");
    if let Some(nbf) = seconds(claims, "nbf") {
        assert!(nbf <= now + leeway + 1.0, "not yet valid: {token}");
    }
    assert_eq!(
        claims.get("iss").and_then(Value::as_str),
        Some(ISSUER),
        "{token}"
    );
    let for_us = match claims.get("aud") {
        Some(Value::String(audience)) => audience == AUDIENCE,
        Some(Value::Array(audiences)) => audiences.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(for_us, "{token}");
    if let Ok(verified) = verified {
        let user = &verified.user;
        let sub = claims.get("sub").expect("a verified token names its user");
        let named = match sub {
            Value::String(text) => text.trim().to_owned(),
            other => other.to_string(),
        };
        assert_eq!(user.id, named, "{token}");
        assert!(!user.directory.is_empty() && !user.directory.contains('\\'));
        assert!(since_epoch(verified.expires) <= exp, "{token}");
        assert!(user.attributes.iter().all(|a| a.name == "Group"));
    }
}

/// A bearer token as a node reads it and the control plane verifies it (`jwt_bearer`): the
/// input is the `Authorization` value. The token read is what follows `Bearer`, trimmed, and
/// reads back the same; a token the verifier accepts satisfies [`check_accepted`].
pub fn bearer_token(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let Some(token) = bearer(&headers) else {
        return;
    };
    assert!(!token.is_empty() && token == token.trim());
    let mut again = HeaderMap::new();
    again.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("it was a header value"),
    );
    assert_eq!(bearer(&again), Some(token));
    let (claims, verified) = verify(token);
    match claims {
        Ok(claims) => check_accepted(token, &claims, &verified),
        Err(_) => assert!(verified.is_err(), "{token}"),
    }
}

/// `header` and `claims` as a JWT signed by the fixture key with EdDSA.
fn signed(header: &str, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &fixture().signing_key, Algorithm::EdDSA)
            .expect("Ed25519 signs anything");
    format!("{message}.{signature}")
}

/// Tokens the fuzzer writes and the fixture key signs (`jwt_claims`): a JSON header, then
/// the JSON claims. The signature is EdDSA's whatever the header says, so only a header
/// naming EdDSA may pass; anything accepted satisfies [`check_accepted`]. This is where
/// `alg` confusion (`none`, HMAC, a curve of another family) and odd claim types are tried.
pub fn signed_claims(data: &[u8]) {
    let (header, claims) = two(data);
    let token = signed(&header, &claims);
    let (verified_claims, verified) = verify(&token);
    let Ok(verified_claims) = verified_claims else {
        assert!(verified.is_err());
        return;
    };
    let read = jsonwebtoken::decode_header(&token).expect("an accepted token has a header");
    assert_eq!(read.alg, Algorithm::EdDSA, "{header:?}");
    check_accepted(&token, &verified_claims, &verified);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(path: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        std::fs::read(root.join(path)).unwrap()
    }

    /// The fuzzers start from tokens that pass, so that their mutations reach the claim
    /// checks rather than stopping at the signature or the algorithm list.
    #[test]
    fn the_valid_seeds_verify_under_the_fixture() {
        let bearer = String::from_utf8(seed("jwt_bearer/valid")).unwrap();
        let token = bearer.strip_prefix("Bearer ").unwrap();
        assert!(verify(token).1.is_ok());

        let (header, claims) = two(&seed("jwt_claims/valid"));
        assert!(verify(&signed(&header, &claims)).1.is_ok());
    }
}
