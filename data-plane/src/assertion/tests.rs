use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_proto::v1 as pb;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};

use super::*;
use crate::assertion_slot::AssertionSlot;

fn key(id: &str, active_from: SystemTime) -> pb::AssertionKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    pb::AssertionKey {
        id: id.into(),
        pkcs8: pkcs8.as_ref().to_vec(),
        active_from: Some(active_from.into()),
    }
}

fn assertion(keys: &[pb::AssertionKey]) -> ProxyAssertion {
    let mut assertion = ProxyAssertion::from_proto(
        &pb::IdentityAssertion {
            header: "x-gatehouse-assertion".into(),
            audience: "gatehouse:virtual-proxy:/sales".into(),
            issuer: "gatehouse".into(),
            lifetime: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
        },
        "sales",
    )
    .unwrap();
    assertion.use_keys(Arc::new(KeySet::from_proto(keys)));
    assertion
}

fn session() -> CachedSession {
    CachedSession {
        handle: "h-1".into(),
        virtual_proxy: "sales".into(),
        user_directory: "CORP".into(),
        user_id: "alice".into(),
        attributes: vec![
            ("group".into(), "sales".into()),
            ("group".into(), "eu".into()),
        ],
        absolute_expiry: SystemTime::now() + Duration::from_secs(3600),
        assertion: AssertionSlot::default(),
    }
}

/// Verifies `token` with the JWKS entry it names, as an upstream would; its header and claims.
fn verify(token: &str, keys: &KeySet) -> (serde_json::Value, serde_json::Value) {
    let jwks: serde_json::Value = serde_json::from_slice(keys.jwks()).unwrap();
    let mut parts = token.split('.');
    let (header, claims, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header_json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|jwk| jwk["kid"] == header_json["kid"])
        .expect("the kid is published");
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(
            format!("{header}.{claims}").as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the signature verifies with the published key");
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    (header_json, claims)
}

#[test]
fn an_assertion_names_the_user_and_verifies_with_the_published_key() {
    let keys = [key("k1", SystemTime::UNIX_EPOCH)];
    let assertion = assertion(&keys);
    let session = session();
    let value = assertion.value_for(&session).expect("signed");
    let (header, claims) = verify(value.to_str().unwrap(), &assertion.keys);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], "k1");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["user_directory"], "CORP");
    assert_eq!(
        claims["attributes"]["group"],
        serde_json::json!(["sales", "eu"])
    );
    assert_eq!(claims["sid"], "h-1");
    assert_eq!(claims["virtual_proxy"], "sales");
    assert_eq!(claims["aud"], "gatehouse:virtual-proxy:/sales");
    assert_eq!(claims["iss"], "gatehouse");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 120);
}

#[test]
fn the_signed_assertion_is_kept_per_session_until_the_settings_change() {
    let keys = [key("k1", SystemTime::UNIX_EPOCH)];
    let mut assertion = assertion(&keys);
    let session = session();
    let first = assertion.value_for(&session).unwrap();
    assert_eq!(assertion.value_for(&session).unwrap(), first, "cached");
    let other = CachedSession {
        handle: "h-2".into(),
        ..session.clone()
    };
    assert_ne!(
        assertion.value_for(&other).unwrap(),
        first,
        "one per session"
    );
    // A new snapshot (new keys or settings): signed again.
    assertion.use_keys(Arc::new(KeySet::from_proto(&keys)));
    std::thread::sleep(Duration::from_millis(1));
    assert_ne!(assertion.value_for(&session).unwrap(), first);
}

#[test]
fn a_key_signs_only_from_its_time_and_every_key_is_published() {
    let now = SystemTime::now();
    let keys = [
        key("old", SystemTime::UNIX_EPOCH),
        key("next", now + Duration::from_secs(3600)),
    ];
    let assertion = assertion(&keys);
    let jwks: serde_json::Value = serde_json::from_slice(assertion.keys.jwks()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|jwk| jwk["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["old", "next"]);
    let value = assertion.value_for(&session()).unwrap();
    let (header, _) = verify(value.to_str().unwrap(), &assertion.keys);
    assert_eq!(header["kid"], "old", "the next key does not sign yet");
    let (signer, next) = assertion
        .keys
        .signing_at(now + Duration::from_secs(3601))
        .unwrap();
    assert_eq!(signer.kid(), "next");
    assert_eq!(next, None);
}

#[test]
fn without_a_key_no_assertion_is_sent_and_a_bad_key_is_left_out() {
    assert!(assertion(&[]).value_for(&session()).is_none());
    let bad = pb::AssertionKey {
        id: "bad".into(),
        pkcs8: vec![1, 2, 3],
        active_from: None,
    };
    let keys = KeySet::from_proto(&[bad, key("good", SystemTime::UNIX_EPOCH)]);
    let jwks: serde_json::Value = serde_json::from_slice(keys.jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], "good");
}
