//! The signed identity assertion, as an upstream that verifies it sees it: an ES256 JWT in
//! `X-Gatehouse-Assertion` that checks out against the JWKS fetched from a node (any node,
//! across key rotations), while a forged one, an expired one and one for another audience do
//! not; and a client's own copy never reaches the upstream.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::browser::fixtures::{AppProxy, COOKIE, seen_header};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::client::get;
use crate::harness::{ControlPlane, DataPlaneNode, EchoUpstream, RedisServer};

const JWKS_PATH: &str = "/.well-known/gatehouse/jwks.json";
const HEADER: &str = "x-gatehouse-assertion";
pub(crate) const AUDIENCE: &str = "gatehouse:virtual-proxy:/app";

fn signing_proxy(upstream: &EchoUpstream, assertion: &str) -> AppProxy {
    AppProxy::new([upstream.node()]).table(&format!("[virtual_proxies.assertion]\n{assertion}"))
}

/// The JWKS a node publishes, as an upstream fetches it: without any credential.
pub(crate) async fn jwks(node: &DataPlaneNode) -> JwkSet {
    let response = get(&node.url(JWKS_PATH), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/jwk-set+json")
    );
    serde_json::from_str(&response.text()).expect("a JWKS")
}

/// What an upstream does: the key the token's `kid` names, ES256 only, this audience and
/// issuer, no leeway on `exp`.
pub(crate) fn verify(
    token: &str,
    keys: &JwkSet,
    audience: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let kid = jsonwebtoken::decode_header(token)?
        .kid
        .expect("the assertion names its key");
    let jwk = keys.find(&kid).ok_or_else(|| {
        jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)
    })?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["gatehouse"]);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)
        .map(|data| data.claims)
}

/// The assertion the upstream received for a request with `cookie` (and `extra` headers).
/// A node that started before the control plane made its very first key has none for a
/// moment: asked again until the first snapshot with a key arrives.
async fn assertion_seen(node: &DataPlaneNode, cookie: &str, extra: &[(&str, &str)]) -> String {
    let mut headers = vec![("cookie", cookie)];
    headers.extend_from_slice(extra);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = get(&node.url("/app/hub"), &headers).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = response.json();
        assert!(
            !seen["headers"][HEADER].is_array(),
            "exactly one assertion: {seen}"
        );
        if let Some(token) = seen_header(&seen, HEADER) {
            return token.to_owned();
        }
        assert!(Instant::now() < deadline, "no assertion upstream: {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A P-256 key that is not Gatehouse's, made by `openssl`.
fn stranger_key() -> EncodingKey {
    let output = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl runs");
    assert!(output.status.success());
    EncodingKey::from_ec_pem(&output.stdout).expect("a PKCS#8 P-256 key")
}

#[tokio::test]
async fn an_upstream_verifies_the_assertion_with_the_jwks_of_a_node_and_refuses_forgeries() {
    let upstream = EchoUpstream::start("engine").await;
    let control_plane = ControlPlane::start(&signing_proxy(&upstream, "").toml()).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let mut alice = user("CORP", "alice");
    alice.attributes.push(gatehouse_proto::v1::Attribute {
        name: "group".into(),
        value: "sales".into(),
    });
    let (cookie, session) = session_cookie(&control_plane, "app", COOKIE, alice).await;

    // A client's own assertion is replaced, never passed on.
    let token = assertion_seen(&node, &cookie, &[("X-Gatehouse-Assertion", "forged")]).await;
    assert_ne!(token, "forged");
    let keys = jwks(&node).await;
    let claims = verify(&token, &keys, AUDIENCE).expect("the assertion verifies");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["user_directory"], "CORP");
    assert_eq!(claims["attributes"]["group"], serde_json::json!(["sales"]));
    assert_eq!(claims["sid"], session.handle.as_str(), "the public handle");
    assert_eq!(claims["virtual_proxy"], "app");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 120, "the default lifetime");
    let token_in_cookie = cookie.split_once('=').unwrap().1;
    assert!(!token.contains(token_in_cookie));
    assert!(
        !serde_json::to_string(&claims)
            .unwrap()
            .contains(token_in_cookie),
        "the session token is never in the assertion"
    );
    // The same assertion on the next request: signed once per session, not per request.
    assert_eq!(assertion_seen(&node, &cookie, &[]).await, token);

    // Claims changed under the node's signature.
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut root = claims.clone();
    root["sub"] = "root".into();
    let body = base64_url(&serde_json::to_vec(&root).unwrap());
    let tampered = format!("{head}.{body}.{signature}");
    assert!(
        verify(&tampered, &keys, AUDIENCE).is_err(),
        "tampered claims"
    );
    // Signed by another key under Gatehouse's kid.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = jsonwebtoken::decode_header(&token).unwrap().kid;
    let forged = jsonwebtoken::encode(&header, &root, &stranger_key()).unwrap();
    assert!(verify(&forged, &keys, AUDIENCE).is_err(), "another key");
    // Unsigned.
    let mut none = serde_json::json!({"alg": "none", "typ": "JWT"});
    none["kid"] = header.kid.clone().into();
    let unsigned = format!(
        "{}.{}.",
        base64_url(none.to_string().as_bytes()),
        base64_url(&serde_json::to_vec(&claims).unwrap())
    );
    assert!(verify(&unsigned, &keys, AUDIENCE).is_err(), "alg none");
    // Meant for another upstream.
    assert!(verify(&token, &keys, "gatehouse:virtual-proxy:/other").is_err());
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn an_expired_assertion_and_one_for_another_proxy_are_refused() {
    let upstream = EchoUpstream::start("engine").await;
    let proxies = format!(
        "{}\n[[virtual_proxies]]\nprefix = \"hr\"\n[virtual_proxies.upstream]\nnodes = [{:?}]\n\
         [virtual_proxies.assertion]\naudience = \"https://hr.example.com\"\n",
        signing_proxy(&upstream, "lifetime = \"1s\"").toml(),
        upstream.node()
    );
    let control_plane = ControlPlane::start(&proxies).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let (hr_cookie, _) = session_cookie(
        &control_plane,
        "hr",
        "X-Qlik-Session-hr",
        user("CORP", "alice"),
    )
    .await;

    let token = assertion_seen(&node, &cookie, &[]).await;
    let keys = jwks(&node).await;
    let claims = verify(&token, &keys, AUDIENCE).expect("fresh: verifies");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        1
    );

    let response = get(&node.url("/hr/page"), &[("cookie", hr_cookie.as_str())]).await;
    let hr_token = seen_header(&response.json(), HEADER).unwrap().to_owned();
    assert!(verify(&hr_token, &keys, "https://hr.example.com").is_ok());
    let refused = verify(&hr_token, &keys, AUDIENCE).unwrap_err();
    assert!(
        matches!(
            refused.kind(),
            jsonwebtoken::errors::ErrorKind::InvalidAudience
        ),
        "{refused:?}"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = verify(&token, &keys, AUDIENCE).unwrap_err();
    assert!(
        matches!(
            expired.kind(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
        ),
        "{expired:?}"
    );
    // The node sends a new one by then.
    let renewed = assertion_seen(&node, &cookie, &[]).await;
    assert_ne!(renewed, token);
    assert!(verify(&renewed, &keys, AUDIENCE).is_ok());
}

#[tokio::test]
async fn a_client_sent_assertion_never_reaches_the_upstream() {
    let upstream = EchoUpstream::start("engine").await;
    // One proxy sends none, one sends it under its own name.
    let proxies = format!(
        "{}\n[[virtual_proxies]]\nprefix = \"hr\"\n[virtual_proxies.upstream]\nnodes = [{:?}]\n\
         [virtual_proxies.assertion]\nheader = \"X-Hr-Identity\"\n",
        AppProxy::new([upstream.node()]).toml(),
        upstream.node()
    );
    let control_plane = ControlPlane::start(&proxies).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;
    let (hr_cookie, _) = session_cookie(
        &control_plane,
        "hr",
        "X-Qlik-Session-hr",
        user("CORP", "alice"),
    )
    .await;
    let forged = [
        (
            "X-Gatehouse-Assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
        ),
        ("X-Hr-Identity", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."),
    ];

    let mut headers = vec![("cookie", cookie.as_str())];
    headers.extend_from_slice(&forged);
    let seen = get(&node.url("/app/hub"), &headers).await.json();
    assert!(seen["headers"].get(HEADER).is_none(), "{seen}");
    // Not even without a session, on a path the upstream serves to anyone.
    let anonymous = get(&node.url("/app/hub"), &forged).await;
    assert_eq!(anonymous.status, 302);

    let mut headers = vec![("cookie", hr_cookie.as_str())];
    headers.extend_from_slice(&forged);
    let seen = get(&node.url("/hr/page"), &headers).await.json();
    assert!(seen["headers"].get(HEADER).is_none(), "{seen}");
    let token = seen_header(&seen, "x-hr-identity").expect("the proxy's own");
    assert!(!seen["headers"]["x-hr-identity"].is_array());
    let keys = jwks(&node).await;
    assert!(verify(token, &keys, "gatehouse:virtual-proxy:/hr").is_ok());
}

#[tokio::test]
async fn rotation_publishes_each_key_before_it_signs_and_keeps_verification_working() {
    let upstream = EchoUpstream::start("engine").await;
    let config = format!(
        "[assertion]\nkey_rotation = \"6s\"\npublish_ahead = \"2s\"\n\n{}",
        signing_proxy(&upstream, "lifetime = \"2s\"").toml()
    );
    let control_plane = ControlPlane::start(&config).await;
    let node = DataPlaneNode::start(&control_plane).await;
    let (cookie, _) = session_cookie(&control_plane, "app", COOKIE, user("CORP", "alice")).await;

    let mut published: HashMap<String, Instant> = HashMap::new();
    let mut signed: Vec<(String, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && signed.len() < 3 {
        let keys = jwks(&node).await;
        for key in &keys.keys {
            let kid = key.common.key_id.clone().unwrap();
            published.entry(kid).or_insert_with(Instant::now);
        }
        let token = assertion_seen(&node, &cookie, &[]).await;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        // The JWKS read just before holds the key: each is published before it signs.
        verify(&token, &keys, AUDIENCE).unwrap_or_else(|error| panic!("{kid}: {error:?}"));
        if signed.last().is_none_or(|(last, _)| *last != kid) {
            signed.push((kid.clone(), Instant::now()));
            // The key that signed until now is still published: its assertions live on.
            if let [.., (previous, _), _] = signed.as_slice() {
                let now_published = jwks(&node).await;
                assert!(
                    now_published.find(previous).is_some(),
                    "{previous} dropped too soon"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kids: Vec<&String> = signed.iter().map(|(kid, _)| kid).collect();
    assert!(kids.len() >= 3, "keys rotated twice: {kids:?}");
    for (kid, first_signed) in &signed[1..] {
        let first_published = published[kid];
        assert!(
            *first_signed >= first_published + Duration::from_millis(1500),
            "{kid} was published {:?} before it signed",
            first_signed.saturating_duration_since(first_published)
        );
    }
    // The first key retires once its last assertions have expired.
    let first = &signed[0].0;
    assert!(jwks(&node).await.find(first).is_none(), "{first} retired");
}

#[tokio::test]
async fn nodes_of_two_control_plane_replicas_publish_the_same_keys() {
    let redis = RedisServer::start().await;
    let upstream = EchoUpstream::start("engine").await;
    let config = signing_proxy(&upstream, "").on_redis(&redis);
    let first = ControlPlane::start(&config).await;
    let second = ControlPlane::start(&config).await;
    let one = DataPlaneNode::start(&first).await;
    let other = DataPlaneNode::start(&second).await;
    let (cookie, _) = session_cookie(&first, "app", COOKIE, user("CORP", "alice")).await;

    let kids = |keys: &JwkSet| -> Vec<String> {
        let mut kids: Vec<String> = keys
            .keys
            .iter()
            .map(|key| key.common.key_id.clone().unwrap())
            .collect();
        kids.sort();
        kids
    };
    // Both replicas may have made a key at start; they settle on one within a reload.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (a, b) = (jwks(&one).await, jwks(&other).await);
        if kids(&a) == kids(&b) && kids(&a).len() == 1 {
            assert_eq!(
                serde_json::to_value(&a).unwrap(),
                serde_json::to_value(&b).unwrap()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} vs {:?}",
            kids(&a),
            kids(&b)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // An assertion from either node verifies with the other's JWKS.
    let token = assertion_seen(&one, &cookie, &[]).await;
    verify(&token, &jwks(&other).await, AUDIENCE).expect("verifies with the other node's keys");
    let token = assertion_seen(&other, &cookie, &[]).await;
    verify(&token, &jwks(&one).await, AUDIENCE).expect("verifies with the first node's keys");
}
